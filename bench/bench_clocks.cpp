// Clocks and causal delivery.
//
// vector_clock_{compare,merge}_<n>/interlock against .../std_map: the clock most code
// writes by hand, std::map<std::string, std::uint64_t>, compared by walking both maps
// in order and merged with a hinted insert walk (no per-entry lookup from the root).
// Both sides use the same string node ids ("node-12"), so the comparison is fair.
// Compare: two clocks over the same n nodes, one ahead in its last entry (a full
// scan, result `before`). Merge: in place, the other clock ahead in every second entry.
//
// causal_buffer_deliver/interlock: messages per second through one causal_buffer, a
// stream from 4 senders with 10% of adjacent pairs swapped (held, then delivered).
//
// lamport_tick/interlock and hybrid_clock_now/interlock against .../atomic_fetch_add
// (a bare std::atomic<std::uint64_t>::fetch_add), all threads on one clock.
#include <interlock/causal_buffer.hpp>
#include <interlock/hybrid_clock.hpp>
#include <interlock/lamport_clock.hpp>
#include <interlock/vector_clock.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using string_clock = interlock::vector_clock<std::string>;
using map_clock = std::map<std::string, std::uint64_t>;

std::string node_name(std::size_t n) { return "node-" + std::to_string(n); }

// ---- the hand-written std::map clock -----------------------------------------

interlock::clock_order map_compare(const map_clock& a, const map_clock& b) {
  bool less = false;
  bool greater = false;
  auto i = a.begin();
  auto j = b.begin();
  while (i != a.end() && j != b.end()) {
    if (i->first < j->first) {
      greater = true;
      ++i;
    } else if (j->first < i->first) {
      less = true;
      ++j;
    } else {
      less = less || i->second < j->second;
      greater = greater || i->second > j->second;
      ++i;
      ++j;
    }
  }
  greater = greater || i != a.end();
  less = less || j != b.end();
  if (less && greater) return interlock::clock_order::concurrent;
  if (less) return interlock::clock_order::before;
  if (greater) return interlock::clock_order::after;
  return interlock::clock_order::equal;
}

void map_merge(map_clock& a, const map_clock& b) {
  auto hint = a.begin();
  for (const auto& [node, counter] : b) {
    while (hint != a.end() && hint->first < node) ++hint;
    if (hint != a.end() && hint->first == node) {
      hint->second = std::max(hint->second, counter);
    } else {
      hint = std::next(a.emplace_hint(hint, node, counter));
    }
  }
}

template <class Clock>
std::pair<Clock, Clock> clock_pair(std::size_t nodes, bool every_second) {
  Clock a, b;
  for (std::size_t n = 0; n < nodes; ++n) {
    const bool ahead = every_second ? (n % 2 == 0) : (n + 1 == nodes);
    if constexpr (std::is_same_v<Clock, map_clock>) {
      a[node_name(n)] = 10 + n;
      b[node_name(n)] = 10 + n + (ahead ? 1 : 0);
    } else {
      a.merge(Clock{{node_name(n), 10 + n}});
      b.merge(Clock{{node_name(n), 10 + n + (ahead ? 1 : 0)}});
    }
  }
  return {std::move(a), std::move(b)};
}

void compare_interlock(benchmark::State& state, std::size_t nodes) {
  const auto [a, b] = clock_pair<string_clock>(nodes, false);
  for (auto _ : state) benchmark::DoNotOptimize(a.compare(b));
}
void compare_std_map(benchmark::State& state, std::size_t nodes) {
  const auto [a, b] = clock_pair<map_clock>(nodes, false);
  for (auto _ : state) benchmark::DoNotOptimize(map_compare(a, b));
}
void merge_interlock(benchmark::State& state, std::size_t nodes) {
  auto [a, b] = clock_pair<string_clock>(nodes, true);
  for (auto _ : state) {
    a.merge(b);
    benchmark::ClobberMemory();
  }
}
void merge_std_map(benchmark::State& state, std::size_t nodes) {
  auto [a, b] = clock_pair<map_clock>(nodes, true);
  for (auto _ : state) {
    map_merge(a, b);
    benchmark::ClobberMemory();
  }
}

