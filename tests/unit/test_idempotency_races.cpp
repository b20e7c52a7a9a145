// idempotency_guard and unique_claims under concurrent churn: lock-free replays and
// joins racing with capacity eviction, expiry, forget, purge_expired and failing
// operations; claims racing with releases by their owner and by strangers. Run under
// the tsan and asan presets, a replay that reached a record after it was freed, or a
// result that outlived its storage, is reported there; everywhere, the counts below
// fail when an operation runs twice at once, a caller receives another key's result,
// or a claim has two holders.
#include <interlock/idempotency_guard.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int key_count = 48;
constexpr int worker_count = 4;
constexpr int calls_per_worker = 6000;

struct stored_result {
  int key_id = -1;
  std::uint64_t execution = 0;
  std::string payload;  // on the heap: reading it after a free is an ASan error
};

std::string key_name(int k) { return "order:" + std::to_string(k); }
std::string request_of(int k) { return "amount=" + std::to_string(100 + k); }
std::string payload_of(int k) { return std::string(40, static_cast<char>('a' + k % 26)); }

/// A small deterministic generator per thread (no shared state, no locks).
struct lcg {
  std::uint64_t state;
  int next(int bound) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((state >> 33) % static_cast<std::uint64_t>(bound));
  }
};

/// What the worker threads saw; asserted on the main thread after they joined.
struct observations {
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> thrown{0};
  std::atomic<std::uint64_t> overlapping_runs{0};
  std::atomic<std::uint64_t> wrong_results{0};
  std::atomic<std::uint64_t> unexpected_status{0};
  std::atomic<std::uint64_t> op_runs{0};
  std::array<std::atomic<int>, key_count> running{};
};

bool holds_result_of(const std::shared_ptr<const stored_result>& r, int k) {
  return r != nullptr && r->key_id == k && r->payload == payload_of(k);
}

}  // namespace

