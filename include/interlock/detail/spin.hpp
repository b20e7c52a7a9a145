// interlock/detail/spin.hpp: the CPU pause used by every spin-wait, and a small
// spin-then-sleep mutex for short critical sections.
//
// Design note. The shards of detail::keyed_table are locked only to link, unlink or
// grow a chain: a few dozen instructions. A std::mutex (pthread) sleeps in the kernel
// as soon as it is contended, so two threads meeting on one shard pay two futex
// system calls for a wait of a few nanoseconds. spin_mutex spins briefly (with a CPU
// pause) before it sleeps, on the same futex word facility as every other blocking
// interlock primitive (detail/wait_on_word.hpp).
//
// spin_mutex: BasicLockable and Lockable (lock, unlock, try_lock); not recursive;
// not fair (a releasing thread may take it again at once). Memory ordering: unlock is
// a release and lock an acquire on the state word, so everything done under the lock
// is visible to the next holder.
#ifndef INTERLOCK_DETAIL_SPIN_HPP
#define INTERLOCK_DETAIL_SPIN_HPP

#include <interlock/config.hpp>
#include <interlock/detail/wait_on_word.hpp>

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h>
#endif

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

/// One CPU pause: tells the core (and its SMT sibling) that this thread is spinning.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

class spin_mutex {
 public:
  /// Spins this many pauses for the holder to leave before sleeping.
  static constexpr int spin_limit = INTERLOCK_TSAN ? 16 : 128;

  spin_mutex() noexcept = default;
  spin_mutex(const spin_mutex&) = delete;
  spin_mutex& operator=(const spin_mutex&) = delete;

  [[nodiscard]] bool try_lock() noexcept {
    std::uint32_t expected = unlocked;
    // (1) acquire: pairs with the release in unlock (3).
    return state_.compare_exchange_strong(expected, locked, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }

  void lock() noexcept {
    if (try_lock()) return;
    for (int i = 0; i < spin_limit; ++i) {
      cpu_relax();
      // Relaxed: only a hint that the lock is free; try_lock's CAS is the acquire.
      if (state_.load(std::memory_order_relaxed) == unlocked && try_lock()) return;
    }
    // Sleep until woken, marking the lock contended so that unlock wakes a waiter.
    // (2) acquire: pairs with (3); an exchange that returns `unlocked` took the lock.
    while (state_.exchange(contended, std::memory_order_acquire) != unlocked) {
      wait(state_, contended);
    }
  }

  void unlock() noexcept {
    // (3) release: pairs with (1) and (2).
    if (state_.exchange(unlocked, std::memory_order_release) == contended) wake_one(state_);
  }

 private:
  static constexpr std::uint32_t unlocked = 0;
  static constexpr std::uint32_t locked = 1;
  static constexpr std::uint32_t contended = 2;  // locked, and a thread may be asleep
  wait_word state_{unlocked};
};

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_SPIN_HPP
