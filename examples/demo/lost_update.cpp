// Lost updates: threads increment one shared counter document. The naive code
// loads it and stores count + 1 in two steps, so an increment that lands between
// them is overwritten. cas_slot::update commits only if nothing intervened, and
// retries on the newer value otherwise.
#include "scenario.hpp"

#include <interlock/cas_slot.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int thread_count = 4;
constexpr std::uint64_t increments_per_thread = 100'000;
constexpr std::uint64_t total = thread_count * increments_per_thread;

/// A shared counter document: trivially copyable, no padding, so cas_slot hashes it
/// with the built-in codec.
struct counter_doc {
  std::uint64_t count = 0;
  std::uint64_t last_writer = 0;
};

template <class Body>
void run_threads(Body body) {
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < thread_count) std::this_thread::yield();  // start together
      body(static_cast<std::uint64_t>(t));
    });
  }
  for (auto& thread : threads) thread.join();
}

std::string with_commas(std::uint64_t n) {
  std::string digits = std::to_string(n);
  for (auto i = static_cast<std::ptrdiff_t>(digits.size()) - 3; i > 0; i -= 3) {
    digits.insert(static_cast<std::size_t>(i), ",");
  }
  return digits;
}

std::string lost_text(std::uint64_t final_count) {
  const std::uint64_t lost = total - final_count;
  return with_commas(lost) + " of " + with_commas(total) + " updates lost";
}

std::uint64_t naive_run() {
  // The same slot and the same documents, but read and write are two steps: a
  // commit that lands between them is overwritten.
  interlock::cas_slot<counter_doc> slot(counter_doc{});
  run_threads([&slot](std::uint64_t thread) {
    for (std::uint64_t i = 0; i < increments_per_thread; ++i) {
      const auto seen = slot.load();
      slot.store(counter_doc{seen->count + 1, thread});
    }
  });
  return slot.load()->count;
}

std::uint64_t interlock_run() {
  interlock::cas_slot<counter_doc> slot(counter_doc{});
  run_threads([&slot](std::uint64_t thread) {
    for (std::uint64_t i = 0; i < increments_per_thread; ++i) {
      slot.update([thread](const counter_doc& doc) { return counter_doc{doc.count + 1, thread}; });
    }
  });
  return slot.load()->count;
}

}  // namespace

static demo::registration reg{10, [] {
                                demo::row row;
                                row.scenario = "lost update (counter)";
                                const auto [naive_count, naive_ms] = demo::timed(naive_run);
                                const auto [interlock_count, interlock_ms] =
                                    demo::timed(interlock_run);
                                row.naive = {lost_text(naive_count), naive_ms};
                                row.interlock = {lost_text(interlock_count), interlock_ms};
                                row.interlock_correct = interlock_count == total;
                                return row;
                              }};
