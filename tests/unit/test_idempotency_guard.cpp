// idempotency_guard and unique_claims: racing duplicates run the operation exactly once
// and share one result; retries replay; mismatches run nothing; failures reach every
// caller; expiry (fake clock), eviction, bounded waits, forget, stats; one winner per
// claimed nullifier.
#include <interlock/idempotency_guard.hpp>

#include <catch2/catch.hpp>

#include "support/bounded_thread_group.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <vector>

namespace {

using namespace std::chrono_literals;
using interlock::idempotency_guard;
using interlock::idempotency_options;
using interlock::run_status;
using interlock::unique_claims;

#if INTERLOCK_TSAN || defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

/// A clock that moves only when the test advances it: expiry without sleeping.
struct fake_clock {
  std::atomic<std::int64_t> nanoseconds{1'000'000'000};

  void advance(std::chrono::nanoseconds by) { nanoseconds.fetch_add(by.count()); }

  std::function<std::chrono::steady_clock::time_point()> now() {
    return [this] {
      return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(nanoseconds.load()));
    };
  }
};

/// Starts `count` threads together (a latch) and joins them. A thread still running
/// after a generous limit (a lost wake-up: run has no deadline) aborts the test binary
/// with a message, so the test fails at once instead of hanging until ctest's timeout;
/// the threads use this frame, so none may be left running past it.
template <class Body>
void run_threads(int count, Body body) {
  std::latch start(count);
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(count));
  for (int t = 0; t < count; ++t) {
    threads.emplace_back([&start, &body, &finished, t] {
      start.arrive_and_wait();
      body(t);
      finished.fetch_add(1);
    });
  }
  const auto limit = std::chrono::steady_clock::now() + (sanitized ? 300s : 60s);
  while (finished.load() < count) {
    if (std::chrono::steady_clock::now() > limit) {
      std::fprintf(stderr, "run_threads: %d of %d threads still running after the limit\n",
                   count - finished.load(), count);
      std::abort();
    }
    std::this_thread::sleep_for(1ms);
  }
  for (auto& thread : threads) thread.join();
}

/// Holds one key in progress on another thread until release() (or a generous
/// safety deadline, so a wrong implementation fails the test instead of hanging it).
class held_call {
 public:
  template <class Guard>
  held_call(Guard& guard, std::string key, std::string request)
      : thread_([this, &guard, key = std::move(key), request = std::move(request)] {
          auto out = guard.run(key, request, [this] {
            started_.store(true);
            const auto give_up = std::chrono::steady_clock::now() + 30s;
            while (!released_.load() && std::chrono::steady_clock::now() < give_up) {
              std::this_thread::sleep_for(1ms);
            }
            return typename Guard::result_type{};
          });
          executed_.store(out.status == run_status::executed);
        }) {
    while (!started_.load()) std::this_thread::yield();
  }
  held_call(const held_call&) = delete;
  held_call& operator=(const held_call&) = delete;
  ~held_call() { finish(); }

  /// Lets the held call complete and joins it. Returns whether it executed.
  bool finish() {
    released_.store(true);
    if (thread_.joinable()) thread_.join();
    return executed_.load();
  }

 private:
  std::atomic<bool> started_{false};
  std::atomic<bool> released_{false};
  std::atomic<bool> executed_{false};
  std::thread thread_;
};

/// Threads that a lost wake-up cannot hang (see tests/support).
template <class State>
using thread_group = interlock_test::bounded_thread_group<State>;

}  // namespace

TEST_CASE("idempotency_guard: 16 concurrent duplicates run the operation once and share one result",
          "[idempotency_guard][stress]") {
  constexpr int threads = 16;
  idempotency_guard<std::string, std::string> guard;
  std::atomic<int> runs{0};
  std::atomic<int> arrived{0};
  std::atomic<int> executed{0};
  std::atomic<int> joined{0};
  std::atomic<int> replayed{0};
  std::atomic<int> other{0};
  std::vector<std::shared_ptr<const std::string>> seen(threads);  // one slot per thread

  run_threads(threads, [&](int t) {
    arrived.fetch_add(1);
    auto out = guard.run("payment:42", std::string("charge 10 EUR to card 4242"), [&] {
      runs.fetch_add(1);
      // Stay in flight until every caller has arrived, and a little longer, so that
      // most of them find the call in progress (a caller descheduled longer finds it
      // completed and replays it: the same result, still without a second run).
      while (arrived.load() < threads) std::this_thread::yield();
      std::this_thread::sleep_for(sanitized ? 200ms : 20ms);
      return "receipt from thread " + std::to_string(t);
    });
    switch (out.status) {
      case run_status::executed:
        executed.fetch_add(1);
        break;
      case run_status::joined:
        joined.fetch_add(1);
        break;
      case run_status::replayed:
        replayed.fetch_add(1);
        break;
      default:
        other.fetch_add(1);
        break;
    }
    seen[static_cast<std::size_t>(t)] = out.result;
  });

  INFO(joined.load() << " joined, " << replayed.load() << " replayed");
  CHECK(runs.load() == 1);
  CHECK(executed.load() == 1);
  CHECK(joined.load() + replayed.load() == threads - 1);
  CHECK(other.load() == 0);
  REQUIRE(seen[0] != nullptr);
  for (const auto& result : seen) CHECK(result.get() == seen[0].get());  // one shared object
  const auto stats = guard.stats();
  CHECK(stats.executed == 1);
  CHECK(stats.joined == static_cast<std::uint64_t>(joined.load()));
  CHECK(stats.replayed == static_cast<std::uint64_t>(replayed.load()));
  CHECK(stats.entries == 1);
  auto later = guard.run("payment:42", std::string("charge 10 EUR to card 4242"),
                         [&] { return std::string("must not run"); });
  CHECK(later.status == run_status::replayed);
  CHECK(later.result.get() == seen[0].get());
  CHECK(runs.load() == 1);
}

TEST_CASE("idempotency_guard: 8 threads retrying 10,000 random keys run each operation once",
          "[idempotency_guard][stress]") {
  constexpr int threads = 8;
  constexpr int passes = 2;
  constexpr std::size_t key_count = 10000;  // about a second under TSan

  std::vector<std::string> keys;
  {
    std::mt19937_64 random(2024);
    std::unordered_set<std::string> unique;
    while (keys.size() < key_count) {
      std::string key = "order:" + std::to_string(random() % 1'000'000'000'000ULL);
      if (unique.insert(key).second) keys.push_back(std::move(key));
    }
  }

  idempotency_options options;
  options.pooled_records = GENERATE(false, true);  // records from the heap, then a pool
  INFO("pooled_records: " << options.pooled_records);
  idempotency_guard<std::string, std::uint64_t> guard(options);
  std::vector<std::atomic<int>> runs(key_count);
  std::vector<std::atomic<std::uint64_t>> executor(key_count);  // thread + 1 that ran it
  std::vector<std::vector<std::uint64_t>> seen(threads, std::vector<std::uint64_t>(key_count, 0));
  std::atomic<std::uint64_t> without_result{0};
  std::atomic<std::uint64_t> changed_between_passes{0};
  std::atomic<std::uint64_t> executed{0};
  std::atomic<std::uint64_t> joined_or_replayed{0};

  run_threads(threads, [&](int t) {
    std::vector<std::size_t> order(key_count);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::mt19937_64 random(static_cast<std::uint64_t>(t) + 1);
    auto& mine = seen[static_cast<std::size_t>(t)];
    for (int pass = 0; pass < passes; ++pass) {
      std::shuffle(order.begin(), order.end(), random);
      for (const std::size_t k : order) {
        const auto thread_tag = static_cast<std::uint64_t>(t) + 1;
        auto out = guard.run(keys[k], static_cast<std::uint64_t>(k), [&, k, thread_tag] {
          runs[k].fetch_add(1);
          executor[k].store(thread_tag);
          return (thread_tag << 32) | k;
        });
        if (out.status == run_status::executed) {
          executed.fetch_add(1);
        } else if (out.status == run_status::joined || out.status == run_status::replayed) {
          joined_or_replayed.fetch_add(1);
        }
        if (!out.has_result()) {
          without_result.fetch_add(1);
          continue;
        }
        if (mine[k] != 0 && mine[k] != *out) changed_between_passes.fetch_add(1);
        mine[k] = *out;
      }
    }
  });

  std::size_t not_once = 0;
  std::size_t wrong_result = 0;
  for (std::size_t k = 0; k < key_count; ++k) {
    if (runs[k].load() != 1) ++not_once;
    const std::uint64_t expected = (executor[k].load() << 32) | k;
    for (int t = 0; t < threads; ++t) {
      if (seen[static_cast<std::size_t>(t)][k] != expected) ++wrong_result;
    }
  }
  CHECK(not_once == 0);
  CHECK(wrong_result == 0);
  CHECK(without_result.load() == 0);
  CHECK(changed_between_passes.load() == 0);
  CHECK(executed.load() == key_count);
  CHECK(executed.load() + joined_or_replayed.load() == key_count * threads * passes);
  const auto stats = guard.stats();
  CHECK(stats.executed == key_count);
  CHECK(stats.joined + stats.replayed == key_count * (threads * passes - 1));
  CHECK(stats.mismatches == 0);
  CHECK(stats.entries == key_count);
  CHECK(guard.size() == key_count);
}

