// idempotency_replay/<impl>: every call replays a stored result, keys drawn from a set of
// 100,000 ("order:123456"), stored once before measuring.
// idempotency_first_run/<impl>: every call uses a new key: record it in progress, run the
// operation, store its result; old records are dropped so memory stays bounded.
//
// Implementations:
//   interlock       idempotency_guard<std::string, payment_result>
//   interlock_pooled  the same with idempotency_options::pooled_records (records from the
//                   guard's own pool)
//   global_map      std::mutex + std::unordered_map<std::string, record>: the usual
//                   hand-written one
//   sharded_map_64  64 of those, picked by the key's hash
//
// Written fairly: every implementation hashes the key once per call, compares a
// precomputed request digest with the stored one (nobody hashes the request per call),
// copies the result's shared_ptr to the caller, and in first_run marks the key in
// progress before running the operation (what makes a hand-written guard correct) and
// evicts the oldest record beyond the same total bound (65,536 records).
#include <interlock/idempotency_guard.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

struct payment_result {
  std::uint64_t charge_id = 0;
  std::uint64_t amount_cents = 0;
};

constexpr std::size_t replay_key_count = 100'000;
constexpr std::size_t first_run_bound = 65'536;  // records kept by every implementation

const std::vector<std::string>& replay_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    k.reserve(replay_key_count);
    for (std::size_t i = 0; i < replay_key_count; ++i)
      k.push_back("order:" + std::to_string(100000 + i));
    return k;
  }();
  return keys;
}

/// The request fingerprint of key i, computed once (as a caller holding the request's
/// digest would).
const std::vector<interlock::digest>& replay_requests() {
  static const std::vector<interlock::digest> requests = [] {
    std::vector<interlock::digest> r;
    r.reserve(replay_key_count);
    for (std::size_t i = 0; i < replay_key_count; ++i) {
      r.push_back(interlock::content_digest("amount=" + std::to_string(i % 977)));
    }
    return r;
  }();
  return requests;
}

/// Every thread walks the key set with a prime stride from its own start: the same
/// key sequence for every implementation.
struct key_walk {
  explicit key_walk(int thread)
      : index(static_cast<std::size_t>(thread) * 12'347 % replay_key_count) {}
  std::size_t next() noexcept {
    index += 7'919;
    if (index >= replay_key_count) index -= replay_key_count;
    return index;
  }
  std::size_t index;
};

// ---- the hand-written baselines --------------------------------------------------

/// A key with its hash computed once: the maps below take it for lookups, so the
/// sharded map does not hash twice (once for the shard, once in the map).
struct prehashed {
  const std::string& key;
  std::size_t hash;
};

struct prehashed_hash {
  using is_transparent = void;
  std::size_t operator()(const std::string& key) const noexcept {
    return std::hash<std::string>{}(key);
  }
  std::size_t operator()(const prehashed& key) const noexcept { return key.hash; }
};

struct prehashed_equal {
  using is_transparent = void;
  bool operator()(const std::string& a, const std::string& b) const noexcept { return a == b; }
  bool operator()(const prehashed& a, const std::string& b) const noexcept { return a.key == b; }
  bool operator()(const std::string& a, const prehashed& b) const noexcept { return a == b.key; }
};

struct record {
  interlock::digest fingerprint;
  std::shared_ptr<const payment_result> result;  // null while in progress
};

struct alignas(64) locked_map {
  std::mutex mutex;
  std::unordered_map<std::string, record, prehashed_hash, prehashed_equal> map;
};

/// The usual hand-written idempotency store: N maps (1 = one global map), each
/// behind its own mutex.
template <std::size_t Shards>
class map_store {
 public:
  /// A stored result for a matching request, or null (absent, in progress, mismatch).
  std::shared_ptr<const payment_result> replay(const std::string& key,
                                               const interlock::digest& request) {
    const prehashed k{key, std::hash<std::string>{}(key)};
    locked_map& shard = shard_of(k.hash);
    std::lock_guard lock(shard.mutex);
    const auto it = shard.map.find(k);
    if (it == shard.map.end() || it->second.fingerprint != request) return nullptr;
    return it->second.result;
  }

