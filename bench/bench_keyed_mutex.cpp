// keyed_mutex_distinct/<impl>: every thread locks and unlocks random keys drawn from
// 1,000,000 short strings ("user:123456"), so entries are created and erased all the
// time. keyed_mutex_hot/<impl>: every thread locks and unlocks one key.
//
// Baselines, written the way a user would:
//   global_map    one std::mutex over std::unordered_map<std::string, entry{std::mutex,
//                 refcount}>, creating the entry on lock and erasing it on the last unlock
//   striped_4096  std::mutex[4096] indexed by the key's hash (unrelated keys collide;
//                 nothing is created or erased)
//   tbb_accessor  tbb::concurrent_hash_map<std::string, int>: insert with an accessor
//                 (the element's write lock), erase through it
//   std_mutex     one bare std::mutex (hot key only)
#include <interlock/keyed_mutex.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#if INTERLOCK_BENCH_HAVE_TBB
#include <tbb/concurrent_hash_map.h>
#endif

namespace {

constexpr std::size_t key_count = 1000000;

const std::vector<std::string>& keys() {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> out;
    out.reserve(key_count);
    char buffer[32];
    for (std::size_t i = 0; i < key_count; ++i) {
      std::snprintf(buffer, sizeof buffer, "user:%06zu", i);
      out.emplace_back(buffer);
    }
    return out;
  }();
  return all;
}

/// A cheap per-thread random key index (xorshift64*).
struct key_picker {
  explicit key_picker(int thread)
      : state(0x9E3779B97F4A7C15ULL * static_cast<unsigned>(thread + 1)) {}
  const std::string& next() {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return keys()[(state * 0x2545F4914F6CDD1DULL >> 32) % key_count];
  }
  std::uint64_t state;
};

// ---- distinct keys ---------------------------------------------------------------

void distinct_interlock(benchmark::State& state) {
  static interlock::keyed_mutex<std::string> locks;
  key_picker pick(state.thread_index());
  for (auto _ : state) {
    auto g = locks.lock(pick.next());
    benchmark::DoNotOptimize(g);
  }
  state.SetItemsProcessed(state.iterations());
}

class global_map {
 public:
  struct entry {
    std::mutex mutex;
    int refs = 0;  // guarded by global_map::mutex_
  };
  entry* lock(const std::string& key) {
    entry* e = nullptr;
    {
      std::lock_guard lock(mutex_);
      auto& slot = map_[key];
      if (!slot) slot = std::make_unique<entry>();
      ++slot->refs;
      e = slot.get();
    }
    e->mutex.lock();
    return e;
  }
  void unlock(const std::string& key, entry* e) {
    e->mutex.unlock();
    std::lock_guard lock(mutex_);
    if (--e->refs == 0) map_.erase(key);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, std::unique_ptr<entry>> map_;
};

void distinct_global_map(benchmark::State& state) {
  static global_map locks;
  key_picker pick(state.thread_index());
  for (auto _ : state) {
    const std::string& key = pick.next();
    auto* e = locks.lock(key);
    benchmark::DoNotOptimize(e);
    locks.unlock(key, e);
  }
  state.SetItemsProcessed(state.iterations());
}

void distinct_striped_4096(benchmark::State& state) {
  static std::mutex stripes[4096];
  key_picker pick(state.thread_index());
  for (auto _ : state) {
    std::mutex& m = stripes[std::hash<std::string>{}(pick.next()) % 4096];
    m.lock();
    benchmark::DoNotOptimize(&m);
    m.unlock();
  }
  state.SetItemsProcessed(state.iterations());
}

#if INTERLOCK_BENCH_HAVE_TBB
void distinct_tbb_accessor(benchmark::State& state) {
  static tbb::concurrent_hash_map<std::string, int> locks;
  key_picker pick(state.thread_index());
  for (auto _ : state) {
    tbb::concurrent_hash_map<std::string, int>::accessor held;
    locks.insert(held, pick.next());
    benchmark::DoNotOptimize(held->second);
    locks.erase(held);
  }
  state.SetItemsProcessed(state.iterations());
}
#endif

// ---- one hot key -----------------------------------------------------------------

void hot_interlock(benchmark::State& state) {
  static interlock::keyed_mutex<std::string> locks;
  const std::string& key = keys()[424242];
  for (auto _ : state) {
    auto g = locks.lock(key);
    benchmark::DoNotOptimize(g);
  }
  state.SetItemsProcessed(state.iterations());
}

void hot_std_mutex(benchmark::State& state) {
  static std::mutex m;
  for (auto _ : state) {
    m.lock();
    benchmark::DoNotOptimize(&m);
    m.unlock();
  }
  state.SetItemsProcessed(state.iterations());
}

// Build the key set before any timing starts.
const bool keys_built = (keys(), true);

}  // namespace

BENCHMARK(distinct_interlock)
    ->Name("keyed_mutex_distinct/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(distinct_global_map)
    ->Name("keyed_mutex_distinct/global_map")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(distinct_striped_4096)
    ->Name("keyed_mutex_distinct/striped_4096")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
#if INTERLOCK_BENCH_HAVE_TBB
BENCHMARK(distinct_tbb_accessor)
    ->Name("keyed_mutex_distinct/tbb_accessor")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
#endif
BENCHMARK(hot_interlock)
    ->Name("keyed_mutex_hot/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(hot_std_mutex)
    ->Name("keyed_mutex_hot/std_mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