TEST_CASE("idempotency_guard: a different request under the same key is a mismatch",
          "[idempotency_guard]") {
  idempotency_guard<std::string, int> guard;
  int runs = 0;
  auto op = [&runs] { return ++runs; };

  auto first = guard.run(std::string("pay:7"), std::string("amount=10"), op);
  CHECK(first.status == run_status::executed);
  REQUIRE(first.has_result());
  CHECK(*first == 1);

  auto retry = guard.run(std::string("pay:7"), std::string("amount=10"), op);
  CHECK(retry.status == run_status::replayed);
  CHECK(retry.result.get() == first.result.get());

  auto tampered = guard.run(std::string("pay:7"), std::string("amount=99"), op);
  CHECK(tampered.status == run_status::mismatch);
  CHECK_FALSE(tampered.has_result());
  CHECK(runs == 1);

  SECTION("a mismatch against a call in progress does not wait and runs nothing") {
    held_call held(guard, "pay:8", "amount=10");
    auto other = guard.run(std::string("pay:8"), std::string("amount=11"), op);
    CHECK(other.status == run_status::mismatch);
    CHECK(held.finish());
    CHECK(runs == 1);
    CHECK(guard.stats().mismatches == 2);
  }

  SECTION("a digest passed as the request is the fingerprint itself") {
    // content_digest(request) is what run computes for a non-digest request, so the
    // digest of the same request replays and any other digest is a mismatch.
    const interlock::digest same = interlock::content_digest(std::string("amount=10"));
    auto by_digest = guard.run(std::string("pay:7"), same, op);
    CHECK(by_digest.status == run_status::replayed);
    CHECK(by_digest.result.get() == first.result.get());

    // A digest is not hashed again: content_digest(d) != d, so using one where the
    // other was stored mismatches.
    const interlock::digest d = interlock::sha256_digest("refund order 12");
    auto stored = guard.run(std::string("refund:12"), d, op);
    CHECK(stored.status == run_status::executed);
    CHECK(guard.run(std::string("refund:12"), d, op).status == run_status::replayed);
    CHECK(guard.run(std::string("refund:12"), interlock::content_digest(d), op).status ==
          run_status::mismatch);
    CHECK(runs == 2);
    CHECK(guard.stats().mismatches == 2);
  }

  SECTION("string_view and const char* keys find std::string keys") {
    const std::string_view view_key = "pay:7";
    const char* pointer_key = "pay:7";
    CHECK(guard.run(view_key, std::string("amount=10"), op).status == run_status::replayed);
    CHECK(guard.run(pointer_key, std::string("amount=10"), op).status == run_status::replayed);
    CHECK(guard.run("pay:7", std::string("amount=10"), op).status == run_status::replayed);
    CHECK(guard.run(view_key, std::string("amount=12"), op).status == run_status::mismatch);
    auto fresh = guard.run(std::string_view("pay:9"), std::string("amount=10"), op);
    CHECK(fresh.status == run_status::executed);
    CHECK(guard.run(std::string("pay:9"), std::string("amount=10"), op).status ==
          run_status::replayed);
    CHECK(runs == 2);
    CHECK(guard.forget(std::string_view("pay:9")));
    CHECK(guard.size() == 1);
  }
}

TEST_CASE(
    "idempotency_guard: a throwing operation reaches every caller; by default a retry runs it "
    "again",
    "[idempotency_guard]") {
  idempotency_guard<std::string, int> guard;

  SECTION("the executor and every joined waiter get the same exception") {
    // The failure is forgotten (failure_policy::forget) as soon as it is published, so
    // a caller that arrives after that (descheduled before it reached run) runs the
    // operation again, and fails again. Whatever the interleaving: every caller gets
    // the exception, each either ran the operation or joined a run, and a caller that
    // joined got the very exception object of a run (one exception_ptr, no copy).
    // The workers only keep what they caught; it is inspected here after the join (a
    // worker that read the exception could race, for ThreadSanitizer, with its
    // destruction on another thread, ordered only by libstdc++'s uninstrumented
    // reference count).
    constexpr int threads = 4;
    std::atomic<int> runs{0};
    std::atomic<int> arrived{0};
    std::atomic<int> returned{0};
    std::vector<std::exception_ptr> thrown(threads);  // one slot per thread
    std::vector<char> ran(threads, 0);                // one slot per thread
    run_threads(threads, [&](int t) {
      arrived.fetch_add(1);
      try {
        (void)guard.run(std::string("charge:1"), std::string("10 EUR"), [&]() -> int {
          runs.fetch_add(1);
          ran[static_cast<std::size_t>(t)] = 1;
          while (arrived.load() < threads) std::this_thread::yield();
          std::this_thread::sleep_for(sanitized ? 200ms : 20ms);
          throw std::runtime_error("card declined");
        });
        returned.fetch_add(1);
      } catch (...) {
        thrown[static_cast<std::size_t>(t)] = std::current_exception();
      }
    });
    const int ran_count = static_cast<int>(std::count(ran.begin(), ran.end(), 1));
    INFO(ran_count << " of " << threads << " callers ran the operation");
    CHECK(runs.load() == ran_count);
    CHECK(ran_count >= 1);
    CHECK(returned.load() == 0);
    int same_message = 0;
    for (const auto& caught : thrown) {
      try {
        if (caught) std::rethrow_exception(caught);
      } catch (const std::runtime_error& e) {
        if (std::string_view(e.what()) == "card declined") ++same_message;
      } catch (...) {
      }
    }
    CHECK(same_message == threads);
    // Every caller that did not run the operation joined a run and got its very
    // exception object; each run threw its own (all still held here, so distinct).
    std::vector<std::exception_ptr> executors_exceptions;
    for (int t = 0; t < threads; ++t) {
      if (ran[static_cast<std::size_t>(t)] != 0) {
        executors_exceptions.push_back(thrown[static_cast<std::size_t>(t)]);
      }
    }
    for (std::size_t i = 0; i < executors_exceptions.size(); ++i) {
      for (std::size_t j = i + 1; j < executors_exceptions.size(); ++j) {
        CHECK(executors_exceptions[i] != executors_exceptions[j]);
      }
    }
    for (const auto& caught : thrown) {
      CHECK(std::find(executors_exceptions.begin(), executors_exceptions.end(), caught) !=
            executors_exceptions.end());
    }
    auto stats = guard.stats();
    CHECK(stats.failures == static_cast<std::uint64_t>(ran_count));
    CHECK(stats.executed == 0);
    CHECK(stats.replayed == 0);
    CHECK(stats.joined == static_cast<std::uint64_t>(threads - ran_count));
    CHECK(guard.size() == 0);  // failure_policy::forget stores nothing

    auto retry = guard.run(std::string("charge:1"), std::string("10 EUR"), [&] {
      runs.fetch_add(1);
      return 7;
    });
    CHECK(retry.status == run_status::executed);
    CHECK(*retry == 7);
    CHECK(runs.load() == ran_count + 1);
  }

  SECTION("a failure is not stored: the next call runs again") {
    int runs = 0;
    auto failing = [&runs]() -> int {
      ++runs;
      throw std::invalid_argument("bad card");
    };
    CHECK_THROWS_AS(guard.run(std::string("k"), 1, failing), std::invalid_argument);
    CHECK_THROWS_AS(guard.run(std::string("k"), 1, failing), std::invalid_argument);
    CHECK(runs == 2);
    CHECK(guard.size() == 0);
    CHECK(guard.stats().failures == 2);
    CHECK(guard.run(std::string("k"), 1, [] { return 3; }).status == run_status::executed);
  }
}

