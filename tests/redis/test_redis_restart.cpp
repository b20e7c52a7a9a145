// Redis stops in the middle of a run and starts again (a private server, on its own
// free port, that this test stops with SHUTDOWN SAVE and restarts on the same port).
#include "redis/redis_test_support.hpp"

#include <interlock/redis/idempotency_store.hpp>
#include <interlock/redis/keyed_mutex.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <thread>
#include <vector>

namespace r = interlock::redis;
using namespace std::chrono_literals;

TEST_CASE("redis: a server restart gives errors while down, no double runs, then resumes",
          "[redis][restart]") {
  const auto exe = redis_test::server_executable();
  if (!exe) {
    WARN("no redis-server executable (PATH or INTERLOCK_REDIS_SERVER): restart test skipped");
    return;
  }
  redis_test::private_server server(*exe);
  if (!server.start()) {
    WARN("the private redis-server did not start: restart test skipped");
    return;
  }
  r::connection_options o;
  o.port = server.port();
  o.connect_timeout = 300ms;
  o.command_timeout = 1000ms;
  o.key_prefix = "restart:";
  auto pool = std::make_shared<r::connection_pool>(o);
  r::idempotency_guard<std::string> guard(pool);
  r::keyed_mutex locks(pool);

  constexpr int keys = 100;
  std::vector<int> runs(keys, 0);
  auto call = [&](int k) {
    return guard.run("job-" + std::to_string(k), k, [&runs, k] {
      ++runs[static_cast<std::size_t>(k)];
      return "done-" + std::to_string(k);
    });
  };

  for (int k = 0; k < keys / 2; ++k) CHECK(call(k).status == interlock::run_status::executed);
  {
    auto held = locks.try_lock("shared");
    CHECK(held);
  }

  server.stop();  // the pooled connections are now dead
  int errors = 0;
  for (int k = 0; k < keys; ++k) {
    try {
      (void)call(k);
    } catch (const r::redis_error& e) {
      CHECK(e.kind() == r::redis_error::error_kind::io);
      ++errors;
    }
  }
  CHECK(errors == keys);  // every call failed loudly; none ran
  CHECK_THROWS_AS(locks.try_lock("shared"), r::redis_error);
  for (int k = 0; k < keys; ++k) CHECK(runs[static_cast<std::size_t>(k)] == (k < keys / 2 ? 1 : 0));

  REQUIRE(server.start());  // same port, the data saved by SHUTDOWN SAVE
  int replayed = 0;
  int executed = 0;
  for (int k = 0; k < keys; ++k) {
    auto out = call(k);
    REQUIRE(out.has_result());
    CHECK(*out == "done-" + std::to_string(k));
    if (out.status == interlock::run_status::replayed) ++replayed;
    if (out.status == interlock::run_status::executed) ++executed;
  }
  CHECK(replayed == keys / 2);
  CHECK(executed == keys / 2);
  for (int k = 0; k < keys; ++k) CHECK(runs[static_cast<std::size_t>(k)] == 1);
  CHECK(locks.try_lock("shared"));
  server.stop();
}

TEST_CASE("redis keyed_mutex: Redis unreachable for a whole lease: with_lock's lease is lost",
          "[redis][restart]") {
  const auto exe = redis_test::server_executable();
  if (!exe) {
    WARN("no redis-server executable (PATH or INTERLOCK_REDIS_SERVER): test skipped");
    return;
  }
  redis_test::private_server server(*exe);
  if (!server.start()) {
    WARN("the private redis-server did not start: test skipped");
    return;
  }
  r::connection_options o;
  o.port = server.port();
  o.connect_timeout = 300ms;
  o.command_timeout = 1000ms;
  o.key_prefix = "unreachable:";
  r::lock_options lo;
  lo.lease_time = 1500ms;  // renewed every 500 ms while Redis answers
  r::keyed_mutex m(o, lo);

  bool lost_before_stop = true;
  bool lost_while_down = false;
  bool restarted = false;
  auto fn = [&](r::keyed_mutex::guard& g) {
    lost_before_stop = g.lease_lost();
    server.stop();  // connections are refused from now on: every renewal fails
    // Only the renewal thread's "unreachable for a whole lease" rule can set the flag
    // while Redis is down (at most 15 s; about 1.5 s when it works).
    for (int i = 0; i < 1500 && !lost_while_down; ++i) {
      lost_while_down = g.lease_lost();
      if (!lost_while_down) std::this_thread::sleep_for(10ms);
    }
    restarted = server.start();  // so that with_lock's release can reach Redis again
    return 1;
  };
  CHECK_THROWS_AS(m.with_lock("ledger", fn), r::lease_lost);
  CHECK_FALSE(lost_before_stop);
  CHECK(lost_while_down);
  REQUIRE(restarted);
  CHECK(m.try_lock("ledger"));  // the lease expired while Redis was down

  // Still down when fn returns: the release cannot reach Redis, and with_lock still
  // reports the lost lease (not the release's connection error).
  bool lost_at_return = false;
  auto fn_down = [&](r::keyed_mutex::guard& g) {
    server.stop();
    for (int i = 0; i < 1500 && !lost_at_return; ++i) {
      lost_at_return = g.lease_lost();
      if (!lost_at_return) std::this_thread::sleep_for(10ms);
    }
    return 2;
  };
  CHECK_THROWS_AS(m.with_lock("ledger:2", fn_down), r::lease_lost);
  CHECK(lost_at_return);
  server.stop();
}