  /// Records `key` in progress (false when it exists), runs op outside the lock,
  /// stores the result.
  template <class Op>
  std::shared_ptr<const payment_result> first_run(const std::string& key,
                                                  const interlock::digest& request, Op&& op) {
    const prehashed k{key, std::hash<std::string>{}(key)};
    locked_map& shard = shard_of(k.hash);
    {
      std::lock_guard lock(shard.mutex);
      if (!shard.map.try_emplace(key, record{request, nullptr}).second) return nullptr;
    }
    auto result = std::make_shared<const payment_result>(op());
    {
      std::lock_guard lock(shard.mutex);
      shard.map.find(k)->second.result = result;
    }
    return result;
  }

  void erase(const std::string& key) {
    const prehashed k{key, std::hash<std::string>{}(key)};
    locked_map& shard = shard_of(k.hash);
    std::lock_guard lock(shard.mutex);
    if (const auto it = shard.map.find(k); it != shard.map.end()) shard.map.erase(it);
  }

 private:
  locked_map& shard_of(std::size_t hash) noexcept {
    if constexpr (Shards == 1) {
      return shards_[0];
    } else {
      return shards_[interlock::detail::mix_hash(hash) % Shards];
    }
  }

  std::array<locked_map, Shards> shards_;
};

using global_map = map_store<1>;
using sharded_map_64 = map_store<64>;

// ---- idempotency_replay ----------------------------------------------------------

using guard_type = interlock::idempotency_guard<std::string, payment_result>;

template <bool Pooled>
guard_type& replay_guard() {
  static guard_type* guard = [] {
    interlock::idempotency_options options;
    options.pooled_records = Pooled;
    auto* g = new guard_type(options);  // lives for the process: threads of every run share it
    const auto& keys = replay_keys();
    const auto& requests = replay_requests();
    for (std::size_t i = 0; i < keys.size(); ++i) {
      (void)g->run(keys[i], requests[i], [i] { return payment_result{i, i % 977}; });
    }
    return g;
  }();
  return *guard;
}

template <class Store>
Store& replay_store() {
  static Store* store = [] {
    auto* s = new Store;
    const auto& keys = replay_keys();
    const auto& requests = replay_requests();
    for (std::size_t i = 0; i < keys.size(); ++i) {
      (void)s->first_run(keys[i], requests[i], [i] { return payment_result{i, i % 977}; });
    }
    return s;
  }();
  return *store;
}

template <bool Pooled>
void replay_interlock(benchmark::State& state) {
  auto& guard = replay_guard<Pooled>();
  const auto& keys = replay_keys();
  const auto& requests = replay_requests();
  key_walk walk(state.thread_index());
  for (auto _ : state) {
    const std::size_t i = walk.next();
    auto out = guard.run(keys[i], requests[i], [] { return payment_result{}; });
    if (out.status != interlock::run_status::replayed) {
      state.SkipWithError("not a replay");
      break;
    }
    benchmark::DoNotOptimize(out.result.get());
  }
  state.SetItemsProcessed(state.iterations());
}

template <class Store>
void replay_baseline(benchmark::State& state) {
  auto& store = replay_store<Store>();
  const auto& keys = replay_keys();
  const auto& requests = replay_requests();
  key_walk walk(state.thread_index());
  for (auto _ : state) {
    const std::size_t i = walk.next();
    auto result = store.replay(keys[i], requests[i]);
    if (result == nullptr) {
      state.SkipWithError("not a replay");
      break;
    }
    benchmark::DoNotOptimize(result.get());
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- idempotency_first_run -------------------------------------------------------

/// Keys unique across every thread of every run: a block id per thread and run, and a
/// counter, formatted like "b17:123456".
class fresh_keys {
 public:
  fresh_keys() : block_(next_block().fetch_add(1, std::memory_order_relaxed)) {}  // an id only
  const std::string& next() {
    std::array<char, 48> buffer{};  // 'b', two uint64 (20 digits each), ':'
    buffer[0] = 'b';
    char* const colon = std::to_chars(buffer.data() + 1, buffer.data() + 21, block_).ptr;
    *colon = ':';
    char* const end = std::to_chars(colon + 1, colon + 21, counter_++).ptr;
    key_.assign(buffer.data(), end);
    return key_;
  }

 private:
  static std::atomic<std::uint64_t>& next_block() {
    static std::atomic<std::uint64_t> block{0};
    return block;
  }
  std::uint64_t block_;
  std::uint64_t counter_ = 0;
  std::string key_;
};

const interlock::digest& first_run_request() {
  static const interlock::digest request = interlock::content_digest(std::string("amount=1999"));
  return request;
}

template <bool Pooled>
guard_type& first_run_guard() {
  static guard_type* guard = [] {
    interlock::idempotency_options options;
    options.capacity = first_run_bound;  // the oldest completed records are evicted
    options.pooled_records = Pooled;
    // Nothing expires (capacity bounds memory), so the clock is a constant: no clock
    // read per call, as the baselines read none.
    return new guard_type(options, [] { return std::chrono::steady_clock::time_point{}; });
  }();
  return *guard;
}

template <bool Pooled>
void first_run_interlock(benchmark::State& state) {
  auto& guard = first_run_guard<Pooled>();
  const auto& request = first_run_request();
  fresh_keys keys;
  std::uint64_t charge = 0;
  for (auto _ : state) {
    auto out = guard.run(keys.next(), request, [&charge] {
      return payment_result{++charge, 1999};
    });
    if (out.status != interlock::run_status::executed) {
      state.SkipWithError("not executed");
      break;
    }
    benchmark::DoNotOptimize(out.result.get());
  }
  state.SetItemsProcessed(state.iterations());
}

template <class Store>
void first_run_baseline(benchmark::State& state) {
  static Store store;
  const auto& request = first_run_request();
  fresh_keys keys;
  // This thread's share of the bound: its oldest record is erased beyond it.
  const std::size_t bound = first_run_bound / static_cast<std::size_t>(state.threads());
  std::vector<std::string> ring(bound);
  std::size_t next = 0;
  std::size_t filled = 0;
  std::uint64_t charge = 0;
  for (auto _ : state) {
    const std::string& key = keys.next();
    auto result = store.first_run(key, request, [&charge] {
      return payment_result{++charge, 1999};
    });
    if (result == nullptr) {
      state.SkipWithError("not executed");
      break;
    }
    benchmark::DoNotOptimize(result.get());
    if (filled == bound) {
      store.erase(ring[next]);
    } else {
      ++filled;
    }
    ring[next] = key;
    next = next + 1 == bound ? 0 : next + 1;
  }
  state.SetItemsProcessed(state.iterations());
  for (std::size_t i = 0; i < filled; ++i) store.erase(ring[i]);  // after timing stopped
}

}  // namespace

BENCHMARK_TEMPLATE(replay_interlock, false)
    ->Name("idempotency_replay/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(replay_interlock, true)
    ->Name("idempotency_replay/interlock_pooled")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(replay_baseline, global_map)
    ->Name("idempotency_replay/global_map")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(replay_baseline, sharded_map_64)
    ->Name("idempotency_replay/sharded_map_64")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(first_run_interlock, false)
    ->Name("idempotency_first_run/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(first_run_interlock, true)
    ->Name("idempotency_first_run/interlock_pooled")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(first_run_baseline, global_map)
    ->Name("idempotency_first_run/global_map")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK_TEMPLATE(first_run_baseline, sharded_map_64)
    ->Name("idempotency_first_run/sharded_map_64")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
