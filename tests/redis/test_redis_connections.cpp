// Connection lifetime: timeouts at the ends of their range, and pooled or held
// connections that the server closed while they sat idle (its `timeout` setting, a
// proxy, a restart). The idle-close tests use a private server, since they change its
// configuration and kill its clients. Also: SIGPIPE, expiries at the end of their
// range, and a claim whose reply was lost.
#include "redis/redis_test_support.hpp"

#include <interlock/redis/idempotency_store.hpp>
#include <interlock/redis/keyed_mutex.hpp>
#include <interlock/redis/unique_claims.hpp>

#include <catch2/catch.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace r = interlock::redis;
using namespace std::chrono_literals;

namespace {

/// A started private redis-server, or empty (after a WARN) when none can be started.
std::unique_ptr<redis_test::private_server> start_private_server() {
  const auto exe = redis_test::server_executable();
  if (!exe) {
    WARN("no redis-server executable (PATH or INTERLOCK_REDIS_SERVER): test skipped");
    return nullptr;
  }
  auto server = std::make_unique<redis_test::private_server>(*exe);
  if (!server->start()) {
    WARN("the private redis-server did not start: test skipped");
    return nullptr;
  }
  return server;
}

r::connection_options options_for(const redis_test::private_server& server) {
  r::connection_options o;
  o.port = server.port();
  o.key_prefix = "conn:";
  return o;
}

/// The server's id of the client behind `c` (CLIENT ID).
long long client_id(r::connection& c) { return c.command({"CLIENT", "ID"}).integer(); }

/// Whether client `id` is still connected, asked over a fresh connection.
bool client_connected(const r::connection_options& o, long long id) {
  r::connection admin(o);
  const std::string list(admin.command({"CLIENT", "LIST"}).str());
  return list.find("id=" + std::to_string(id) + " ") != std::string::npos;
}

/// Waits (at most 10 s) until the server has dropped client `id`; false if it did not.
bool wait_until_dropped(const r::connection_options& o, long long id) {
  for (int i = 0; i < 200; ++i) {
    if (!client_connected(o, id)) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

/// Closes every client of the server except the one asking (as a server timeout or a
/// proxy would), over a fresh connection.
void kill_other_clients(const r::connection_options& o) {
  r::connection admin(o);
  (void)admin.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
}

}  // namespace

TEST_CASE("redis connection: timeouts up to milliseconds::max() mean 'as long as allowed'",
          "[redis]") {
  auto opts = redis_test::server("timeouts");
  if (!opts) return;
  for (const auto timeout :
       {std::chrono::milliseconds(std::chrono::hours(24 * 30)), std::chrono::milliseconds::max()}) {
    CAPTURE(timeout.count());
    r::connection_options o = *opts;
    o.connect_timeout = timeout;
    o.command_timeout = timeout;
    r::connection c(o);
    CHECK(c.command({"PING"}).str() == "PONG");
  }
}

TEST_CASE("redis connection_pool: an idle connection the server timed out is replaced", "[redis]") {
  const auto server = start_private_server();
  if (!server) return;
  const r::connection_options o = options_for(*server);
  r::connection_pool pool(o);
  long long idle_id = 0;
  {
    auto c = pool.acquire();
    idle_id = client_id(*c);
  }
  {
    auto c = pool.acquire();  // the same healthy connection comes back, not a new one
    CHECK(client_id(*c) == idle_id);
  }
  {
    r::connection admin(o);
    (void)admin.command({"CONFIG", "SET", "timeout", "1"});
  }
  const bool dropped = wait_until_dropped(o, idle_id);
  {
    r::connection admin(o);
    (void)admin.command({"CONFIG", "SET", "timeout", "0"});
  }
  REQUIRE(dropped);

  auto c = pool.acquire();
  CHECK(c->command({"PING"}).str() == "PONG");  // reconnected, not "server closed"
  CHECK(client_id(*c) != idle_id);
}

TEST_CASE("redis idempotency_guard: completion after the server closed the held connection",
          "[redis]") {
  const auto server = start_private_server();
  if (!server) return;
  const r::connection_options o = options_for(*server);
  r::idempotency_guard<std::string> guard(o);
  int runs = 0;
  auto op = [&] {
    ++runs;
    kill_other_clients(o);  // the guard's connection, idle while op runs
    return std::string("charged");
  };
  std::optional<r::idempotency_guard<std::string>::outcome> first;
  CHECK_NOTHROW(first.emplace(guard.run("pay", std::string("req"), op)));
  REQUIRE(first);
  CHECK(first->status == interlock::run_status::executed);
  auto again = guard.run("pay", std::string("req"), op);
  CHECK(again.status == interlock::run_status::replayed);  // the result was stored
  CHECK(runs == 1);
}

TEST_CASE("redis keyed_mutex: unlock after the server closed the idle pooled connection",
          "[redis]") {
  const auto server = start_private_server();
  if (!server) return;
  const r::connection_options o = options_for(*server);
  r::keyed_mutex m(o);
  auto g = m.try_lock("seat");
  REQUIRE(g);
  kill_other_clients(o);
  bool released = false;
  CHECK_NOTHROW(released = g.unlock());
  CHECK(released);
  CHECK(m.try_lock("seat"));  // free at once, not after the lease expires
}

TEST_CASE("redis connection: a write to a closed socket fails (EPIPE), SIGPIPE ends nothing",
          "[redis]") {
  // SIGPIPE at its default action (ending the process), as in a program that never
  // touched it. Without the suppressor, the write below ends the test runner.
  struct sigaction previous {};
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  REQUIRE(::sigaction(SIGPIPE, &default_action, &previous) == 0);
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  ::close(fds[1]);  // the peer is gone: writing raises SIGPIPE
  ssize_t written = 0;
  int error = 0;
  {
    const r::detail::sigpipe_suppressor suppressor;
    written = ::write(fds[0], "x", 1);
    error = errno;
  }
  ::close(fds[0]);
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  sigset_t mask;
  sigemptyset(&mask);
  ::pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  const bool left_pending = sigismember(&pending, SIGPIPE) == 1;
  const bool left_blocked = sigismember(&mask, SIGPIPE) == 1;
  ::sigaction(SIGPIPE, &previous, nullptr);
  CHECK(written == -1);
  CHECK(error == EPIPE);
  CHECK_FALSE(left_pending);  // consumed, not delivered later
  CHECK_FALSE(left_blocked);  // the thread's mask is restored
}

TEST_CASE("redis stores: expiries up to milliseconds::max() are clamped, not refused", "[redis]") {
  auto opts = redis_test::server("ttl_max");
  if (!opts) return;
  r::connection admin(*opts);
  const auto forever = std::chrono::milliseconds::max();
  auto pttl = [&admin](const std::string& key) { return admin.command({"PTTL", key}).integer(); };

  r::unique_claims claims(*opts);
  CHECK(claims.try_claim("nullifier", "me", forever));
  CHECK(pttl(claims.claim_key("nullifier")) > 0);

  r::lock_options lo;
  lo.lease_time = forever;
  r::keyed_mutex locks(*opts, lo);
  auto g = locks.try_lock("seat");
  REQUIRE(g);
  CHECK(pttl(locks.lease_key("seat")) > 0);
  CHECK(g.unlock());

  r::idempotency_options io;
  io.time_to_live = forever;
  io.in_progress_ttl = forever;
  r::idempotency_guard<std::string> guard(*opts, io);
  int runs = 0;
  auto op = [&runs] {
    ++runs;
    return std::string("charged");
  };
  CHECK(guard.run("pay", std::string("req"), op).status == interlock::run_status::executed);
  CHECK(guard.run("pay", std::string("req"), op).status == interlock::run_status::replayed);
  CHECK(runs == 1);
  CHECK(pttl(guard.record_key("pay")) > 0);
}

namespace {

/// Keeps the server busy for ARGV[1] milliseconds (a script runs alone: every other
/// client's command waits for it).
constexpr const char* busy_script =
    "local function now()\n"
    "  local t = redis.call('TIME')\n"
    "  return tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local start = now()\n"
    "repeat until now() - start >= tonumber(ARGV[1]) * 1000\n"
    "return 1\n";

}  // namespace

TEST_CASE("redis idempotency_guard: a claim whose reply was lost executes on the retry",
          "[redis]") {
  const auto server = start_private_server();
  if (!server) return;
  r::connection_options o = options_for(*server);
  o.command_timeout = 300ms;
  r::idempotency_guard<std::string> guard(o);
  // The server is busy for 400 ms: the guard's claim, sent meanwhile, times out (its
  // reply is lost), and the server runs it once it is free. Without the retry the call
  // throws; with a retry that does not know its own record, it waits for itself.
  std::thread busy([o] {
    r::connection_options admin_options = o;
    admin_options.command_timeout = 10s;
    r::connection admin(admin_options);
    (void)admin.command({"EVAL", busy_script, "0", "400"});
  });
  std::this_thread::sleep_for(50ms);
  int runs = 0;
  auto op = [&runs] {
    ++runs;
    return std::string("charged");
  };
  const auto start = std::chrono::steady_clock::now();
  std::optional<r::idempotency_guard<std::string>::outcome> first;
  CHECK_NOTHROW(first.emplace(guard.run_for("pay", std::string("req"), 10s, op)));
  const auto took = std::chrono::steady_clock::now() - start;
  busy.join();
  REQUIRE(first);
  CHECK(first->status == interlock::run_status::executed);
  CHECK(runs == 1);
  CHECK(guard.run("pay", std::string("req"), op).status == interlock::run_status::replayed);
  CHECK(runs == 1);
  if (took < o.command_timeout) {
    WARN("the claim was not delayed past its timeout: the lost reply was not simulated");
  }
}
