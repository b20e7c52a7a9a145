// Multi-process tests: several OS processes (fork) share one Redis server, each with
// its own connections. Under TSan the workers are threads (see redis_test_support.hpp).
#include "redis/redis_test_support.hpp"

#include <interlock/redis/idempotency_store.hpp>
#include <interlock/redis/keyed_mutex.hpp>
#include <interlock/redis/unique_claims.hpp>
#include <interlock/redis/versioned.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace r = interlock::redis;
using namespace std::chrono_literals;

namespace {

constexpr int processes = 8;

bool all_zero(const std::vector<int>& statuses) {
  return std::all_of(statuses.begin(), statuses.end(), [](int s) { return s == 0; });
}

}  // namespace

TEST_CASE("redis keyed_mutex: 8 processes x 1000 signups, capacity 50: exactly 50",
          "[redis][processes]") {
  auto opts = redis_test::server("signup");
  if (!opts) return;
  const int attempts = redis_test::sanitized ? 200 : 1000;
  constexpr long long capacity = 50;
  const auto statuses = redis_test::run_workers(processes, [&](int worker) {
    r::lock_options lo;
    lo.lease_time = 5000ms;
    lo.wait_policy = interlock::retry_policy::exponential(20us, 2ms, interlock::jitter_kind::full);
    r::keyed_mutex locks(*opts, lo);
    r::connection c(*opts);
    const std::string seats = c.key("role:lead:signups");
    int mine = 0;
    for (int i = 0; i < attempts; ++i) {
      const std::string user = "user-" + std::to_string(worker) + "-" + std::to_string(i);
      mine += locks.with_lock("signup:42:lead", [&] {
        if (c.command({"SCARD", seats}).integer() >= capacity) return 0;
        (void)c.command({"SADD", seats, user});
        return 1;
      });
    }
    return mine;  // 0..50
  });
  int total = 0;
  for (int s : statuses) {
    CHECK(s >= 0);
    CHECK(s <= capacity);
    total += s;
  }
  CHECK(total == capacity);
  r::connection c(*opts);
  CHECK(c.command({"SCARD", c.key("role:lead:signups")}).integer() == capacity);
}

TEST_CASE("redis idempotency_guard: 8 processes race 1000 keys: each runs once, all get its result",
          "[redis][processes]") {
  auto opts = redis_test::server("idem_race");
  if (!opts) return;
  const int keys = redis_test::sanitized ? 200 : 1000;
  const auto statuses = redis_test::run_workers(processes, [&](int worker) {
    r::idempotency_options io;
    io.poll_policy = interlock::retry_policy::exponential(50us, 2ms, interlock::jitter_kind::full);
    r::idempotency_guard<std::string> guard(*opts, io);
    r::connection c(*opts);
    int bad = 0;
    for (int n = 0; n < keys; ++n) {
      const int k = (n + worker * keys / processes) % keys;  // different starting points
      const std::string id = std::to_string(k);
      auto out = guard.run("order-" + id, "request-" + id, [&] {
        (void)c.command({"INCR", c.key("executions:" + id)});
        std::string result = "receipt-" + id + "-by-" + std::to_string(worker);
        (void)c.command({"SET", c.key("result:" + id), result});
        return result;
      });
      const bool delivered = out.status == interlock::run_status::executed ||
                             out.status == interlock::run_status::joined ||
                             out.status == interlock::run_status::replayed;
      if (!delivered || !out.has_result() ||
          *out != c.command({"GET", c.key("result:" + id)}).str()) {
        ++bad;
      }
    }
    return std::min(bad, 99);
  });
  CHECK(all_zero(statuses));
  r::connection c(*opts);
  int not_once = 0;
  for (int k = 0; k < keys; ++k) {
    r::reply v = c.command({"GET", c.key("executions:" + std::to_string(k))});
    if (v.str() != "1") ++not_once;
  }
  CHECK(not_once == 0);
}

TEST_CASE("redis keyed_mutex: a SIGKILLed holder's lease expires, its late write is fenced off",
          "[redis][processes]") {
  if (!redis_test::use_processes) {
    WARN("fork() is not used under TSan: SIGKILL test skipped");
    return;
  }
  auto opts = redis_test::server("sigkill");
  if (!opts) return;
  r::lock_options lo;
  lo.lease_time = 6000ms;  // long enough that the lease outlives a slow check below
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    // The child never returns into the test runner: any failure ends it at once.
    try {
      ::close(pipe_fds[0]);
      r::keyed_mutex locks(*opts, lo);
      auto g = locks.try_lock_for("ledger", 5s);
      const std::uint64_t token = g ? g.fencing_token() : 0;
      if (::write(pipe_fds[1], &token, sizeof token) != sizeof token) ::_exit(1);
      for (;;) ::pause();  // holds the lease until killed, never renewing it
    } catch (...) {
      ::_exit(2);
    }
  }
  // Whatever fails below, the child does not outlive the test (it would hold ctest's
  // output pipe open, pausing forever).
  struct child_reaper {
    pid_t pid;
    int status = 0;
    bool reaped = false;
    void kill_and_wait() {
      if (reaped) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      reaped = true;
    }
    ~child_reaper() { kill_and_wait(); }
  } reaper{child};
  ::close(pipe_fds[1]);
  std::uint64_t dead_token = 0;
  REQUIRE(::read(pipe_fds[0], &dead_token, sizeof dead_token) == sizeof dead_token);
  ::close(pipe_fds[0]);
  REQUIRE(dead_token > 0);

  r::keyed_mutex locks(*opts, lo);
  CHECK_FALSE(locks.try_lock("ledger"));  // the child holds it
  reaper.kill_and_wait();
  CHECK(WIFSIGNALED(reaper.status));

  auto g = locks.try_lock_for("ledger", 30s);  // granted once the lease expires
  REQUIRE(g);
  CHECK(g.fencing_token() > dead_token);

  // A store that remembers the highest token it accepted rejects older ones.
  const r::script fenced_write(
      "local highest = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
      "if tonumber(ARGV[1]) < highest then return 0 end\n"
      "redis.call('SET', KEYS[1], ARGV[1])\n"
      "redis.call('SET', KEYS[2], ARGV[2])\n"
      "return 1\n");
  r::connection c(*opts);
  const std::string hi = c.key("store:highest");
  const std::string data = c.key("store:data");
  CHECK(c.eval(fenced_write, {hi, data}, {std::to_string(g.fencing_token()), "new holder"})
            .integer() == 1);
  CHECK(c.eval(fenced_write, {hi, data}, {std::to_string(dead_token), "dead holder's late write"})
            .integer() == 0);
  CHECK(c.command({"GET", data}).str() == "new holder");
}

