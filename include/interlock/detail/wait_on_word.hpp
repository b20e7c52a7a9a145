// interlock/detail/wait_on_word.hpp: wait until a 32-bit atomic word changes, with a
// deadline. C++20 std::atomic::wait has no timeout; every blocking interlock
// primitive (cas_slot's wait for change, contended keyed locks, idempotency waiters)
// sleeps through this one facility.
//
// On Linux it is a futex (FUTEX_WAIT_PRIVATE with a relative timeout recomputed from
// the caller's clock, so any clock works). Elsewhere it falls back to a fixed table
// of mutex + condition-variable buckets chosen by the word's address.
//
// Contract: wait_until(word, expected, deadline) returns when the word no longer
// holds `expected` (true), when the deadline passes (false), or spuriously (true):
// callers always re-check their own condition in a loop. wake_one / wake_all wake
// threads blocked on the word; a waker must change the word (with a store that the
// waiter's load can observe) before waking, or the waiter may sleep through it.
#ifndef INTERLOCK_DETAIL_WAIT_ON_WORD_HPP
#define INTERLOCK_DETAIL_WAIT_ON_WORD_HPP

#include <interlock/config.hpp>
#include <interlock/detail/deadline.hpp>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#else
#include <array>
#include <condition_variable>
#include <mutex>
#endif

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

using wait_word = std::atomic<std::uint32_t>;

#if defined(__linux__)

inline void futex_wait_for(wait_word& word, std::uint32_t expected, const timespec* timeout) {
  // The kernel compares *word with `expected` atomically with going to sleep, which is
  // what makes a wake between the caller's check and this call impossible to miss.
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, timeout,
          nullptr, 0);
}

inline void wake_one(wait_word& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 1, nullptr,
          nullptr, 0);
}

inline void wake_all(wait_word& word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

/// Blocks while `word` holds `expected`, without a deadline. May return spuriously.
inline void wait(wait_word& word, std::uint32_t expected) noexcept {
  // (1) acquire: pairs with the waker's release store that changed the word, so a
  // caller that sees the new value also sees what the waker wrote before it.
  if (word.load(std::memory_order_acquire) != expected) return;
  futex_wait_for(word, expected, nullptr);
}

/// Blocks while `word` holds `expected` until `deadline` on Clock. Returns false only
/// when the deadline has passed. May return true spuriously.
template <class Clock, class Duration>
bool wait_until(wait_word& word, std::uint32_t expected,
                const std::chrono::time_point<Clock, Duration>& deadline) noexcept {
  // (2) acquire: same pairing as (1).
  if (word.load(std::memory_order_acquire) != expected) return true;
  // Saturating (detail/deadline.hpp): `deadline - Clock::now()` overflows for a coarse
  // or a min()/max() deadline.
  const long long ns = time_left(deadline).count();
  if (ns <= 0) return false;
  constexpr long long billion = 1'000'000'000;
  // The futex timeout is relative, measured on CLOCK_MONOTONIC. On a clock that can
  // jump (system_clock), sleep at most a second at a time, so a deadline that a jump
  // brought forward is noticed within a second; callers re-arm.
  constexpr long long longest = Clock::is_steady ? 3600 * billion : billion;
  const long long capped = ns > longest ? longest : ns;
  timespec timeout{};
  timeout.tv_sec = static_cast<time_t>(capped / billion);
  timeout.tv_nsec = static_cast<long>(capped % billion);
  futex_wait_for(word, expected, &timeout);
  return time_left(deadline).count() > 0 || word.load(std::memory_order_acquire) != expected;
}

#else  // portable fallback

struct wait_bucket {
  std::mutex mutex;
  std::condition_variable changed;
};

inline wait_bucket& bucket_for(const void* address) noexcept {
  static std::array<wait_bucket, 64> buckets;
  const auto bits = reinterpret_cast<std::uintptr_t>(address);
  return buckets[(bits >> 4) % buckets.size()];
}

inline void wake_all(wait_word& word) noexcept {
  auto& bucket = bucket_for(&word);
  { std::lock_guard lock(bucket.mutex); }  // orders this wake after a waiter's check
  bucket.changed.notify_all();
}
inline void wake_one(wait_word& word) noexcept { wake_all(word); }

inline void wait(wait_word& word, std::uint32_t expected) noexcept {
  auto& bucket = bucket_for(&word);
  std::unique_lock lock(bucket.mutex);
  if (word.load(std::memory_order_acquire) == expected) bucket.changed.wait(lock);
}

template <class Clock, class Duration>
bool wait_until(wait_word& word, std::uint32_t expected,
                const std::chrono::time_point<Clock, Duration>& deadline) noexcept {
  auto& bucket = bucket_for(&word);
  std::unique_lock lock(bucket.mutex);
  if (word.load(std::memory_order_acquire) != expected) return true;
  // On the steady clock, saturated (detail/deadline.hpp): no overflow for a coarse or a
  // min()/max() deadline.
  return bucket.changed.wait_until(lock, steady_deadline_of(deadline)) ==
             std::cv_status::no_timeout ||
         word.load(std::memory_order_acquire) != expected;
}

#endif

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_WAIT_ON_WORD_HPP
