// Redis-backed stores against the bare commands a user would otherwise send, on the
// server at 127.0.0.1:$INTERLOCK_REDIS_PORT (default 6379; each benchmark is skipped
// with a message when nothing answers there):
//   redis_lock/interlock                redis::keyed_mutex try_lock + unlock (uncontended: one
//                                       key per thread): two EVALSHA round trips
//   redis_lock/set_nx_del               SET key token NX PX + DEL: the floor, two round trips
//                                       (without the holder check or a fencing token)
//   redis_idempotency_replay/interlock  redis::idempotency_guard::run on a completed key:
//                                       one EVALSHA round trip, fingerprint, decode
//   redis_idempotency_replay/bare_get   GET of the stored result: the floor
#if INTERLOCK_BENCH_HAVE_REDIS

#include <interlock/redis/idempotency_store.hpp>
#include <interlock/redis/keyed_mutex.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <cstdlib>
#include <optional>
#include <string>

namespace {

namespace r = interlock::redis;

std::optional<r::connection_options> bench_server() {
  r::connection_options o;
  const char* p = std::getenv("INTERLOCK_REDIS_PORT");
  o.port = p != nullptr && *p != '\0' ? std::atoi(p) : 6379;
  o.key_prefix = "interlock_bench:";
  r::connection c(o);
  try {
    if (c.command({"PING"}).str() == "PONG") return o;
  } catch (const r::redis_error&) {
  }
  return std::nullopt;
}

void redis_lock_interlock(benchmark::State& state) {
  const auto o = bench_server();
  if (!o) {
    state.SkipWithError("no redis-server at INTERLOCK_REDIS_PORT");
    return;
  }
  r::keyed_mutex locks(*o);
  const std::string key = "lock-" + std::to_string(state.thread_index());
  for (auto _ : state) {
    auto g = locks.try_lock(key);
    if (!g || !g.unlock()) {
      state.SkipWithError("the uncontended lock was refused");
      break;
    }
  }
}

void redis_lock_set_nx_del(benchmark::State& state) {
  const auto o = bench_server();
  if (!o) {
    state.SkipWithError("no redis-server at INTERLOCK_REDIS_PORT");
    return;
  }
  r::connection c(*o);
  const std::string key = c.key("bare-lock-" + std::to_string(state.thread_index()));
  const std::string token = "token-" + std::to_string(state.thread_index());
  for (auto _ : state) {
    if (c.command({"SET", key, token, "NX", "PX", "10000"}).is_nil()) {
      state.SkipWithError("the uncontended SET NX was refused");
      break;
    }
    benchmark::DoNotOptimize(c.command({"DEL", key}).integer());
  }
}

void redis_idempotency_replay_interlock(benchmark::State& state) {
  const auto o = bench_server();
  if (!o) {
    state.SkipWithError("no redis-server at INTERLOCK_REDIS_PORT");
    return;
  }
  r::idempotency_guard<std::string> guard(*o);
  const std::string key = "payment-" + std::to_string(state.thread_index());
  const std::string request = "charge 100 EUR to card 4242";
  const std::string receipt(64, 'r');
  (void)guard.run(key, request, [&] { return receipt; });
  for (auto _ : state) {
    auto out = guard.run(key, request, [&] { return receipt; });
    if (out.status != interlock::run_status::replayed) {
      state.SkipWithError("the stored result was not replayed");
      break;
    }
    benchmark::DoNotOptimize(out.result.get());
  }
}

void redis_idempotency_replay_bare_get(benchmark::State& state) {
  const auto o = bench_server();
  if (!o) {
    state.SkipWithError("no redis-server at INTERLOCK_REDIS_PORT");
    return;
  }
  r::connection c(*o);
  const std::string key = c.key("bare-result-" + std::to_string(state.thread_index()));
  (void)c.command({"SET", key, std::string(64, 'r')});
  for (auto _ : state) {
    r::reply v = c.command({"GET", key});
    benchmark::DoNotOptimize(v.str().data());
  }
}

}  // namespace

BENCHMARK(redis_lock_interlock)
    ->Name("redis_lock/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(redis_lock_set_nx_del)
    ->Name("redis_lock/set_nx_del")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(redis_idempotency_replay_interlock)
    ->Name("redis_idempotency_replay/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(redis_idempotency_replay_bare_get)
    ->Name("redis_idempotency_replay/bare_get")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();

#endif  // INTERLOCK_BENCH_HAVE_REDIS