TEST_CASE("idempotency_guard: failure_policy::store replays the failure until it expires",
          "[idempotency_guard]") {
  fake_clock clock;
  idempotency_options options;
  options.on_failure = interlock::failure_policy::store;
  options.time_to_live = 1min;
  idempotency_guard<std::string, int> guard(options, clock.now());
  int runs = 0;
  auto failing = [&runs]() -> int {
    ++runs;
    throw std::runtime_error("insufficient funds");
  };

  CHECK_THROWS_WITH(guard.run(std::string("pay:1"), 5, failing), "insufficient funds");
  CHECK(guard.size() == 1);
  clock.advance(30s);
  CHECK_THROWS_WITH(guard.run(std::string("pay:1"), 5, [&runs] { return ++runs; }),
                    "insufficient funds");
  CHECK_THROWS_WITH(guard.run(std::string("pay:1"), 5, [&runs] { return ++runs; }),
                    "insufficient funds");
  CHECK(runs == 1);
  CHECK(guard.run(std::string("pay:1"), 6, failing).status == run_status::mismatch);
  auto stats = guard.stats();
  CHECK(stats.failures == 1);
  CHECK(stats.replayed == 2);
  CHECK(stats.executed == 0);
  CHECK(stats.mismatches == 1);

  clock.advance(30s);  // the stored failure is now exactly time_to_live old: expired
  auto after = guard.run(std::string("pay:1"), 5, [&runs] { return ++runs; });
  CHECK(after.status == run_status::executed);
  CHECK(*after == 2);
  CHECK(guard.stats().expirations == 1);
}

TEST_CASE("idempotency_guard: records expire after time_to_live (fake clock)",
          "[idempotency_guard]") {
  fake_clock clock;
  idempotency_options options;
  options.time_to_live = 10s;
  idempotency_guard<std::string, int> guard(options, clock.now());
  int runs = 0;
  auto op = [&runs] { return ++runs; };

  CHECK(guard.run(std::string("a"), 0, op).status == run_status::executed);
  clock.advance(9s);
  auto replay = guard.run(std::string("a"), 0, op);
  CHECK(replay.status == run_status::replayed);
  CHECK(*replay == 1);
  clock.advance(1s);
  auto again = guard.run(std::string("a"), 0, op);
  CHECK(again.status == run_status::executed);
  CHECK(*again == 2);
  CHECK(guard.stats().expirations == 1);
  CHECK(guard.size() == 1);

  // An expired record is also not a mismatch any more: the new request just runs.
  clock.advance(10s);
  CHECK(guard.run(std::string("a"), 1, op).status == run_status::executed);
  CHECK(guard.stats().expirations == 2);

  // purge_expired removes exactly the expired records.
  for (int i = 0; i < 5; ++i) (void)guard.run("old:" + std::to_string(i), 0, op);
  clock.advance(5s);
  for (int i = 0; i < 3; ++i) (void)guard.run("new:" + std::to_string(i), 0, op);
  CHECK(guard.size() == 9);  // "a", 5 old, 3 new
  clock.advance(5s);         // "a" and the old ones are 10 s old now, the new ones 5 s
  CHECK(guard.purge_expired() == 6);
  CHECK(guard.size() == 3);
  CHECK(guard.stats().expirations == 8);
  CHECK(guard.run(std::string("new:1"), 0, op).status == run_status::replayed);
  CHECK(guard.run(std::string("old:1"), 0, op).status == run_status::executed);
  CHECK(guard.stats().entries == 4);
}

TEST_CASE("idempotency_guard: capacity evicts the oldest completed records, never one in progress",
          "[idempotency_guard]") {
  idempotency_options options;
  options.capacity = 4;
  options.shards = 1;  // one shard: the capacity and the eviction order are exact
  idempotency_guard<std::string, int> guard(options);
  int runs = 0;
  auto op = [&runs] { return ++runs; };

  held_call held(guard, "in-flight", "r");  // the oldest record of all, in progress
  for (int i = 0; i < 10; ++i) {
    CHECK(guard.run("k" + std::to_string(i), 0, op).status == run_status::executed);
  }
  CHECK(guard.size() == 5);  // 4 completed + 1 in progress
  CHECK(guard.stats().evictions == 6);
  for (int i = 6; i < 10; ++i) {
    CHECK(guard.run("k" + std::to_string(i), 0, op).status == run_status::replayed);
  }
  for (int i = 0; i < 6; ++i) CHECK_FALSE(guard.forget("k" + std::to_string(i)));
  CHECK(runs == 10);

  CHECK(held.finish());  // it survived the evictions and completed as the executor
  CHECK(guard.run(std::string("in-flight"), std::string("r"), [] { return -1; }).status ==
        run_status::replayed);
  CHECK(guard.size() == 4);  // its completion evicted the oldest completed, "k6"
  CHECK(guard.stats().evictions == 7);
  CHECK_FALSE(guard.forget(std::string("k6")));
  CHECK(guard.run(std::string("k7"), 0, op).status == run_status::replayed);
}

