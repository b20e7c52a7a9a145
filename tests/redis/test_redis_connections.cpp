// Connection lifetime: timeouts at the ends of their range, and pooled or held
// connections that the server closed while they sat idle (its `timeout` setting, a
// proxy, a restart). The idle-close tests use a private server, since they change its
// configuration and kill its clients.
#include "redis/redis_test_support.hpp"

#include <interlock/redis/idempotency_store.hpp>
#include <interlock/redis/keyed_mutex.hpp>

#include <catch2/catch.hpp>

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
