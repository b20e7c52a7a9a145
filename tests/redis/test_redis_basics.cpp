// Single-process tests of the Redis client and the Redis-backed primitives.
#include "redis/redis_test_support.hpp"

#include <interlock/redis/idempotency_store.hpp>
#include <interlock/redis/keyed_mutex.hpp>
#include <interlock/redis/unique_claims.hpp>
#include <interlock/redis/versioned.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace r = interlock::redis;
using namespace std::chrono_literals;

namespace {

void take_seat(std::uint64_t fencing_token) { (void)fencing_token; }

// The README's Redis example, compiled here (tests/readme_snippets.cmake checks that it
// is verbatim) and never run: it names a server that does not exist on a test machine.
[[maybe_unused]] void readme_example_with_lock() {
  // [readme:redis_with_lock]
  interlock::redis::connection_options server{
      .host = "10.0.0.5", .port = 6379, .key_prefix = "signup-service:"};
  interlock::redis::keyed_mutex locks(server);
  locks.with_lock("signup:42:lead", [&](auto& lease) {
    take_seat(lease.fencing_token());  // a store that checks tokens rejects a stale holder
  });
  // [/readme:redis_with_lock]
}

}  // namespace

TEST_CASE("redis connection: binary-safe commands, error replies, scripts", "[redis]") {
  auto opts = redis_test::server("connection");
  if (!opts) return;
  r::connection c(*opts);
  const std::string key = c.key("bin");
  const std::string value("a\0b\r\nc", 6);
  CHECK(c.command({"SET", key, value}).str() == "OK");
  r::reply got = c.command({"GET", key});
  CHECK(got.is_string());
  CHECK(got.str() == value);
  CHECK(c.command({"GET", c.key("missing")}).is_nil());

  // An error reply throws, naming the command.
  try {
    (void)c.command({"INCR", key});
    FAIL("INCR of a non-number did not throw");
  } catch (const r::redis_error& e) {
    CHECK(e.kind() == r::redis_error::error_kind::server);
    CHECK(std::string(e.what()).find("INCR") != std::string::npos);
  }
  // The connection stays usable after a server error.
  CHECK(c.command({"PING"}).str() == "PONG");

  // EVALSHA falls back to EVAL after the script cache is flushed.
  const r::script s("return {KEYS[1], ARGV[1], 42}");
  r::reply a = c.eval(s, {"k"}, {"v"});
  REQUIRE(a.size() == 3);
  CHECK(a[0].str() == "k");
  CHECK(a[1].str() == "v");
  CHECK(a[2].integer() == 42);
  (void)c.command({"SCRIPT", "FLUSH"});
  CHECK(c.eval(s, {"k2"}, {"v2"})[0].str() == "k2");
  (void)c.command({"DEL", key});
}

TEST_CASE("redis connection: nothing listening is a redis_error, never a success", "[redis]") {
  r::connection_options o;
  o.port = redis_test::free_port();
  o.connect_timeout = 200ms;
  r::connection c(o);
  CHECK_THROWS_AS(c.command({"PING"}), r::redis_error);
  try {
    (void)c.command({"SET", "a", "b"});
    FAIL("a command with nothing listening succeeded");
  } catch (const r::redis_error& e) {
    CHECK(e.kind() == r::redis_error::error_kind::io);
    CHECK(std::string(e.what()).find("connect 127.0.0.1") != std::string::npos);
  }
  r::keyed_mutex m(o);
  CHECK_THROWS_AS(m.try_lock("k"), r::redis_error);
}

TEST_CASE("redis keyed_mutex: one holder, fencing tokens grow, release by holder only", "[redis]") {
  auto opts = redis_test::server("lock");
  if (!opts) return;
  r::lock_options lo;
  lo.lease_time = 5000ms;
  r::keyed_mutex m(*opts, lo);

  auto g1 = m.try_lock("seat");
  REQUIRE(g1);
  CHECK(g1.key() == "seat");
  CHECK(g1.fencing_token() >= 1);
  CHECK_FALSE(m.try_lock("seat"));
  CHECK_FALSE(m.try_lock_for("seat", 30ms));  // held: times out, empty guard
  auto other = m.try_lock("other-seat");
  CHECK(other);
  const auto first = g1.fencing_token();
  CHECK(g1.renew());
  CHECK(g1.unlock());
  CHECK_FALSE(g1.owns_lock());
  CHECK_FALSE(g1.unlock());  // empty guard

  auto g2 = m.try_lock("seat");
  REQUIRE(g2);
  CHECK(g2.fencing_token() > first);

  // A holder whose lease is gone cannot release the next holder's lock.
  {
    r::connection c(*opts);
    (void)c.command({"DEL", m.lease_key("seat")});
  }
  auto g3 = m.try_lock("seat");
  REQUIRE(g3);
  CHECK(g3.fencing_token() > g2.fencing_token());
  CHECK_FALSE(g2.renew());
  CHECK_FALSE(g2.unlock());         // compare-and-delete refuses: not its lease
  CHECK_FALSE(m.try_lock("seat"));  // g3 still holds it
  g3.unlock();
  CHECK(m.try_lock("seat"));
}