TEST_CASE("idempotency_guard: bounded waits, reject policy and forget", "[idempotency_guard]") {
  int runs = 0;
  auto op = [&runs] { return ++runs; };

  SECTION("run_for returns in_progress when the call in flight does not finish in time") {
    idempotency_guard<std::string, int> guard;
    held_call held(guard, "slow", "r");
    auto out = guard.run_for(std::string("slow"), std::string("r"), 20ms, op);
    CHECK(out.status == run_status::in_progress);
    CHECK_FALSE(out.has_result());
    auto until = guard.run_until(std::string("slow"), std::string("r"),
                                 std::chrono::steady_clock::now() + 1ms, op);
    CHECK(until.status == run_status::in_progress);
    CHECK(runs == 0);
    CHECK(guard.stats().in_progress_rejections == 2);
    CHECK_FALSE(guard.forget(std::string("slow")));  // never dropped while in progress
    CHECK(held.finish());
    auto done = guard.run_for(std::string("slow"), std::string("r"), 20ms, op);
    CHECK(done.status == run_status::replayed);
    CHECK(runs == 0);
  }

  SECTION("run_until takes a deadline on any clock, and max() of any duration waits") {
    // It used to take only a steady_clock::time_point: a system_clock deadline did not
    // compile, and time_point<steady_clock, hours>::max() overflowed when converted to
    // nanoseconds and gave up at once.
    idempotency_guard<std::string, int> guard;
    held_call held(guard, "slow", "r");
    auto wall = guard.run_until(std::string("slow"), std::string("r"),
                                std::chrono::system_clock::now() + 1ms, op);
    CHECK(wall.status == run_status::in_progress);
    std::atomic<bool> waiting{false};
    std::thread releaser([&] {
      while (!waiting.load()) std::this_thread::yield();
      std::this_thread::sleep_for(50ms);  // the duplicate below is asleep by now
      CHECK(held.finish());
    });
    waiting.store(true);
    const auto forever =
        std::chrono::time_point<std::chrono::steady_clock, std::chrono::hours>::max();
    auto joined = guard.run_until(std::string("slow"), std::string("r"), forever, op);
    releaser.join();
    CHECK((joined.status == run_status::joined || joined.status == run_status::replayed));
    CHECK(runs == 0);
  }

  SECTION("run_for joins a call that finishes within the timeout") {
    // The call in flight finishes once the duplicate has returned, or after a grace
    // period that starts just before the duplicate calls run_for. A run_for that gave
    // up instead of waiting returns while the call is still in flight (in_progress).
    // A duplicate descheduled past the grace period finds the call completed and
    // replays it: the same result, also accepted.
    idempotency_guard<std::string, int> guard;
    std::atomic<bool> started{false};
    std::atomic<bool> calling{false};
    std::atomic<bool> returned{false};
    std::thread first([&] {
      (void)guard.run(std::string("quick"), std::string("r"), [&] {
        started.store(true);
        while (!calling.load()) std::this_thread::yield();
        const auto grace = std::chrono::steady_clock::now() + (sanitized ? 200ms : 20ms);
        while (!returned.load() && std::chrono::steady_clock::now() < grace) {
          std::this_thread::sleep_for(1ms);
        }
        return 42;
      });
    });
    while (!started.load()) std::this_thread::yield();
    calling.store(true);
    auto out = guard.run_for(std::string("quick"), std::string("r"), 60s, op);
    returned.store(true);
    first.join();
    INFO("status " << static_cast<int>(out.status));
    CHECK((out.status == run_status::joined || out.status == run_status::replayed));
    REQUIRE(out.has_result());
    CHECK(*out == 42);
    CHECK(runs == 0);
  }

  SECTION("concurrency_policy::reject answers in_progress at once") {
    idempotency_options options;
    options.on_concurrent = interlock::concurrency_policy::reject;
    idempotency_guard<std::string, int> guard(options);
    held_call held(guard, "busy", "r");
    // Without a deadline: a guard that waited here would only return when the held
    // call gives up, as joined.
    auto out = guard.run(std::string("busy"), std::string("r"), op);
    CHECK(out.status == run_status::in_progress);
    CHECK_FALSE(out.has_result());
    CHECK(runs == 0);
    CHECK(guard.stats().in_progress_rejections == 1);
    CHECK(guard.stats().joined == 0);
    CHECK(held.finish());
    CHECK(guard.run(std::string("busy"), std::string("r"), op).status == run_status::replayed);
  }

  SECTION("forget drops a completed record so the next call executes") {
    idempotency_guard<std::string, int> guard;
    CHECK(guard.run(std::string("k"), 1, op).status == run_status::executed);
    CHECK(guard.forget(std::string("k")));
    CHECK_FALSE(guard.forget(std::string("k")));
    CHECK_FALSE(guard.forget(std::string("never seen")));
    CHECK(guard.size() == 0);
    auto again = guard.run(std::string("k"), 2, op);  // not a mismatch any more
    CHECK(again.status == run_status::executed);
    CHECK(*again == 2);
  }
}

TEST_CASE("idempotency_guard: stats count what happened", "[idempotency_guard]") {
  fake_clock clock;
  idempotency_options options;
  options.time_to_live = 1s;
  options.capacity = 2;
  options.shards = 1;
  idempotency_guard<std::string, int> guard(options, clock.now());
  auto op = [] { return 1; };

  (void)guard.run(std::string("a"), 0, op);                                // executed
  (void)guard.run(std::string("a"), 0, op);                                // replayed
  (void)guard.run(std::string("a"), 0, op);                                // replayed
  (void)guard.run(std::string("a"), 9, op);                                // mismatch
  CHECK_THROWS(guard.run(std::string("b"), 0, []() -> int { throw 1; }));  // failure
  (void)guard.run(std::string("b"), 0, op);                                // executed
  (void)guard.run(std::string("c"), 0, op);                                // executed, evicts "a"
  {
    held_call held(guard, "d", "r");
    (void)guard.run_for(std::string("d"), std::string("r"), 1ms, op);  // rejection
    CHECK(held.finish());                                              // executed, evicts "b"
  }
  clock.advance(1s);
  CHECK(guard.purge_expired() == 2);  // "c", "d" expire

  const auto stats = guard.stats();
  CHECK(stats.executed == 4);
  CHECK(stats.joined == 0);
  CHECK(stats.replayed == 2);
  CHECK(stats.mismatches == 1);
  CHECK(stats.in_progress_rejections == 1);
  CHECK(stats.failures == 1);
  CHECK(stats.evictions == 2);
  CHECK(stats.expirations == 2);
  CHECK(stats.entries == 0);
}

TEST_CASE("idempotency_guard: entries stay bounded: expired records are purged",
          "[idempotency_guard]") {
  fake_clock clock;
  idempotency_options options;
  options.time_to_live = 100ms;
  idempotency_guard<std::string, std::string> guard(options, clock.now());
  const int keys = sanitized ? 5000 : 20000;
  const int per_tick = keys / 20;  // the clock moves 10 ms every per_tick calls: 200 ms in all
  for (int i = 0; i < keys; ++i) {
    (void)guard.run("session:" + std::to_string(i), i, [i] { return std::to_string(i); });
    if (i % per_tick == per_tick - 1) clock.advance(10ms);
  }
  // Each call purges its shard, so what is stored is about the last 100 ms of keys (half
  // of them), not every key ever seen.
  CHECK(guard.size() <= static_cast<std::size_t>(keys / 2 + keys / 20));
  CHECK(guard.stats().expirations >= static_cast<std::uint64_t>(keys / 2 - keys / 20));
  clock.advance(100ms);
  const std::uint64_t expired_by_calls = guard.stats().expirations;
  const std::size_t purged = guard.purge_expired();
  CHECK(guard.size() == 0);
  CHECK(guard.stats().entries == 0);
  CHECK(expired_by_calls + purged == static_cast<std::uint64_t>(keys));
  CHECK(guard.stats().expirations == static_cast<std::uint64_t>(keys));
  interlock::reclaim_retired();
}

