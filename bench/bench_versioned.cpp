// versioned_read_<size>/interlock (seqlock read of a 16- or 64-byte value with its
// version) against the same copy under a std::shared_mutex read lock and under a
// std::mutex; versioned_update_contended/interlock_{backoff,no_backoff} (update of one
// shared 16-byte counter, retrying conflicts with and without exponential backoff)
// against a std::mutex around the same increment. The state is shared by all
// benchmark threads; items are committed updates (or completed reads).
#include <interlock/versioned.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <shared_mutex>

namespace {

struct payload_16 {
  std::uint64_t count = 0;
  std::uint64_t twin = 0;
};
struct payload_64 {
  std::array<std::uint64_t, 8> words{};
};
static_assert(interlock::versioned<payload_16>::uses_seqlock);
static_assert(interlock::versioned<payload_64>::uses_seqlock);

/// What a user would write without interlock: the value and a version under a lock.
template <class T, class Mutex>
struct locked_value {
  mutable Mutex mutex;
  T value{};
  std::uint64_t version = 1;
};

template <class T>
interlock::versioned<T>& shared_versioned() {
  static interlock::versioned<T> value;
  return value;
}

template <class T, class Mutex>
locked_value<T, Mutex>& shared_locked() {
  static locked_value<T, Mutex> value;
  return value;
}

template <class T>
void read_interlock(benchmark::State& state) {
  const auto& value = shared_versioned<T>();
  for (auto _ : state) {
    auto snapshot = value.read();
    benchmark::DoNotOptimize(snapshot);
  }
  state.SetItemsProcessed(state.iterations());
}

template <class T>
void read_shared_mutex(benchmark::State& state) {
  const auto& shared = shared_locked<T, std::shared_mutex>();
  for (auto _ : state) {
    std::shared_lock lock(shared.mutex);
    interlock::versioned_snapshot<T> snapshot{shared.value, shared.version};
    lock.unlock();
    benchmark::DoNotOptimize(snapshot);
  }
  state.SetItemsProcessed(state.iterations());
}

template <class T>
void read_mutex(benchmark::State& state) {
  const auto& shared = shared_locked<T, std::mutex>();
  for (auto _ : state) {
    std::unique_lock lock(shared.mutex);
    interlock::versioned_snapshot<T> snapshot{shared.value, shared.version};
    lock.unlock();
    benchmark::DoNotOptimize(snapshot);
  }
  state.SetItemsProcessed(state.iterations());
}

payload_16 incremented(const payload_16& p) { return {p.count + 1, p.twin + 1}; }

void update_interlock(benchmark::State& state, const interlock::retry_policy& policy) {
  auto& value = shared_versioned<payload_16>();
  std::int64_t failed = 0;
  std::int64_t attempts = 0;
  for (auto _ : state) {
    const auto result = value.update(incremented, policy);
    attempts += result.attempts;
    if (!result.committed()) ++failed;
  }
  if (failed != 0) state.SkipWithError("an update gave up under an unbounded policy");
  state.SetItemsProcessed(state.iterations());
  state.counters["attempts_per_update"] =
      benchmark::Counter(static_cast<double>(attempts) /
                             static_cast<double>(state.iterations() > 0 ? state.iterations() : 1),
                         benchmark::Counter::kAvgThreads);
}

void update_interlock_no_backoff(benchmark::State& state) {
  update_interlock(state, interlock::retry_policy::immediate());
}

void update_interlock_backoff(benchmark::State& state) {
  using namespace std::chrono_literals;
  update_interlock(state,
                   interlock::retry_policy::exponential(200ns, 20us, interlock::jitter_kind::full));
}

void update_mutex(benchmark::State& state) {
  auto& shared = shared_locked<payload_16, std::mutex>();
  for (auto _ : state) {
    std::lock_guard lock(shared.mutex);
    shared.value = incremented(shared.value);
    ++shared.version;
  }
  state.SetItemsProcessed(state.iterations());
}

void read_16B_interlock(benchmark::State& s) { read_interlock<payload_16>(s); }
void read_16B_shared_mutex(benchmark::State& s) { read_shared_mutex<payload_16>(s); }
void read_16B_mutex(benchmark::State& s) { read_mutex<payload_16>(s); }
void read_64B_interlock(benchmark::State& s) { read_interlock<payload_64>(s); }
void read_64B_shared_mutex(benchmark::State& s) { read_shared_mutex<payload_64>(s); }
void read_64B_mutex(benchmark::State& s) { read_mutex<payload_64>(s); }

}  // namespace

BENCHMARK(read_16B_interlock)
    ->Name("versioned_read_16B/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(read_16B_shared_mutex)
    ->Name("versioned_read_16B/shared_mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(read_16B_mutex)
    ->Name("versioned_read_16B/mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(read_64B_interlock)
    ->Name("versioned_read_64B/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(read_64B_shared_mutex)
    ->Name("versioned_read_64B/shared_mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(read_64B_mutex)
    ->Name("versioned_read_64B/mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(update_interlock_backoff)
    ->Name("versioned_update_contended/interlock_backoff")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(update_interlock_no_backoff)
    ->Name("versioned_update_contended/interlock_no_backoff")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(update_mutex)
    ->Name("versioned_update_contended/mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