TEST_CASE("replays and joins race with eviction, expiry, forget, purge and failures",
          "[idempotency][threads]") {
  std::atomic<std::int64_t> fake_ns{0};
  interlock::idempotency_options options;
  options.capacity = 16;  // 4 per shard: most completions evict
  options.shards = 4;
  options.time_to_live = std::chrono::nanoseconds(400);
  options.pooled_records = GENERATE(false, true);  // records from the heap, then a pool
  INFO("pooled_records: " << options.pooled_records);
  using guard_type = interlock::idempotency_guard<std::string, stored_result>;
  guard_type guard(options, [&fake_ns] {
    return guard_type::time_point(std::chrono::nanoseconds(fake_ns.load()));
  });

  observations seen;
  std::atomic<bool> workers_done{false};
  std::latch start(worker_count + 1);

  auto worker = [&](int id) {
    lcg random{static_cast<std::uint64_t>(id) * 7919 + 1};
    std::vector<std::pair<int, std::shared_ptr<const stored_result>>> kept;  // outlive records
    start.arrive_and_wait();
    for (int i = 0; i < calls_per_worker; ++i) {
      const int k = random.next(key_count);
      const bool fail = random.next(9) == 0;
      seen.calls.fetch_add(1, std::memory_order_relaxed);
      try {
        auto out = guard.run(key_name(k), request_of(k), [&]() -> stored_result {
          if (seen.running[k].fetch_add(1) != 0) seen.overlapping_runs.fetch_add(1);
          const std::uint64_t run = seen.op_runs.fetch_add(1) + 1;
          std::this_thread::yield();  // let duplicates arrive while it runs
          seen.running[k].fetch_sub(1);
          if (fail) throw std::runtime_error("declined");
          return stored_result{k, run, payload_of(k)};
        });
        using interlock::run_status;
        if (out.status != run_status::executed && out.status != run_status::joined &&
            out.status != run_status::replayed) {
          seen.unexpected_status.fetch_add(1);
        } else if (!holds_result_of(out.result, k)) {
          seen.wrong_results.fetch_add(1);
        } else if (i % 64 == 0) {  // keep some results far longer than their records
          if (kept.size() < 16) {
            kept.emplace_back(k, std::move(out.result));
          } else {
            kept[static_cast<std::size_t>(i / 64) % kept.size()] = {k, std::move(out.result)};
          }
        }
        if (!kept.empty()) {  // a kept result stays readable after its record is gone
          const auto& [kept_key, kept_result] = kept[static_cast<std::size_t>(i) % kept.size()];
          if (!holds_result_of(kept_result, kept_key)) seen.wrong_results.fetch_add(1);
        }
      } catch (const std::runtime_error&) {
        seen.thrown.fetch_add(1, std::memory_order_relaxed);
      }
    }
    for (const auto& [k, result] : kept) {
      if (!holds_result_of(result, k)) seen.wrong_results.fetch_add(1);
    }
  };

  std::vector<std::thread> threads;
  for (int id = 0; id < worker_count; ++id) threads.emplace_back(worker, id);
  std::size_t forgotten = 0;
  std::size_t purged = 0;
  std::thread churn([&] {
    lcg random{12345};
    start.arrive_and_wait();
    // At least 200 rounds (the clock then passes the time to live many times over), so
    // expirations happen even when the workers finish before this thread ran much.
    for (int round = 0; !workers_done.load() || round < 200; ++round) {
      if (guard.forget(key_name(random.next(key_count)))) ++forgotten;
      purged += guard.purge_expired();
      fake_ns.fetch_add(random.next(60));  // records expire as the clock moves on
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  workers_done.store(true);
  churn.join();

  const auto stats = guard.stats();
  CHECK(seen.overlapping_runs.load() == 0);  // never two executions of one key at once
  CHECK(seen.wrong_results.load() == 0);     // every result is its own key's, still alive
  CHECK(seen.unexpected_status.load() == 0);
  CHECK(stats.mismatches == 0);
  CHECK(stats.in_progress_rejections == 0);
  // Every call is counted exactly once: executed, joined, replayed, or the failure it ran.
  CHECK(stats.executed + stats.joined + stats.replayed + stats.failures == seen.calls.load());
  CHECK(stats.executed + stats.failures == seen.op_runs.load());
  // The churn did happen: evictions, expirations and executions beyond one per key.
  CHECK(stats.evictions > 0);
  CHECK(stats.expirations + purged > 0);
  CHECK(stats.executed > static_cast<std::uint64_t>(key_count));
  CHECK(stats.entries <= options.capacity);  // nothing in progress any more
  INFO("forgotten " << forgotten << ", purged " << purged << ", thrown " << seen.thrown.load());
  CHECK(seen.thrown.load() >= stats.failures);  // each failure reached at least its executor
}

TEST_CASE("claims racing with releases by their owner and by strangers have one holder",
          "[claims][threads]") {
  constexpr int claim_keys = 16;
  constexpr int claimers = 4;
  constexpr int stranger = 999;
  interlock::unique_claims<std::string, int> claims;

  std::array<std::atomic<int>, claim_keys> holder{};  // 1 + the claimer's id, or 0
  std::atomic<std::uint64_t> double_holders{0};
  std::atomic<std::uint64_t> failed_own_releases{0};
  std::atomic<std::uint64_t> granted{0};
  std::atomic<std::uint64_t> stranger_releases{0};
  std::atomic<std::uint64_t> foreign_owners_seen{0};
  std::atomic<bool> claimers_done{false};
  std::latch start(claimers + 1);

  auto claimer = [&](int id) {
    lcg random{static_cast<std::uint64_t>(id) + 77};
    start.arrive_and_wait();
    for (int i = 0; i < 4000; ++i) {
      const int k = random.next(claim_keys);
      if (!claims.try_claim("nullifier:" + std::to_string(k), id)) continue;
      granted.fetch_add(1);
      if (holder[k].exchange(id + 1) != 0) double_holders.fetch_add(1);
      std::this_thread::yield();
      holder[k].store(0);  // before releasing: the next holder may come at once
      if (!claims.release("nullifier:" + std::to_string(k), id)) failed_own_releases.fetch_add(1);
    }
  };
  std::vector<std::thread> threads;
  for (int id = 0; id < claimers; ++id) threads.emplace_back(claimer, id);
  std::thread stranger_thread([&] {
    lcg random{5};
    start.arrive_and_wait();
    while (!claimers_done.load()) {
      const std::string key = "nullifier:" + std::to_string(random.next(claim_keys));
      if (claims.release(key, stranger)) stranger_releases.fetch_add(1);
      if (const auto owner = claims.owner_of(key); owner && (*owner < 0 || *owner >= claimers)) {
        foreign_owners_seen.fetch_add(1);
      }
    }
  });
  for (auto& t : threads) t.join();
  claimers_done.store(true);
  stranger_thread.join();

  CHECK(double_holders.load() == 0);
  CHECK(failed_own_releases.load() == 0);  // no one else released a claimer's claim
  CHECK(stranger_releases.load() == 0);
  CHECK(foreign_owners_seen.load() == 0);
  CHECK(granted.load() > 0);
  const auto stats = claims.stats();
  CHECK(stats.granted == granted.load());
  CHECK(stats.released == granted.load());
  CHECK(stats.entries == 0);
}

TEST_CASE("with failure_policy::store every concurrent caller receives the one failure",
          "[idempotency][threads]") {
  constexpr int callers = 8;
  interlock::idempotency_options options;
  options.on_failure = interlock::failure_policy::store;
  interlock::idempotency_guard<std::string, int> guard(options);
  std::atomic<int> runs{0};
  std::atomic<int> received_failure{0};
  std::atomic<int> other_outcomes{0};
  std::latch start(callers);
  std::vector<std::thread> threads;
  for (int i = 0; i < callers; ++i) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      try {
        (void)guard.run("charge:7", "amount=10", [&]() -> int {
          runs.fetch_add(1);
          std::this_thread::yield();  // duplicates arrive while it runs, or after: both count
          throw std::runtime_error("card declined");
        });
        other_outcomes.fetch_add(1);
      } catch (const std::runtime_error& e) {
        if (std::string(e.what()) == "card declined") received_failure.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  // Joined while it ran, or replayed the stored failure after: the same exception.
  CHECK(runs.load() == 1);
  CHECK(received_failure.load() == callers);
  CHECK(other_outcomes.load() == 0);
  const auto stats = guard.stats();
  CHECK(stats.failures == 1);
  CHECK(stats.executed == 0);
  CHECK(stats.joined + stats.replayed == callers - 1);
  CHECK(stats.entries == 1);  // the stored failure
}