TEST_CASE(
    "idempotency_guard: record memory is reused: it follows the records kept, not the keys seen",
    "[idempotency_guard]") {
  idempotency_options options;
  options.capacity = 1024;  // 16 per shard
  options.pooled_records = true;
  idempotency_guard<std::string, std::uint64_t> guard(options);
  const std::uint64_t keys = sanitized ? 20'000 : 100'000;
  for (std::uint64_t i = 0; i < keys; ++i) {
    (void)guard.run("order:" + std::to_string(i), i, [i] { return i; });
  }
  const auto stats = guard.stats();
  CHECK(stats.entries == 1024);
  // About 1,000 stored and up to a reclamation batch of retired records live at once,
  // a few dozen per shard: one run of each shard's pool holds them. Without reuse,
  // 100,000 records would take over 20 MB.
  INFO("record bytes: " << stats.record_bytes);
  CHECK(stats.record_bytes > 0);
  // The first chunk has a run for each of the 64 shards; a shard that needs a second run
  // takes one more chunk.
  using interlock::detail::record_pool;
  CHECK(stats.record_bytes <= record_pool::first_chunk_bytes(64) + record_pool::chunk_bytes);

  idempotency_guard<std::string, std::uint64_t> unpooled;  // the default: make_shared
  (void)unpooled.run(std::string("k"), 0, [] { return std::uint64_t{1}; });
  CHECK(unpooled.stats().record_bytes == 0);
  interlock::reclaim_retired();
}

namespace {
struct alignas(128) wide_result {
  std::uint64_t value = 0;
};
}  // namespace

TEST_CASE("idempotency_guard: a Result aligned beyond the record pool is stored aligned",
          "[idempotency_guard]") {
  idempotency_options options;
  options.pooled_records = true;
  idempotency_guard<std::string, wide_result> guard(options);
  auto op = [] { return wide_result{7}; };
  const auto first = guard.run(std::string("k"), 0, op);
  const auto again = guard.run(std::string("k"), 0, op);
  REQUIRE(again.status == run_status::replayed);
  CHECK(again.result == first.result);
  CHECK(reinterpret_cast<std::uintptr_t>(again.result.get()) % 128 == 0);
  CHECK(again->value == 7);
  CHECK(guard.stats().record_bytes == 0);  // operator new, not the pool
}

TEST_CASE("idempotency_guard: a Result larger than a pool block is stored whole",
          "[idempotency_guard]") {
  using large_result = std::array<std::uint8_t, 16 * 1024>;  // more than a pool run
  idempotency_options options;
  options.pooled_records = true;
  idempotency_guard<std::string, large_result> guard(options);
  auto op = [] {
    large_result r{};
    r.front() = 1;
    r.back() = 2;
    return r;
  };
  for (int i = 0; i < 3; ++i) (void)guard.run("k" + std::to_string(i), 0, op);
  const auto again = guard.run(std::string("k1"), 0, op);
  REQUIRE(again.status == run_status::replayed);
  CHECK(again->front() == 1);
  CHECK(again->back() == 2);
  CHECK(guard.stats().record_bytes == 0);  // operator new, not the pool
}

namespace {

/// A clock that counts milliseconds (an ordinary Clock: e.g. a coarse wall clock).
struct millisecond_clock {
  using rep = std::int64_t;
  using period = std::milli;
  using duration = std::chrono::milliseconds;
  using time_point = std::chrono::time_point<millisecond_clock>;
  static time_point now() noexcept { return time_point(duration(0)); }
};

}  // namespace

TEST_CASE("idempotency_guard: time_to_live works with a clock that ticks in milliseconds",
          "[idempotency_guard][clock]") {
  std::atomic<std::int64_t> ms{1000};
  idempotency_options options;
  options.time_to_live = 10s;
  idempotency_guard<std::string, int, interlock::key_hash<std::string>, std::equal_to<>,
                    millisecond_clock>
      guard(options,
            [&ms] { return millisecond_clock::time_point(std::chrono::milliseconds(ms.load())); });
  int runs = 0;
  auto op = [&runs] { return ++runs; };
  CHECK(guard.run(std::string("a"), 0, op).status == run_status::executed);
  ms += 9999;
  CHECK(guard.run(std::string("a"), 0, op).status == run_status::replayed);
  ms += 1;
  CHECK(guard.run(std::string("a"), 0, op).status == run_status::executed);
  CHECK(runs == 2);
}

TEST_CASE("unique_claims: 8 threads racing for 1,000 nullifiers: one winner each",
          "[unique_claims][stress]") {
  constexpr int threads = 8;
  constexpr std::size_t nullifiers = 1000;
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < nullifiers; ++i)
    keys.push_back("nullifier:" + std::to_string(i * 7919));

  unique_claims<std::string> claims;
  std::vector<std::atomic<int>> wins(nullifiers);
  std::vector<std::atomic<int>> winner(nullifiers);
  const int rounds = sanitized ? 1 : 3;
  std::atomic<int> false_claims{0};  // a refused key whose claim is not visible
  for (int round = 0; round < rounds; ++round) {
    if (round > 0) {
      for (const auto& key : keys) CHECK(claims.release(key));
    }
    for (auto& w : wins) w.store(0);
    run_threads(threads, [&](int t) {
      std::vector<std::size_t> order(nullifiers);
      std::iota(order.begin(), order.end(), std::size_t{0});
      std::shuffle(order.begin(), order.end(),
                   std::mt19937_64(static_cast<std::uint64_t>(t) * 31 + 7));
      for (const std::size_t i : order) {
        if (claims.try_claim(keys[i], "wallet-" + std::to_string(t))) {
          wins[i].fetch_add(1);
          winner[i].store(t);
        } else if (!claims.is_claimed(keys[i])) {
          false_claims.fetch_add(1);
        }
      }
    });
    std::size_t not_one = 0;
    std::size_t wrong_owner = 0;
    for (std::size_t i = 0; i < nullifiers; ++i) {
      if (wins[i].load() != 1) ++not_one;
      if (claims.owner_of(keys[i]) != "wallet-" + std::to_string(winner[i].load())) ++wrong_owner;
    }
    CHECK(not_one == 0);
    CHECK(wrong_owner == 0);
  }
  CHECK(false_claims.load() == 0);
  const auto stats = claims.stats();
  CHECK(stats.granted == nullifiers * static_cast<std::size_t>(rounds));
  CHECK(stats.refused == nullifiers * static_cast<std::size_t>(rounds) * (threads - 1));
  CHECK(stats.released == nullifiers * static_cast<std::size_t>(rounds - 1));
  CHECK(stats.entries == nullifiers);
}

