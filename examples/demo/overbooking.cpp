// Overbooking: threads sign people up for an event role with a fixed number of seats.
// The naive code checks the count and then inserts, so two signups that check
// together both take the last seat. Under keyed_mutex the check and the insert for
// one role run one at a time, while other roles proceed in parallel.
#include "scenario.hpp"

#include <interlock/keyed_mutex.hpp>

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int roles = 20;
constexpr std::size_t seats = 10;
constexpr int threads = 4;
constexpr int attempts_per_thread = 400;

std::string role_key(int role) { return "signup:event42:role" + std::to_string(role); }

/// Runs the workload; `signup(role, counts)` takes one seat of `role` if one is left.
/// Returns the seats taken beyond capacity, summed over all roles.
template <class Signup>
std::size_t run(Signup signup) {
  std::vector<std::atomic<std::size_t>> taken(roles);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < attempts_per_thread; ++i) signup((i * 7 + t) % roles, taken);
    });
  }
  for (auto& th : pool) th.join();
  std::size_t overbooked = 0;
  for (const auto& count : taken) {
    if (count.load() > seats) overbooked += count.load() - seats;
  }
  return overbooked;
}

demo::row overbooking() {
  auto [naive, naive_ms] = demo::timed([] {
    return run([](int role, std::vector<std::atomic<std::size_t>>& taken) {
      auto& count = taken[static_cast<std::size_t>(role)];
      if (count.load() < seats) {   // check ...
        std::this_thread::yield();  // (the window any real code has: a query, a log line)
        count.fetch_add(1);         // ... then insert
      }
    });
  });
  interlock::keyed_mutex<std::string> locks;
  auto [locked, locked_ms] = demo::timed([&locks] {
    return run([&locks](int role, std::vector<std::atomic<std::size_t>>& taken) {
      locks.with_lock(role_key(role), [&] {
        auto& count = taken[static_cast<std::size_t>(role)];
        if (count.load() < seats) {
          std::this_thread::yield();
          count.fetch_add(1);
        }
      });
    });
  });
  demo::row r;
  r.scenario = "overbooking (keyed_mutex)";
  r.naive = {std::to_string(naive) + " seats overbooked", naive_ms};
  r.interlock = {std::to_string(locked) + " seats overbooked", locked_ms};
  r.interlock_correct = locked == 0 && locks.size() == 0;
  return r;
}

}  // namespace

static demo::registration reg{20, [] { return overbooking(); }};
