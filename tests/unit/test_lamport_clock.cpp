// lamport_clock: tick, witness and now; 8 threads ticking get distinct values.
#include <interlock/lamport_clock.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

TEST_CASE("lamport_clock tick, witness, now", "[lamport_clock]") {
  interlock::lamport_clock clock;
  CHECK(clock.now() == 0);
  CHECK(clock.tick() == 1);
  CHECK(clock.tick() == 2);
  CHECK(clock.now() == 2);
  CHECK(clock.witness(10) == 11);  // past the sender's time
  CHECK(clock.witness(3) == 12);   // an older message still counts as an event
  CHECK(clock.now() == 12);
  interlock::lamport_clock restored(100);
  CHECK(restored.now() == 100);
  CHECK(restored.tick() == 101);
}

TEST_CASE("lamport_clock: 8 threads ticking get distinct values", "[lamport_clock][stress]") {
  constexpr int threads = 8;
  constexpr int ticks = 20000;
  interlock::lamport_clock clock;
  std::vector<std::vector<std::uint64_t>> seen(threads);
  std::atomic<int> not_increasing{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      auto& mine = seen[static_cast<std::size_t>(t)];
      mine.reserve(ticks);
      std::uint64_t previous = 0;
      for (int k = 0; k < ticks; ++k) {
        const std::uint64_t time = (k % 50 == 0) ? clock.witness(previous) : clock.tick();
        if (time <= previous) not_increasing.fetch_add(1, std::memory_order_relaxed);
        previous = time;
        mine.push_back(time);
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK(not_increasing.load() == 0);
  std::vector<std::uint64_t> all;
  for (const auto& list : seen) all.insert(all.end(), list.begin(), list.end());
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
  CHECK(all.size() == static_cast<std::size_t>(threads * ticks));
  CHECK(clock.now() == all.back());
  CHECK(clock.now() == static_cast<std::uint64_t>(threads * ticks));  // every event counted once
}

TEST_CASE("lamport_clock saturates at max_time instead of wrapping to 0", "[lamport_clock]") {
  using interlock::lamport_clock;
  constexpr std::uint64_t top = ~std::uint64_t{0};
  // A corrupt or hostile remote stamp at the very top used to wrap the clock to 0.
  lamport_clock clock;
  clock.tick();
  CHECK(clock.witness(top) == lamport_clock::max_time);
  CHECK(clock.now() == lamport_clock::max_time);
  CHECK(clock.tick() == lamport_clock::max_time);
  CHECK(clock.witness(5) == lamport_clock::max_time);
  CHECK(clock.now() == lamport_clock::max_time);

  // One below the top: the next tick used to return 0.
  lamport_clock near_top;
  CHECK(near_top.witness(top - 1) == lamport_clock::max_time);
  CHECK(near_top.tick() == lamport_clock::max_time);

  // Just below max_time, times still increase up to it.
  lamport_clock below;
  CHECK(below.witness(lamport_clock::max_time - 3) == lamport_clock::max_time - 2);
  CHECK(below.tick() == lamport_clock::max_time - 1);
  CHECK(below.tick() == lamport_clock::max_time);
  CHECK(below.tick() == lamport_clock::max_time);

  // A start above max_time (a corrupt record, -1) starts at max_time: ticks from the
  // top itself would wrap the word to 0 and repeat times.
  lamport_clock restored(top);
  CHECK(restored.now() == lamport_clock::max_time);
  CHECK(restored.tick() == lamport_clock::max_time);
  CHECK(restored.tick() == lamport_clock::max_time);
  CHECK(restored.now() == lamport_clock::max_time);
}

TEST_CASE("lamport_clock: threads ticking past max_time never see time run backwards",
          "[lamport_clock][stress]") {
  using interlock::lamport_clock;
  constexpr int threads = 8;
  constexpr int ticks = 5000;
  lamport_clock clock(lamport_clock::max_time - 1000);  // most ticks land at the top
  std::atomic<int> backwards{0};
  std::atomic<int> past_max{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::uint64_t previous = 0;
      for (int k = 0; k < ticks; ++k) {
        const std::uint64_t time = (k % 7 == t % 7) ? clock.witness(previous) : clock.tick();
        if (time < previous) backwards.fetch_add(1, std::memory_order_relaxed);
        if (time > lamport_clock::max_time) past_max.fetch_add(1, std::memory_order_relaxed);
        previous = time;
      }
    });
  }
  for (auto& thread : pool) thread.join();
  CHECK(backwards.load() == 0);
  CHECK(past_max.load() == 0);
  CHECK(clock.now() == lamport_clock::max_time);
}