TEST_CASE("unique_claims: owner, release, expiry and capacity", "[unique_claims]") {
  SECTION("owner_of and release") {
    unique_claims<std::string> claims;
    CHECK(claims.try_claim(std::string("note:1"), std::string("alice")));
    CHECK_FALSE(claims.try_claim(std::string("note:1"), std::string("bob")));
    CHECK(claims.is_claimed(std::string_view("note:1")));
    CHECK(claims.owner_of("note:1") == std::optional<std::string>("alice"));
    CHECK(claims.try_claim(std::string_view("note:2")));  // no owner
    CHECK(claims.is_claimed("note:2"));
    CHECK_FALSE(claims.owner_of("note:2").has_value());
    CHECK_FALSE(claims.owner_of("note:3").has_value());
    CHECK_FALSE(claims.is_claimed("note:3"));

    CHECK(claims.release(std::string("note:1")));
    CHECK_FALSE(claims.release(std::string("note:1")));
    CHECK_FALSE(claims.is_claimed("note:1"));
    CHECK_FALSE(claims.owner_of("note:1").has_value());
    CHECK(claims.try_claim(std::string("note:1"), std::string("bob")));
    CHECK(claims.owner_of("note:1") == std::optional<std::string>("bob"));
    const auto stats = claims.stats();
    CHECK(stats.granted == 3);
    CHECK(stats.refused == 1);
    CHECK(stats.released == 1);
    CHECK(stats.entries == 2);
  }

  SECTION("claims expire after time_to_live (fake clock)") {
    fake_clock clock;
    auto options = unique_claims<std::string>::default_options();
    options.time_to_live = 1min;
    unique_claims<std::string> claims(options, clock.now());
    CHECK(claims.try_claim(std::string("n"), std::string("first")));
    clock.advance(59s);
    CHECK_FALSE(claims.try_claim(std::string("n"), std::string("second")));
    CHECK(claims.owner_of("n") == std::optional<std::string>("first"));
    clock.advance(1s);
    CHECK_FALSE(claims.is_claimed("n"));
    CHECK_FALSE(claims.owner_of("n").has_value());
    CHECK(claims.try_claim(std::string("n"), std::string("second")));
    CHECK(claims.owner_of("n") == std::optional<std::string>("second"));
    CHECK(claims.stats().expirations == 1);
    for (int i = 0; i < 10; ++i) CHECK(claims.try_claim("m" + std::to_string(i)));
    clock.advance(1min);
    CHECK(claims.purge_expired() == 11);
    CHECK(claims.size() == 0);
    CHECK(claims.stats().expirations == 12);
  }

  SECTION("by default claims never expire") {
    fake_clock clock;
    unique_claims<std::string> claims(unique_claims<std::string>::default_options(), clock.now());
    CHECK(claims.try_claim(std::string("forever")));
    clock.advance(std::chrono::hours(24 * 365 * 100));
    CHECK_FALSE(claims.try_claim(std::string("forever")));
    CHECK(claims.purge_expired() == 0);
  }

  SECTION("options that set only a capacity or the shards keep claims forever too") {
    // unique_claims used to take idempotency_options, whose time to live is 24 h:
    // `claims({.capacity = N})` let the same nullifier be spent again a day later.
    fake_clock clock;
    unique_claims<std::string> bounded({.capacity = 1'000'000}, clock.now());
    unique_claims<std::string> sharded({.shards = 4}, clock.now());
    CHECK(bounded.try_claim(std::string("nullifier")));
    CHECK(sharded.try_claim(std::string("nullifier")));
    clock.advance(std::chrono::hours(25));
    CHECK_FALSE(bounded.try_claim(std::string("nullifier")));
    CHECK_FALSE(sharded.try_claim(std::string("nullifier")));
  }

  SECTION("capacity evicts the oldest claims") {
    auto options = unique_claims<std::string>::default_options();
    options.capacity = 3;
    options.shards = 1;
    unique_claims<std::string> claims(options);
    for (int i = 0; i < 5; ++i) CHECK(claims.try_claim("c" + std::to_string(i)));
    CHECK(claims.size() == 3);
    CHECK(claims.stats().evictions == 2);
    CHECK_FALSE(claims.is_claimed("c0"));
    CHECK_FALSE(claims.is_claimed("c1"));
    for (int i = 2; i < 5; ++i) CHECK_FALSE(claims.try_claim("c" + std::to_string(i)));
    CHECK(claims.try_claim(std::string("c0")));  // evicted, so claimable again
    CHECK_FALSE(claims.is_claimed("c2"));        // and that evicted the oldest left
  }
}

TEST_CASE("idempotency_guard: extreme timeouts and clocks saturate instead of overflowing",
          "[idempotency]") {
  // An injected clock that reads before its epoch: the expiry saturates, records replay.
  interlock::idempotency_guard<int, int> early(
      {}, [] { return std::chrono::steady_clock::time_point(-std::chrono::seconds(5)); });
  CHECK(early.run(1, 0, [] { return 7; }).status == interlock::run_status::executed);
  const auto replay = early.run(1, 0, [] { return 8; });
  CHECK(replay.status == interlock::run_status::replayed);
  CHECK(*replay == 7);

  // run_for with hours::max() waits for the call in flight (it used to overflow the
  // deadline and give up at once, returning in_progress). The call in flight is
  // released once the duplicate has returned, or after a grace period that starts
  // just before the duplicate calls run_for; a duplicate descheduled past it replays
  // the result instead, which is also accepted. The duplicate runs on its own thread:
  // a lost wake-up fails the test after a bound instead of hanging it.
  struct shared_state {
    interlock::idempotency_guard<int, int> guard;
    std::atomic<bool> started{false};
    std::atomic<bool> calling{false};
    std::atomic<bool> release{false};
    std::atomic<bool> returned{false};
    std::atomic<int> status{-1};
    std::atomic<int> value{0};
    std::atomic<int> finished{0};
  };
  thread_group<shared_state> group;
  auto& s = group.state();
  group.spawn([](shared_state& st) {
    (void)st.guard.run(1, 0, [&st] {
      st.started = true;
      while (!st.release.load()) std::this_thread::sleep_for(1ms);
      return 1;
    });
  });
  while (!s.started.load()) std::this_thread::yield();
  group.spawn([](shared_state& st) {
    st.calling = true;
    const auto joined = st.guard.run_for(1, 0, std::chrono::hours::max(), [] { return 2; });
    st.status = static_cast<int>(joined.status);
    if (joined.has_result()) st.value = *joined;
    st.returned = true;
  });
  while (!s.calling.load()) std::this_thread::yield();
  const auto grace = std::chrono::steady_clock::now() + (sanitized ? 500ms : 50ms);
  while (!s.returned.load() && std::chrono::steady_clock::now() < grace) {
    std::this_thread::sleep_for(1ms);
  }
  s.release = true;
  REQUIRE(group.finish_within(60s));
  INFO("status " << s.status.load());
  CHECK((s.status.load() == static_cast<int>(interlock::run_status::joined) ||
         s.status.load() == static_cast<int>(interlock::run_status::replayed)));
  CHECK(s.value.load() == 1);
}

namespace {

/// A result type that counts its live instances.
struct counted_result {
  static inline std::atomic<int> live{0};
  explicit counted_result(int v) : value(v) { ++live; }
  counted_result(const counted_result& other) : value(other.value) { ++live; }
  counted_result& operator=(const counted_result&) = delete;
  ~counted_result() { --live; }
  int value;
};

}  // namespace

TEST_CASE("idempotency_guard: a result outlives its record and the guard, destroyed exactly once",
          "[idempotency_guard]") {
  counted_result::live = 0;
  std::shared_ptr<const counted_result> kept;
  {
    idempotency_guard<std::string, counted_result> guard;
    const auto first = guard.run(std::string("k"), 1, [] { return counted_result(7); });
    REQUIRE(first.status == run_status::executed);
    kept = first.result;
    const auto replay = guard.run(std::string("k"), 1, [] { return counted_result(8); });
    CHECK(replay.status == run_status::replayed);
    CHECK(replay.result.get() == kept.get());  // the same object, not a copy

    CHECK(guard.forget(std::string("k")));
    interlock::reclaim_retired();  // frees the record's storage unless the result pins it
    CHECK(kept->value == 7);
    const auto again = guard.run(std::string("k"), 1, [] { return counted_result(9); });
    CHECK(again.status == run_status::executed);
    CHECK(again->value == 9);
    CHECK(kept->value == 7);
    CHECK(counted_result::live == 2);
  }  // the guard and every record are gone
  interlock::reclaim_retired();
  CHECK(kept->value == 7);
  CHECK(counted_result::live == 1);
  kept.reset();
  CHECK(counted_result::live == 0);
}

