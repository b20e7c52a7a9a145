// cas_slot against what a user would otherwise write, on a 64-byte trivially
// copyable value. Every baseline keeps the same {value, digest, stamp} and computes
// the same digest (interlock::content_digest) on each write, so the comparison is
// of the concurrency machinery, not of hashing.
//
//   cas_slot_load/<impl>         load and read one field
//   cas_slot_mixed_90_10/<impl>  90% loads, 10% increments of one field
//   cas_slot_update/interlock    uncontended update (1 thread)
//   cas_slot_update/sha256_only  the digest of the 64-byte value alone
//
// Implementations: interlock (cas_slot<payload>), atomic_shared_ptr
// (std::atomic<std::shared_ptr<const node>>, load-modify-CAS loop on writes), mutex
// (copy the node under std::mutex) and shared_mutex (copy under a shared lock, write
// under an exclusive one).
#include <interlock/cas_slot.hpp>
#include <interlock/sha256.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <type_traits>

namespace {

struct payload {
  std::array<std::uint64_t, 8> words{};
};
static_assert(sizeof(payload) == 64);
static_assert(std::is_trivially_copyable_v<payload>);
static_assert(std::has_unique_object_representations_v<payload>);

payload incremented(const payload& p) {
  payload next = p;
  ++next.words[0];
  return next;
}

/// What every baseline publishes: the same triple a cas_slot node holds.
struct node {
  payload value;
  interlock::digest etag;
  std::uint64_t stamp = 0;
};

node make_node(const payload& value, std::uint64_t stamp) {
  return node{value, interlock::content_digest(value), stamp};
}

/// One update in ten, spread evenly over each thread's iterations.
bool is_write(std::uint64_t i) { return i % 10 == 9; }

// ---- interlock ------------------------------------------------------------

interlock::cas_slot<payload>& shared_slot() {
  static interlock::cas_slot<payload> slot{payload{}};
  return slot;
}

void interlock_load(benchmark::State& state) {
  auto& slot = shared_slot();
  for (auto _ : state) {
    const auto snap = slot.load();
    benchmark::DoNotOptimize(snap->words[3]);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void interlock_mixed(benchmark::State& state) {
  auto& slot = shared_slot();
  std::uint64_t i = 0;
  for (auto _ : state) {
    if (is_write(++i)) {
      benchmark::DoNotOptimize(slot.update(incremented).stamp());
    } else {
      const auto snap = slot.load();
      benchmark::DoNotOptimize(snap->words[3]);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void interlock_update(benchmark::State& state) {
  static interlock::cas_slot<payload> slot{payload{}};  // its own: no other writer
  for (auto _ : state) {
    benchmark::DoNotOptimize(slot.update(incremented).stamp());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void sha256_only(benchmark::State& state) {
  payload value{};
  for (auto _ : state) {
    value = incremented(value);  // a different message each time, like update
    benchmark::DoNotOptimize(interlock::content_digest(value));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// ---- std::atomic<std::shared_ptr<const node>> -------------------------------

std::atomic<std::shared_ptr<const node>>& shared_pointer() {
  static std::atomic<std::shared_ptr<const node>> current{
      std::make_shared<const node>(make_node(payload{}, 1))};
  return current;
}

void atomic_shared_ptr_load(benchmark::State& state) {
  auto& current = shared_pointer();
  for (auto _ : state) {
    const std::shared_ptr<const node> snap = current.load();
    benchmark::DoNotOptimize(snap->value.words[3]);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void atomic_shared_ptr_mixed(benchmark::State& state) {
  auto& current = shared_pointer();
  std::uint64_t i = 0;
  for (auto _ : state) {
    if (is_write(++i)) {
      // Load, build the new node (hashing outside any lock, as cas_slot does), CAS.
      std::shared_ptr<const node> seen = current.load();
      for (;;) {
        auto next =
            std::make_shared<const node>(make_node(incremented(seen->value), seen->stamp + 1));
        if (current.compare_exchange_weak(seen, std::move(next))) break;
      }
    } else {
      const std::shared_ptr<const node> snap = current.load();
      benchmark::DoNotOptimize(snap->value.words[3]);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// ---- std::mutex / std::shared_mutex ----------------------------------------
//
// Writes hash inside the critical section: the new digest depends on the current
// value, which only the lock holder may read, and that is the code a user of a
// mutex writes. (Hashing outside would need an optimistic read-hash-recheck loop,
// i.e. a hand-rolled cas_slot.)

template <class Mutex>
struct locked_node {
  Mutex mutex;
  node current = make_node(payload{}, 1);
};

template <class Mutex>
locked_node<Mutex>& shared_locked() {
  static locked_node<Mutex> state;
  return state;
}

template <class Mutex>
node read_locked(locked_node<Mutex>& shared) {
  if constexpr (std::is_same_v<Mutex, std::shared_mutex>) {
    std::shared_lock lock(shared.mutex);
    return shared.current;
  } else {
    std::lock_guard lock(shared.mutex);
    return shared.current;
  }
}

template <class Mutex>
void locked_load(benchmark::State& state) {
  auto& shared = shared_locked<Mutex>();
  for (auto _ : state) {
    const node copy = read_locked(shared);
    benchmark::DoNotOptimize(copy.value.words[3]);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <class Mutex>
void locked_mixed(benchmark::State& state) {
  auto& shared = shared_locked<Mutex>();
  std::uint64_t i = 0;
  for (auto _ : state) {
    if (is_write(++i)) {
      std::lock_guard lock(shared.mutex);
      shared.current = make_node(incremented(shared.current.value), shared.current.stamp + 1);
      benchmark::DoNotOptimize(shared.current.stamp);
    } else {
      const node copy = read_locked(shared);
      benchmark::DoNotOptimize(copy.value.words[3]);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

BENCHMARK(interlock_load)
    ->Name("cas_slot_load/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(atomic_shared_ptr_load)
    ->Name("cas_slot_load/atomic_shared_ptr")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(locked_load<std::mutex>)
    ->Name("cas_slot_load/mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(locked_load<std::shared_mutex>)
    ->Name("cas_slot_load/shared_mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();

BENCHMARK(interlock_mixed)
    ->Name("cas_slot_mixed_90_10/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(atomic_shared_ptr_mixed)
    ->Name("cas_slot_mixed_90_10/atomic_shared_ptr")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(locked_mixed<std::mutex>)
    ->Name("cas_slot_mixed_90_10/mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(locked_mixed<std::shared_mutex>)
    ->Name("cas_slot_mixed_90_10/shared_mutex")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();

BENCHMARK(interlock_update)->Name("cas_slot_update/interlock")->Threads(1)->UseRealTime();
BENCHMARK(sha256_only)->Name("cas_slot_update/sha256_only")->Threads(1)->UseRealTime();
