// Test support: threads that a lost wake-up cannot hang.
//
// The threads share a State (which must have an std::atomic<int> `finished`) that
// outlives them. When a wake-up is lost, finish_within stops waiting after its limit,
// detaches the threads still blocked and returns false, so the test fails instead of
// hanging until ctest's timeout; the State stays alive for the detached threads, and
// no joinable std::thread is ever destroyed (also when an assertion ends the test
// early: the destructor finishes within a minute). Waits under test should use
// deadlines far beyond the limit, so that a timeout cannot stand in for the missing
// wake-up.
#ifndef INTERLOCK_TESTS_SUPPORT_BOUNDED_THREAD_GROUP_HPP
#define INTERLOCK_TESTS_SUPPORT_BOUNDED_THREAD_GROUP_HPP

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

namespace interlock_test {

template <class State>
class bounded_thread_group {
 public:
  bounded_thread_group() = default;
  bounded_thread_group(const bounded_thread_group&) = delete;
  bounded_thread_group& operator=(const bounded_thread_group&) = delete;
  ~bounded_thread_group() { (void)finish_within(std::chrono::seconds(60)); }

  State& state() { return *state_; }

  /// Starts `count` threads running fn(state, index).
  template <class Fn>
  void spawn(int count, Fn fn) {
    for (int i = 0; i < count; ++i) {
      threads_.emplace_back([shared = state_, fn, i] {
        fn(*shared, i);
        shared->finished.fetch_add(1);
      });
    }
  }

  /// Starts one thread running fn(state).
  template <class Fn>
  void spawn(Fn fn) {
    spawn(1, [fn](State& s, int) { fn(s); });
  }

  /// True when every thread finished within `limit` (all joined); false otherwise
  /// (all detached).
  bool finish_within(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    const int count = static_cast<int>(threads_.size());
    while (state_->finished.load() < count && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const bool all = state_->finished.load() == count;
    for (auto& t : threads_) {
      if (all) {
        t.join();
      } else {
        t.detach();
      }
    }
    threads_.clear();
    return all;
  }

 private:
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::vector<std::thread> threads_;
};

}  // namespace interlock_test

#endif  // INTERLOCK_TESTS_SUPPORT_BOUNDED_THREAD_GROUP_HPP