TEST_CASE("coarse_steady_clock: steady_clock's epoch and time_point, never ahead of it",
          "[idempotency_guard]") {
  using interlock::coarse_steady_clock;
  static_assert(
      std::is_same_v<coarse_steady_clock::time_point, std::chrono::steady_clock::time_point>);
  static_assert(coarse_steady_clock::is_steady);
  auto previous = coarse_steady_clock::now();
  bool monotonic = true;
  bool never_ahead = true;
  bool same_epoch = true;
  for (int i = 0; i < 1000; ++i) {
    const auto coarse = coarse_steady_clock::now();
    const auto precise = std::chrono::steady_clock::now();
    // 1 us of slack: kernels before about 6.15 could step the coarse clock a few ns
    // back, or ahead of the fine one, while NTP adjusts the tick's rate (fixed upstream
    // in "timekeeping: Fix possible inconsistencies in _COARSE clockids"). A clock on
    // the wrong base is off by far more.
    monotonic = monotonic && coarse >= previous - 1us;
    never_ahead = never_ahead && coarse <= precise + 1us;
    // A tick is 1-10 ms; a clock on another epoch (realtime, boot) is off by far more.
    same_epoch = same_epoch && precise - coarse < 60s;
    previous = coarse;
  }
  CHECK(monotonic);
  CHECK(never_ahead);
  CHECK(same_epoch);
}

namespace {

/// A clock ticking in 1/1024 s: converting nanoseconds to its ticks multiplies by 128.
struct binary_clock {
  using rep = std::int64_t;
  using period = std::ratio<1, 1024>;
  using duration = std::chrono::duration<rep, period>;
  using time_point = std::chrono::time_point<binary_clock>;
  static time_point now() noexcept { return time_point(duration(1000)); }
};

/// A clock ticking in whole seconds, moved by the test.
struct second_clock {
  using rep = std::int64_t;
  using period = std::ratio<1>;
  using duration = std::chrono::seconds;
  using time_point = std::chrono::time_point<second_clock>;
  static time_point now() noexcept { return time_point(duration(0)); }
};

/// A result whose operator& does not give its address.
struct no_address {
  int value = 0;
  [[maybe_unused]] const no_address* operator&() const { return nullptr; }  // never called
};

}  // namespace

TEST_CASE("retention: a time to live never overflows on a clock with an odd tick",
          "[idempotency_guard][unique_claims][clock]") {
  // nanoseconds::max() (unique_claims' "never expires") times 128 used to wrap to a
  // negative time to live: the claim expired as soon as it was made, and a second
  // caller won it too.
  unique_claims<std::string, std::string, interlock::key_hash<std::string>, std::equal_to<>,
                binary_clock>
      claims;
  CHECK(claims.try_claim(std::string("note"), std::string("alice")));
  CHECK_FALSE(claims.try_claim(std::string("note"), std::string("bob")));
  CHECK(claims.owner_of("note") == std::optional<std::string>("alice"));

  idempotency_options ten_years;
  ten_years.time_to_live = std::chrono::hours(24 * 365 * 10);
  idempotency_guard<int, int, interlock::key_hash<int>, std::equal_to<>, binary_clock> guard(
      ten_years);
  int runs = 0;
  auto op = [&runs] { return ++runs; };
  CHECK(guard.run(1, 0, op).status == run_status::executed);
  CHECK(guard.run(1, 0, op).status == run_status::replayed);
  CHECK(runs == 1);
}

TEST_CASE("retention: a time to live shorter than a clock tick is rounded up, not to zero",
          "[idempotency_guard][clock]") {
  std::atomic<std::int64_t> seconds{100};
  idempotency_options options;
  options.time_to_live = 500ms;  // half a tick of the clock below
  idempotency_guard<std::string, int, interlock::key_hash<std::string>, std::equal_to<>,
                    second_clock>
      guard(options,
            [&seconds] { return second_clock::time_point(std::chrono::seconds(seconds)); });
  int runs = 0;
  auto op = [&runs] { return ++runs; };
  CHECK(guard.run(std::string("a"), 0, op).status == run_status::executed);
  CHECK(guard.run(std::string("a"), 0, op).status == run_status::replayed);  // was executed
  seconds += 1;
  CHECK(guard.run(std::string("a"), 0, op).status == run_status::executed);
  CHECK(runs == 2);
}

TEST_CASE("unique_claims: release(key, owner) frees only the owner's live claim",
          "[unique_claims]") {
  fake_clock clock;
  interlock::claim_options options;
  options.time_to_live = 10s;
  unique_claims<std::string> claims(options, clock.now());
  CHECK(claims.try_claim(std::string("seat"), std::string("alice")));
  clock.advance(11s);  // alice's claim lapses
  CHECK(claims.try_claim(std::string("seat"), std::string("bob")));
  // Alice comes back late: she must not release bob's claim (release(key) used to).
  CHECK_FALSE(claims.release(std::string("seat"), std::string("alice")));
  CHECK(claims.owner_of("seat") == std::optional<std::string>("bob"));
  CHECK_FALSE(claims.try_claim(std::string("seat"), std::string("carol")));
  CHECK(claims.release(std::string("seat"), std::string("bob")));
  CHECK_FALSE(claims.is_claimed("seat"));
  CHECK(claims.stats().released == 1);
}

TEST_CASE("release and forget of an expired record report nothing released",
          "[idempotency_guard][unique_claims]") {
  // They used to return true, and count a release, for a record that had expired but
  // was not purged yet (is_claimed already said false).
  fake_clock clock;
  interlock::claim_options options;
  options.time_to_live = 10s;
  unique_claims<std::string> claims(options, clock.now());
  CHECK(claims.try_claim(std::string("n1")));
  clock.advance(11s);
  CHECK_FALSE(claims.is_claimed("n1"));
  CHECK_FALSE(claims.release(std::string("n1")));
  CHECK(claims.stats().released == 0);
  CHECK(claims.stats().expirations == 1);
  CHECK(claims.size() == 0);

  idempotency_options guard_options;
  guard_options.time_to_live = 10s;
  idempotency_guard<std::string, int> guard(guard_options, clock.now());
  CHECK(guard.run(std::string("k"), 0, [] { return 1; }).status == run_status::executed);
  clock.advance(11s);
  CHECK_FALSE(guard.forget(std::string("k")));
  CHECK(guard.stats().expirations == 1);
  CHECK(guard.stats().entries == 0);
}

TEST_CASE("idempotency_guard: a Result with an overloaded operator& is handed out intact",
          "[idempotency_guard]") {
  idempotency_guard<int, no_address> guard;
  const auto out = guard.run(1, 0, [] { return no_address{7}; });
  REQUIRE(out.result != nullptr);  // was null: &result called the overload
  CHECK(out.result->value == 7);
  const auto again = guard.run(1, 0, [] { return no_address{8}; });
  CHECK(again.status == run_status::replayed);
  CHECK(again.result.get() == out.result.get());
}

namespace {
struct unhashable_request {
  int amount;
};
}  // namespace

template <>
struct interlock::content_codec<unhashable_request> {
  template <interlock::byte_sink Sink>
  static void encode(const unhashable_request& r, Sink& sink) {
    interlock::encode_field(sink, r.amount);
    throw std::runtime_error("request cannot be encoded");
  }
};

TEST_CASE("a request whose fingerprint cannot be computed records nothing", "[idempotency]") {
  interlock::idempotency_guard<std::string, int> guard;
  int runs = 0;
  auto op = [&runs] { return ++runs; };
  CHECK_THROWS_AS(guard.run("pay:1", unhashable_request{10}, op), std::runtime_error);
  CHECK_THROWS_AS(guard.run_for("pay:1", unhashable_request{10}, 5ms, op), std::runtime_error);
  CHECK(runs == 0);
  CHECK(guard.size() == 0);
  const auto stats = guard.stats();
  CHECK(stats.executed + stats.joined + stats.replayed + stats.failures + stats.mismatches == 0);
  // The key is untouched: a request that hashes runs normally.
  const auto out = guard.run("pay:1", std::string("amount=10"), op);
  CHECK(out.status == interlock::run_status::executed);
  CHECK(*out.result == 1);
}