void vector_clock_compare_4_interlock(benchmark::State& s) { compare_interlock(s, 4); }
void vector_clock_compare_4_std_map(benchmark::State& s) { compare_std_map(s, 4); }
void vector_clock_compare_16_interlock(benchmark::State& s) { compare_interlock(s, 16); }
void vector_clock_compare_16_std_map(benchmark::State& s) { compare_std_map(s, 16); }
void vector_clock_compare_64_interlock(benchmark::State& s) { compare_interlock(s, 64); }
void vector_clock_compare_64_std_map(benchmark::State& s) { compare_std_map(s, 64); }
void vector_clock_merge_4_interlock(benchmark::State& s) { merge_interlock(s, 4); }
void vector_clock_merge_4_std_map(benchmark::State& s) { merge_std_map(s, 4); }
void vector_clock_merge_16_interlock(benchmark::State& s) { merge_interlock(s, 16); }
void vector_clock_merge_16_std_map(benchmark::State& s) { merge_std_map(s, 16); }
void vector_clock_merge_64_interlock(benchmark::State& s) { merge_interlock(s, 64); }
void vector_clock_merge_64_std_map(benchmark::State& s) { merge_std_map(s, 64); }

// ---- causal delivery ---------------------------------------------------------

struct stamped {
  std::uint64_t sender;
  interlock::vector_clock<> clock;
};

// 4 senders, each message sent after seeing all earlier ones; 10% of adjacent pairs
// swapped in transit.
std::vector<stamped> message_stream(std::size_t count) {
  std::mt19937_64 random(7);
  std::vector<stamped> out;
  interlock::vector_clock<> seen;
  for (std::size_t k = 0; k < count; ++k) {
    const std::uint64_t sender = random() % 4;
    seen.tick(sender);
    out.push_back({sender, seen});
  }
  for (std::size_t k = 0; k + 1 < count; ++k) {
    if (random() % 10 == 0) {
      std::swap(out[k], out[k + 1]);
      ++k;
    }
  }
  return out;
}

void causal_buffer_deliver_interlock(benchmark::State& state) {
  const auto stream = message_stream(4096);
  std::uint64_t delivered = 0;
  for (auto _ : state) {
    interlock::causal_buffer<std::uint64_t> buffer;
    for (std::size_t k = 0; k < stream.size(); ++k) {
      buffer.offer(stream[k].sender, stream[k].clock, k,
                   [&delivered](auto&& d) { delivered += d.message + 1; });
    }
  }
  benchmark::DoNotOptimize(delivered);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * stream.size()));
}

// ---- scalar clocks -----------------------------------------------------------

interlock::lamport_clock shared_lamport;
interlock::hybrid_clock shared_hybrid;
std::atomic<std::uint64_t> shared_counter{0};

void lamport_tick_interlock(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(shared_lamport.tick());
}
void hybrid_clock_now_interlock(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(shared_hybrid.now());
}
void atomic_fetch_add(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(shared_counter.fetch_add(1, std::memory_order_acq_rel));
  }
}

}  // namespace

BENCHMARK(vector_clock_compare_4_interlock)->Name("vector_clock_compare_4/interlock");
BENCHMARK(vector_clock_compare_4_std_map)->Name("vector_clock_compare_4/std_map");
BENCHMARK(vector_clock_compare_16_interlock)->Name("vector_clock_compare_16/interlock");
BENCHMARK(vector_clock_compare_16_std_map)->Name("vector_clock_compare_16/std_map");
BENCHMARK(vector_clock_compare_64_interlock)->Name("vector_clock_compare_64/interlock");
BENCHMARK(vector_clock_compare_64_std_map)->Name("vector_clock_compare_64/std_map");
BENCHMARK(vector_clock_merge_4_interlock)->Name("vector_clock_merge_4/interlock");
BENCHMARK(vector_clock_merge_4_std_map)->Name("vector_clock_merge_4/std_map");
BENCHMARK(vector_clock_merge_16_interlock)->Name("vector_clock_merge_16/interlock");
BENCHMARK(vector_clock_merge_16_std_map)->Name("vector_clock_merge_16/std_map");
BENCHMARK(vector_clock_merge_64_interlock)->Name("vector_clock_merge_64/interlock");
BENCHMARK(vector_clock_merge_64_std_map)->Name("vector_clock_merge_64/std_map");
BENCHMARK(causal_buffer_deliver_interlock)->Name("causal_buffer_deliver/interlock");
BENCHMARK(lamport_tick_interlock)
    ->Name("lamport_tick/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(atomic_fetch_add)
    ->Name("lamport_tick/atomic_fetch_add")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(hybrid_clock_now_interlock)
    ->Name("hybrid_clock_now/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(atomic_fetch_add)
    ->Name("hybrid_clock_now/atomic_fetch_add")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