TEST_CASE("redis versioned: 8 processes x 500 increments give the exact total",
          "[redis][processes]") {
  auto opts = redis_test::server("versioned_race");
  if (!opts) return;
  const int increments = redis_test::sanitized ? 100 : 500;
  const auto statuses = redis_test::run_workers(processes, [&](int) {
    r::versioned<long> counter(*opts, "counter", 0L);
    for (int i = 0; i < increments; ++i) {
      if (!counter.update([](const long& v) { return v + 1; })) return 1;
    }
    return 0;
  });
  CHECK(all_zero(statuses));
  r::versioned<long> counter(*opts, "counter", 0L);
  const auto s = counter.read();
  CHECK(s.value == static_cast<long>(processes) * increments);
  CHECK(s.version == static_cast<std::uint64_t>(processes) * increments + 1);
}

TEST_CASE("redis unique_claims: 8 processes claim the same keys: one winner each",
          "[redis][processes]") {
  auto opts = redis_test::server("claims_race");
  if (!opts) return;
  constexpr int keys = 200;
  const auto statuses = redis_test::run_workers(processes, [&](int worker) {
    r::unique_claims claims(*opts);
    int wins = 0;
    for (int k = 0; k < keys; ++k) {
      if (claims.try_claim("coin-" + std::to_string(k), "worker-" + std::to_string(worker))) ++wins;
    }
    return wins;  // at most 200: fits an exit status
  });
  CHECK(std::accumulate(statuses.begin(), statuses.end(), 0) == keys);
}

TEST_CASE(
    "redis idempotency_guard: 8 processes start together on the same keys in the same "
    "order: each runs once, duplicates join or replay",
    "[redis][processes]") {
  auto opts = redis_test::server("idem_lockstep");
  if (!opts) return;
  const int keys = redis_test::sanitized ? 40 : 200;
  r::connection parent(*opts);
  const std::string arrived = parent.key("barrier");
  const auto statuses = redis_test::run_workers(processes, [&](int worker) {
    r::idempotency_options io;
    io.poll_policy = interlock::retry_policy::exponential(50us, 2ms, interlock::jitter_kind::full);
    r::idempotency_guard<std::string> guard(*opts, io);
    r::connection c(*opts);
    // Barrier: nobody starts before every worker is connected and ready (at most 30 s).
    (void)c.command({"INCR", arrived});
    bool all_here = false;
    for (int i = 0; i < 30000 && !all_here; ++i) {
      all_here = std::stoi(std::string(c.command({"GET", arrived}).str())) >= processes;
      if (!all_here) std::this_thread::sleep_for(1ms);
    }
    if (!all_here) return 3;
    int bad = 0;
    for (int k = 0; k < keys; ++k) {  // every worker: the same keys, in the same order
      const std::string id = std::to_string(k);
      auto out = guard.run("invoice-" + id, "request-" + id, [&] {
        (void)c.command({"INCR", c.key("executions:" + id)});
        std::string result = "invoice-" + id + "-by-" + std::to_string(worker);
        (void)c.command({"SET", c.key("result:" + id), result});
        std::this_thread::sleep_for(200us);  // a window for the others to arrive
        return result;
      });
      const char* status = "other";
      switch (out.status) {
        case interlock::run_status::executed:
          status = "executed";
          break;
        case interlock::run_status::joined:
          status = "joined";
          break;
        case interlock::run_status::replayed:
          status = "replayed";
          break;
        default:
          ++bad;
          break;
      }
      (void)c.command({"INCR", c.key(std::string("status:") + status)});
      if (!out.has_result() || *out != c.command({"GET", c.key("result:" + id)}).str()) ++bad;
    }
    return std::min(bad, 99);
  });
  CHECK(all_zero(statuses));
  auto count = [&](const std::string& name) {
    const r::reply v = parent.command({"GET", parent.key(name)});
    return v.is_nil() ? 0 : std::stoi(std::string(v.str()));
  };
  int not_once = 0;
  for (int k = 0; k < keys; ++k) {
    if (count("executions:" + std::to_string(k)) != 1) ++not_once;
  }
  CHECK(not_once == 0);
  const int executed = count("status:executed");
  const int joined = count("status:joined");
  const int replayed = count("status:replayed");
  CAPTURE(executed, joined, replayed);
  CHECK(executed == keys);
  CHECK(count("status:other") == 0);
  CHECK(joined + replayed == (processes - 1) * keys);
  CHECK(joined + replayed >= 1);
}