TEST_CASE("redis keyed_mutex: an unlocked or moved-from guard is empty, key included", "[redis]") {
  auto opts = redis_test::server("empty_guard");
  if (!opts) return;
  r::keyed_mutex m(*opts);
  auto g = m.try_lock("seat");
  REQUIRE(g);
  CHECK(g.unlock());
  CHECK(g.key().empty());
  CHECK(g.fencing_token() == 0);

  auto from = m.try_lock("seat");
  REQUIRE(from);
  r::keyed_mutex::guard to(std::move(from));
  CHECK(to.key() == "seat");
  CHECK(from.key().empty());  // NOLINT(bugprone-use-after-move): the documented state
  r::keyed_mutex::guard assigned;
  assigned = std::move(to);
  CHECK(assigned.key() == "seat");
  CHECK(to.key().empty());  // NOLINT(bugprone-use-after-move)
}

namespace {
/// The part of a Redis key that Redis Cluster hashes: the hash tag (between the first
/// '{' and the first '}' after it) when it is not empty, else the whole key.
std::string cluster_hashed_part(const std::string& key) {
  const auto open = key.find('{');
  if (open == std::string::npos) return key;
  const auto close = key.find('}', open + 1);
  if (close == std::string::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}
}  // namespace

TEST_CASE("redis keyed_mutex: lease and fence share a hash tag, distinct keys stay distinct",
          "[redis]") {
  auto opts = redis_test::server("hash_tag");
  if (!opts) return;
  r::keyed_mutex m(*opts);
  const std::vector<std::string> keys{"", "}", "}x", "{", "{x", "{}", "a}b", "seat"};
  for (const auto& k : keys) {
    CAPTURE(k);
    CHECK(cluster_hashed_part(m.lease_key(k)) == cluster_hashed_part(m.fence_key(k)));
    CHECK(m.lease_key(k) != m.fence_key(k));
  }
  std::vector<r::keyed_mutex::guard> held;
  for (const auto& k : keys) {
    CAPTURE(k);
    for (const auto& earlier : held) CHECK(m.lease_key(k) != m.lease_key(earlier.key()));
    auto g = m.try_lock(k);  // every key is its own lock
    CHECK(g);
    held.push_back(std::move(g));
  }
}

TEST_CASE("redis keyed_mutex: with_lock, with_lock_for, lease loss", "[redis]") {
  auto opts = redis_test::server("with_lock");
  if (!opts) return;
  r::lock_options lo;
  lo.lease_time = 2000ms;
  r::keyed_mutex m(*opts, lo);

  const int v = m.with_lock("k", [&] {
    CHECK_FALSE(m.try_lock("k"));
    return 7;
  });
  CHECK(v == 7);
  CHECK(m.try_lock("k"));  // released (the temporary guard unlocks again at once)

  std::uint64_t token = 0;
  m.with_lock("k", [&](r::keyed_mutex::guard& g) { token = g.fencing_token(); });
  CHECK(token > 0);

  // with_lock_for on a held key throws interlock::lock_timeout.
  auto held = m.try_lock("busy");
  REQUIRE(held);
  bool ran = false;
  CHECK_THROWS_AS(m.with_lock_for("busy", 30ms, [&] { ran = true; }), interlock::lock_timeout);
  CHECK_FALSE(ran);

  // fn's exception releases the lease and reaches the caller.
  CHECK_THROWS_AS(m.with_lock("k", []() -> int { throw std::logic_error("boom"); }),
                  std::logic_error);
  CHECK(m.try_lock("k"));

  // A lease taken away while fn runs is reported after fn: lease_lost.
  r::connection admin(*opts);
  CHECK_THROWS_AS(m.with_lock("lost",
                              [&] {
                                (void)admin.command({"DEL", m.lease_key("lost")});
                                return 1;
                              }),
                  r::lease_lost);
}

TEST_CASE("redis keyed_mutex: renewal keeps a lease alive past its lease time", "[redis]") {
  auto opts = redis_test::server("renew");
  if (!opts) return;
  r::lock_options lo;
  // Renewed every 400 ms: a renewal may come up to 3.6 s late (a loaded machine, a
  // sanitizer) before the lease lapses. Without renewal it lapses after 4 s, within
  // the loop below, and the check fails.
  lo.lease_time = 4000ms;
  lo.renew_every = 400ms;
  r::keyed_mutex m(*opts, lo);
  int refused = 0;
  m.with_lock("slow", [&](r::keyed_mutex::guard& g) {
    for (int i = 0; i < 11; ++i) {
      std::this_thread::sleep_for(450ms);  // 4.95 s in all: 1.24 leases
      if (!m.try_lock("slow") && !g.lease_lost()) ++refused;
    }
  });  // throws lease_lost if a renewal had failed
  CHECK(refused == 11);
}

TEST_CASE("redis keyed_mutex: lock_many sorts and collapses keys", "[redis]") {
  auto opts = redis_test::server("many");
  if (!opts) return;
  r::keyed_mutex m(*opts);
  const std::vector<std::string> keys{"c", "a", "b", "a"};
  auto all = m.lock_many(keys);
  REQUIRE(all);
  CHECK(all.size() == 3);
  CHECK(all.fencing_token("a") > 0);
  CHECK(all.fencing_token("zzz") == 0);
  CHECK_FALSE(m.try_lock("b"));
  const std::vector<std::string> overlap{"d", "b"};
  CHECK_FALSE(m.try_lock_many(overlap));
  CHECK(m.try_lock("d"));  // the failed try released "d" again
  CHECK_FALSE(m.try_lock_many_for(overlap, 20ms));
  CHECK(all.unlock());
  auto again = m.try_lock_many_for(overlap, 1000ms);
  CHECK(again.size() == 2);
}

TEST_CASE("redis keyed_mutex: lock_many keeps the keys it took while it waits for a later one",
          "[redis]") {
  auto opts = redis_test::server("many_alive");
  if (!opts) return;
  r::lock_options lo;
  lo.lease_time = 2000ms;
  r::keyed_mutex m(*opts, lo);
  r::keyed_mutex other(*opts);  // 10 s leases
  auto b = other.try_lock("b");
  REQUIRE(b);
  r::keyed_mutex::multi_guard both;
  std::thread taker([&] { both = m.lock_many(std::vector<std::string>{"b", "a"}); });
  r::connection admin(*opts);
  bool a_taken = false;  // lock_many took "a" and now waits for "b"
  for (int i = 0; i < 1000 && !a_taken; ++i) {
    a_taken = admin.command({"EXISTS", m.lease_key("a")}).integer() == 1;
    if (!a_taken) std::this_thread::sleep_for(10ms);
  }
  // Past a's lease while lock_many still waits: without renewal "a" would be free.
  std::this_thread::sleep_for(3000ms);
  const bool a_free_while_waiting = static_cast<bool>(other.try_lock("a"));
  CHECK(b.unlock());
  taker.join();
  CHECK(a_taken);
  CHECK_FALSE(a_free_while_waiting);
  REQUIRE(both.size() == 2);
  CHECK(both.unlock());  // both leases were still ours
}

TEST_CASE("redis idempotency_guard: execute, replay, mismatch, failure releases", "[redis]") {
  auto opts = redis_test::server("idem");
  if (!opts) return;
  r::idempotency_guard<std::string> guard(*opts);
  int runs = 0;
  auto op = [&] {
    ++runs;
    return std::string("charged\0ok", 10);
  };
  auto first = guard.run("pay-1", std::string("100 EUR"), op);
  CHECK(first.status == interlock::run_status::executed);
  REQUIRE(first.has_result());
  CHECK(*first == std::string("charged\0ok", 10));
  auto second = guard.run("pay-1", std::string("100 EUR"), op);
  CHECK(second.status == interlock::run_status::replayed);
  CHECK(*second == *first);
  auto other = guard.run("pay-1", std::string("200 EUR"), op);
  CHECK(other.status == interlock::run_status::mismatch);
  CHECK_FALSE(other.has_result());
  CHECK(runs == 1);

  // A failing op leaves nothing behind: the retry runs.
  CHECK_THROWS_AS(guard.run("pay-2", 1, []() -> std::string { throw std::runtime_error("down"); }),
                  std::runtime_error);
  CHECK(guard.run("pay-2", 1, op).status == interlock::run_status::executed);
  CHECK(runs == 2);

  // forget() drops a completed record.
  CHECK(guard.forget("pay-1"));
  CHECK_FALSE(guard.forget("pay-1"));
  CHECK(guard.run("pay-1", std::string("200 EUR"), op).status == interlock::run_status::executed);

  // A byte-vector result through the built-in codec.
  r::idempotency_guard<std::vector<std::byte>> bytes(*opts);
  auto b = bytes.run("bytes", 5, [] {
    return std::vector<std::byte>{std::byte{0}, std::byte{255}};
  });
  auto b2 = bytes.run("bytes", 5, [] { return std::vector<std::byte>{}; });
  CHECK(b2.status == interlock::run_status::replayed);
  CHECK(*b2 == *b);
}

TEST_CASE("redis idempotency_guard: an in-progress key, a crashed executor's key runs again",
          "[redis]") {
  auto opts = redis_test::server("idem_progress");
  if (!opts) return;
  r::idempotency_options io;
  io.in_progress_ttl = 300ms;
  r::idempotency_guard<std::string> guard(*opts, io);
  // Simulate an executor that claimed the key and died: its in-progress record.
  const auto fp = interlock::content_digest(std::string("req"));
  {
    r::connection c(*opts);
    // Long enough to outlive the checks below on a slow machine; expired by hand after.
    (void)c.command(
        {"SET", guard.record_key("k"), "P" + fp.to_hex() + "dead-token", "PX", "60000"});
  }
  auto waiting = guard.run_for("k", std::string("req"), 1ms, [] { return std::string("x"); });
  CHECK(waiting.status == interlock::run_status::in_progress);
  CHECK(guard.run_for("k", std::string("other"), 1ms, [] { return std::string("x"); }).status ==
        interlock::run_status::mismatch);
  r::idempotency_options reject = io;
  reject.on_concurrent = interlock::concurrency_policy::reject;
  r::idempotency_guard<std::string> rejecting(*opts, reject);
  CHECK(rejecting.run("k", std::string("req"), [] { return std::string("x"); }).status ==
        interlock::run_status::in_progress);
  // run() waits; the dead executor's record expires and this call executes.
  {
    r::connection c(*opts);
    (void)c.command({"PEXPIRE", guard.record_key("k"), "200"});
  }
  auto after = guard.run("k", std::string("req"), [] { return std::string("second"); });
  CHECK(after.status == interlock::run_status::executed);
  CHECK(*after == "second");
}

TEST_CASE(
    "redis idempotency_guard: an op that outlives in_progress_ttl: a duplicate runs, "
    "the late completion is not stored",
    "[redis]") {
  auto opts = redis_test::server("idem_outlived");
  if (!opts) return;
  r::idempotency_options io;
  io.in_progress_ttl = 60000ms;  // the records below expire by hand (PEXPIRE), not by the clock
  r::idempotency_guard<std::string> guard(*opts, io);
  r::connection admin(*opts);
  // Makes `key`'s record expire now, as if op had run past in_progress_ttl, and waits
  // (at most 10 s) until it is gone.
  auto expire_record = [&](const std::string& key) {
    const std::string rk = guard.record_key(key);
    (void)admin.command({"PEXPIRE", rk, "1"});
    for (int i = 0; i < 1000; ++i) {
      if (admin.command({"EXISTS", rk}).integer() == 0) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };
  const std::string req("charge 100 EUR");

  // A duplicate that arrives after the record expired executes too and stores its result;
  // the first op's late completion does not overwrite it, yet its call returns executed.
  int runs = 0;
  bool expired = false;
  std::optional<r::idempotency_guard<std::string>::outcome> duplicate;
  auto late = guard.run("pay", req, [&] {
    ++runs;
    expired = expire_record("pay");
    duplicate.emplace(guard.run("pay", req, [&] {
      ++runs;
      return std::string("by the duplicate");
    }));
    return std::string("by the late op");
  });
  REQUIRE(expired);
  CHECK(runs == 2);
  CHECK(late.status == interlock::run_status::executed);
  REQUIRE(late.has_result());
  CHECK(*late == "by the late op");
  REQUIRE(duplicate);
  CHECK(duplicate->status == interlock::run_status::executed);
  REQUIRE(duplicate->has_result());
  CHECK(**duplicate == "by the duplicate");
  auto after = guard.run("pay", req, [&] {
    ++runs;
    return std::string("third");
  });
  CHECK(after.status == interlock::run_status::replayed);
  REQUIRE(after.has_result());
  CHECK(*after == "by the duplicate");
  CHECK(runs == 2);

  // With no duplicate in between, the late completion stores nothing: the next call runs.
  auto alone = guard.run("refund", req, [&] {
    expired = expire_record("refund");
    return std::string("late refund");
  });
  REQUIRE(expired);
  CHECK(alone.status == interlock::run_status::executed);
  REQUIRE(alone.has_result());
  CHECK(*alone == "late refund");
  CHECK(admin.command({"EXISTS", guard.record_key("refund")}).integer() == 0);
  auto retry = guard.run("refund", req, [] { return std::string("refund again"); });
  CHECK(retry.status == interlock::run_status::executed);
  REQUIRE(retry.has_result());
  CHECK(*retry == "refund again");
}

namespace {

/// The CLIENT LIST line of client `id` ("" when no such client is connected).
std::string client_list_line(r::connection& admin, long long id) {
  const std::string list(admin.command({"CLIENT", "LIST"}).str());
  const std::string field = "id=" + std::to_string(id) + " ";
  std::size_t start = 0;
  while (start < list.size()) {
    std::size_t end = list.find('\n', start);
    if (end == std::string::npos) end = list.size();
    if (list.compare(start, field.size(), field) == 0) return list.substr(start, end - start);
    start = end + 1;
  }
  return {};
}

}  // namespace

TEST_CASE("redis idempotency_guard: a waiter whose executor throws claims the key and executes",
          "[redis]") {
  auto opts = redis_test::server("idem_waiter");
  if (!opts) return;
  // in_progress_ttl stays at 30 s: only the failed executor's abandon frees the key
  // within the waiter's 10 s.
  r::idempotency_guard<std::string> executor(*opts);
  auto waiter_pool = std::make_shared<r::connection_pool>(*opts);
  r::idempotency_guard<std::string> waiter(waiter_pool);
  long long waiter_id = 0;
  {
    auto c = waiter_pool->acquire();  // back to the pool: the waiter's call reuses it
    waiter_id = c->command({"CLIENT", "ID"}).integer();
  }
  r::connection admin(*opts);
  const std::string req("order 7");

  // Written by the waiter thread, read after it is joined (no assertions in it).
  std::optional<r::idempotency_guard<std::string>::outcome> waited;
  std::exception_ptr waiter_error;
  int waiter_runs = 0;
  std::thread waiter_thread;
  bool waiter_polled = false;
  int executor_runs = 0;
  auto failing_op = [&]() -> std::string {
    ++executor_runs;
    waiter_thread = std::thread([&] {
      try {
        waited.emplace(waiter.run_for("order", req, 10s, [&] {
          ++waiter_runs;
          return std::string("by the waiter");
        }));
      } catch (...) {
        waiter_error = std::current_exception();
      }
    });
    // Fails only once the waiter's claim script has run (its connection's last
    // command) and found this call's in-progress record: the waiter is polling.
    for (int i = 0; i < 1000 && !waiter_polled; ++i) {
      const std::string line = client_list_line(admin, waiter_id);
      waiter_polled = line.find(" cmd=evalsha ") != std::string::npos ||
                      line.find(" cmd=eval ") != std::string::npos;
      if (!waiter_polled) std::this_thread::sleep_for(10ms);
    }
    throw std::runtime_error("card declined");
  };
  CHECK_THROWS_AS(executor.run("order", req, failing_op), std::runtime_error);
  if (waiter_thread.joinable()) waiter_thread.join();
  CHECK(executor_runs == 1);
  REQUIRE(waiter_polled);
  REQUIRE_FALSE(waiter_error);
  REQUIRE(waited);
  CHECK(waited->status == interlock::run_status::executed);
  REQUIRE(waited->has_result());
  CHECK(**waited == "by the waiter");
  CHECK(waiter_runs == 1);
  // The waiter's completion was stored.
  auto again = executor.run("order", req, [] { return std::string("third"); });
  CHECK(again.status == interlock::run_status::replayed);
  REQUIRE(again.has_result());
  CHECK(*again == "by the waiter");
}

namespace {
/// A result whose codec cannot encode negative values: op can return one (its effect
/// happened) that cannot be stored.
struct unencodable {
  int value;
};
struct unencodable_codec {
  static std::string encode(const unencodable& v) {
    if (v.value < 0) throw std::invalid_argument("cannot encode a negative value");
    return std::to_string(v.value);
  }
  static unencodable decode(std::string_view bytes) {
    return unencodable{std::stoi(std::string(bytes))};
  }
};
}  // namespace

TEST_CASE("redis idempotency_guard: a result that cannot be stored after op ran is not run again",
          "[redis]") {
  auto opts = redis_test::server("idem_unstored");
  if (!opts) return;
  r::idempotency_guard<unencodable, unencodable_codec> guard(*opts);
  int runs = 0;
  auto op = [&runs] {
    ++runs;  // the effect (a charge) happens here
    return unencodable{-1};
  };
  CHECK_THROWS_AS(guard.run("pay", std::string("req"), op), std::invalid_argument);
  // Retries learn that it ran; they do not charge again.
  CHECK_THROWS_AS(guard.run("pay", std::string("req"), op), r::result_not_stored);
  CHECK_THROWS_WITH(guard.run("pay", std::string("req"), op),
                    Catch::Contains("cannot encode a negative value"));
  CHECK(runs == 1);
  CHECK(guard.run("pay", std::string("other"), op).status == interlock::run_status::mismatch);
  // An exception from op itself is still not stored: a retry runs again.
  auto declined = [&runs]() -> unencodable {
    ++runs;
    throw std::runtime_error("declined");
  };
  CHECK_THROWS_AS(guard.run("pay:2", std::string("req"), declined), std::runtime_error);
  CHECK_THROWS_AS(guard.run("pay:2", std::string("req"), declined), std::runtime_error);
  CHECK(runs == 3);
  // forget drops the failed record: the next call runs.
  CHECK(guard.forget("pay"));
  auto ok = [&runs] {
    ++runs;
    return unencodable{5};
  };
  const auto out = guard.run("pay", std::string("req"), ok);
  CHECK(out.status == interlock::run_status::executed);
  CHECK(out.result->value == 5);
  CHECK(runs == 4);
}

TEST_CASE("redis unique_claims: one winner, owners, expiry", "[redis]") {
  auto opts = redis_test::server("claims");
  if (!opts) return;
  r::unique_claims claims(*opts);
  CHECK(claims.try_claim("nullifier-1", "alice"));
  CHECK_FALSE(claims.try_claim("nullifier-1", "bob"));
  CHECK(claims.owner_of("nullifier-1") == std::optional<std::string>("alice"));
  CHECK_FALSE(claims.release("nullifier-1", "bob"));
  CHECK(claims.release("nullifier-1", "alice"));
  CHECK_FALSE(claims.owner_of("nullifier-1"));
  CHECK(claims.try_claim("nullifier-1"));
  CHECK(claims.owner_of("nullifier-1") == std::optional<std::string>(""));
  CHECK(claims.release("nullifier-1"));
  CHECK_FALSE(claims.release("nullifier-1"));
  CHECK(claims.try_claim("short", "x", 50ms));
  std::this_thread::sleep_for(150ms);
  CHECK(claims.try_claim("short", "y"));
}

TEST_CASE("redis versioned: read, try_commit, conflicts carry the current value", "[redis]") {
  auto opts = redis_test::server("versioned");
  if (!opts) return;
  r::versioned<std::string> doc(*opts, "doc", "draft");
  auto s = doc.read();
  CHECK(s.value == "draft");
  CHECK(s.version == 1);
  auto c1 = doc.try_commit(1, "v2");
  CHECK(c1.committed);
  CHECK(c1.version == 2);
  auto stale = doc.try_commit(1, "lost update");
  CHECK_FALSE(stale.committed);
  CHECK(stale.version == 2);
  REQUIRE(stale.current);
  CHECK(*stale.current == "v2");
  auto u = doc.update([](const std::string& v) { return v + "+"; });
  CHECK(u.committed());
  CHECK(u.current.version == 3);
  CHECK(doc.read().value == "v2+");

  r::versioned<long> counter(*opts, "fresh", 10);
  auto conflict = counter.try_commit(5, 1);  // never committed yet: version 1
  CHECK_FALSE(conflict.committed);
  CHECK(conflict.version == 1);
  CHECK(conflict.current == std::optional<long>(10));
}