namespace {
/// A Result whose construction from an int throws for negative values: the operation
/// returned (its effect happened), but its value cannot be stored.
struct picky_result {
  explicit picky_result(int v) : value(v) {
    if (v < 0) throw std::invalid_argument("picky_result: negative");
  }
  int value;
};
}  // namespace

TEST_CASE("a result that cannot be stored after op ran is stored as a failure, not re-run",
          "[idempotency]") {
  interlock::idempotency_guard<std::string, picky_result> guard;  // failure_policy::forget
  int runs = 0;
  auto op = [&runs] {
    ++runs;  // the effect (a charge) happens here
    return -1;
  };
  CHECK_THROWS_AS(guard.run("pay:1", std::string("amount=10"), op), std::invalid_argument);
  // A retry gets the same failure instead of charging again.
  CHECK_THROWS_AS(guard.run("pay:1", std::string("amount=10"), op), std::invalid_argument);
  CHECK(runs == 1);
  // An exception from op itself is still forgotten: a retry runs again.
  auto failing = [&runs]() -> int {
    ++runs;
    throw std::runtime_error("declined");
  };
  CHECK_THROWS_AS(guard.run("pay:2", std::string("amount=10"), failing), std::runtime_error);
  CHECK_THROWS_AS(guard.run("pay:2", std::string("amount=10"), failing), std::runtime_error);
  CHECK(runs == 3);
}

namespace {
thread_local bool on_slow_completer = false;  // set by the thread whose completion stalls
}  // namespace

TEST_CASE("idempotency_guard: completion order is expiry order when completions race",
          "[idempotency]") {
  // Thread A reads the clock to complete "a" and stalls; meanwhile time moves on and
  // "b" completes. If A's clock read were outside the shard lock, "b" (later expiry)
  // would sit before "a" in the shard's order, and a purge, which stops at the first
  // unexpired record, would keep the expired "a".
  std::atomic<std::int64_t> ms{0};
  std::atomic<bool> stall_next{false};
  std::atomic<bool> stalled{false};
  std::atomic<bool> b_done{false};
  auto now = [&] {
    const std::chrono::steady_clock::time_point value{std::chrono::milliseconds(ms.load())};
    if (on_slow_completer && stall_next.exchange(false)) {
      stalled = true;
      // Bounded: where the read is under the lock, "b" cannot complete meanwhile.
      for (int i = 0; i < 200 && !b_done; ++i) std::this_thread::sleep_for(1ms);
    }
    return value;
  };
  interlock::idempotency_options options;
  options.shards = 1;
  options.time_to_live = 10ms;
  interlock::idempotency_guard<std::string, int> guard(options, now);
  std::thread a([&] {
    on_slow_completer = true;
    (void)guard.run("a", std::string("req"), [&] {
      stall_next = true;  // the next clock read on this thread completes "a"
      return 1;
    });
  });
  while (!stalled) std::this_thread::sleep_for(1ms);
  ms = 5;
  (void)guard.run("b", std::string("req"), [] { return 2; });
  b_done = true;
  a.join();
  ms = 10;  // "a" expires now (0 + 10), "b" at 15
  CHECK(guard.purge_expired() == 1);
  CHECK(guard.size() == 1);
  CHECK(guard.run("b", std::string("req"), [] { return 3; }).status ==
        interlock::run_status::replayed);
}

TEST_CASE("the default coarse clock never expires a record before its time to live",
          "[idempotency]") {
  // The coarse clock trails real time by up to a tick; counting the expiry from it
  // could end a record up to a tick early. Whenever a call finds the record expired
  // (and runs again), real time after the call must be past start + time to live.
  interlock::idempotency_options options;
  options.time_to_live = 20ms;
  interlock::idempotency_guard<std::string, int> guard(options);
  int early = 0;
  for (int trial = 0; trial < 10; ++trial) {
    const std::string key = "k" + std::to_string(trial);
    const auto start = std::chrono::steady_clock::now();
    REQUIRE(guard.run(key, std::string("req"), [] { return 1; }).status ==
            interlock::run_status::executed);
    for (;;) {
      const auto out = guard.run(key, std::string("req"), [] { return 2; });
      const auto after = std::chrono::steady_clock::now();
      if (out.status == interlock::run_status::executed) {
        if (after < start + options.time_to_live) ++early;
        break;
      }
      std::this_thread::sleep_for(100us);
    }
  }
  CHECK(early == 0);
}

TEST_CASE("capacity 0 keeps one record per shard, so a claim is still granted once",
          "[unique_claims]") {
  interlock::claim_options claim_retention;
  claim_retention.capacity = 0;
  claim_retention.shards = 1;
  interlock::unique_claims<std::string> claims(claim_retention);
  interlock::idempotency_options options;
  options.capacity = 0;
  options.shards = 1;
  CHECK(claims.try_claim("nullifier:1"));
  CHECK_FALSE(claims.try_claim("nullifier:1"));  // used to be evicted as it was granted
  interlock::idempotency_guard<std::string, int> guard(options);
  int runs = 0;
  auto op = [&runs] { return ++runs; };
  (void)guard.run("pay:1", std::string("req"), op);
  CHECK(guard.run("pay:1", std::string("req"), op).status == interlock::run_status::replayed);
  CHECK(runs == 1);
}

namespace {
/// A node of the shared hazard domain whose reclamation (standing in for a Result
/// destructor run by a later retire on this thread) calls `on_reclaim` once armed.
struct reclaim_probe : interlock::detail::retirable {
  static inline std::atomic<bool> armed{false};
  static inline std::atomic<int> freed{0};
  static inline std::function<void()> on_reclaim;
  reclaim_probe() {
    reclaim = [](interlock::detail::retirable* self) noexcept {
      freed.fetch_add(1);
      if (armed.exchange(false)) on_reclaim();
      delete static_cast<reclaim_probe*>(self);
    };
  }
};
}  // namespace

TEST_CASE("a new record's purged neighbours are reclaimed only after its waiters are woken",
          "[idempotency_guard]") {
  // Creating a record purges expired ones, and retiring them may free older nodes,
  // running user destructors. That used to happen after the new record was linked in
  // progress but before its operation ran: a destructor that waited on a thread
  // calling run with the same key deadlocked (here: that thread's run_for gives up
  // after 3 s with in_progress).
  fake_clock clock;
  idempotency_options options;
  options.time_to_live = 1s;
  options.shards = 1;
  idempotency_guard<std::string, int> guard(options, clock.now());
  (void)guard.run(std::string("x"), 0, [] { return 1; });
  clock.advance(2s);  // "x" expires: the next record created purges it

  // Retire probes until a scan has run: from then on every retire frees one of them.
  interlock::reclaim_retired();
  reclaim_probe::freed = 0;
  for (int i = 0; i < 1'000'000 && reclaim_probe::freed.load() == 0; ++i) {
    interlock::detail::hazard_domain::instance().retire(new reclaim_probe);
  }
  REQUIRE(reclaim_probe::freed.load() > 0);
  std::optional<run_status> duplicate;
  reclaim_probe::on_reclaim = [&] {
    std::thread([&] {
      duplicate = guard.run_for(std::string("k"), 0, 3s, [] { return 3; }).status;
    }).join();
  };
  reclaim_probe::armed = true;
  CHECK(guard.run(std::string("k"), 0, [] { return 2; }).status == run_status::executed);
  REQUIRE(duplicate.has_value());  // the retire of "x" freed a probe
  CHECK(*duplicate == run_status::replayed);
  reclaim_probe::armed = false;
  reclaim_probe::on_reclaim = nullptr;
  interlock::reclaim_retired();
}
