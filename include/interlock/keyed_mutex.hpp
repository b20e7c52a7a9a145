// interlock/keyed_mutex.hpp: one lock per key (exclusive or shared), created when a
// key is first locked and erased when nobody holds or waits for it; with timeouts,
// cancellation, deadlock-free multi-key locking, fencing tokens and statistics.
//
// Design note. Two requests for the same resource (the last seat of an event role,
// one account's balance) must run one at a time while requests for different
// resources run in parallel. A global mutex serializes everything, striped mutexes
// make unrelated keys block each other (and two-key operations deadlock on stripe
// collisions), and a map of mutexes grows forever. keyed_mutex<Key> keeps one small
// entry per key that is held or waited on, in a sharded table whose lookups take no
// lock (detail/keyed_table.hpp): finding a held key, which is what a hot key does all
// the time, never touches a shard mutex; only creating and erasing an entry does.
//
// Entry lifecycle. Each entry has a reference count = holders + waiters + acquirers in
// flight. An acquirer finds the entry lock-free (hazard-protected) and increments the
// count only if it is not 0 (a 0 entry may be being erased); otherwise it locks the
// shard, where it may revive a 0 entry or insert a new one. The release that drops the
// count to 0 locks the shard and erases the entry if it is still linked and still at
// 0, then retires it to the hazard-pointer domain. So size() is 0 once every guard is
// gone: memory is bounded by the keys in use, not by the keys ever seen.
//
// Lock word (32 bits, the futex word's neighbour): bit 31 exclusive holder; bit 30
// hand-off (a starving waiter owns the next grant); bits 16..29 registered waiters;
// bits 0..15 shared holders (at most 65,535 at once; more wait). Waiters sleep on a
// separate 32-bit sequence word that a releaser bumps before waking them, so a
// cancellation (which bumps it too) cannot be lost between a check and the sleep.
//
// Fairness (bounded barging). Like std::mutex, a free lock goes to whoever asks
// first, including a thread that just released it: that keeps a hot key fast. A
// waiter that has waited longer than `handoff_after` (1 ms) sets the hand-off bit;
// from then on nobody else (new lockers, shared lockers, other waiters) may take the
// key, and the next release hands it to that waiter. A waiter therefore waits at
// most about 1 ms plus one hold per starving waiter ahead of it; no waiter starves.
// Shared holders cannot starve a writer either: the hand-off bit stops new readers.
//
// Fencing tokens. Every grant (exclusive or shared) carries a token; tokens of one key
// strictly increase with each grant, across the erasure and re-creation of its entry,
// for the life of the keyed_mutex. A downstream store that remembers the highest token
// it has seen per key rejects a write from a holder whose lock has since been granted
// to someone else. Scheme: the entry counts its grants (the counter sits in the
// entry's own cache line, so a hot key pays no extra shared line), and when an entry
// is erased its last token is folded into a per-stripe floor (fetch-max); a new entry
// starts above its stripe's floor. Erasure and creation of one key's entries both
// happen under that key's shard lock, so the new entry sees the old one's last
// token. Tokens of different keys are unrelated (two keys may show the same number):
// compare tokens of one key only. Readers that hold a key together may get their
// tokens in the other order than their grants; a store that fences writes should
// take them from exclusive holders.
//
// Hash and Equal must not throw: lookups are noexcept (a throw there terminates).
// Copying a Key, Hash and Equal run under a shard's internal lock: they must not call
// into the same keyed_mutex.
//
// Multi-key locking. lock_many takes references on every key's entry first, then
// locks the entries in address order, duplicates collapsed. While a reference is
// held a key's entry cannot change, so every thread that holds or waits for a set of
// entries orders them the same way: no cycle, no deadlock, whatever order callers
// name the keys in. The try and timed forms release everything already taken when
// one key fails.
//
// Re-entrancy. Locking (exclusively or shared) a key that the calling thread already
// holds exclusively is a precondition violation: in builds without NDEBUG it is
// detected and reported through INTERLOCK_ASSERT (abort by default); with NDEBUG it
// deadlocks, like std::mutex. Taking a shared lock twice on one thread is not
// detected and may deadlock once a writer is waiting (as with std::shared_mutex).
// The check records the thread that took the lock, until the guard is moved (a moved
// guard may travel to another thread, which may unlock it there, while the locking
// thread waits for the key again): re-locking through a moved guard's key is not
// detected.
//
// When not to use it: for a fixed, small set of resources (a plain std::mutex per
// resource is faster), or across processes (the per-key state machine here is what a
// Redis SET NX PX lock with fencing tokens would hold; this table is in-process).
//
// Progress: lock/try_lock on a key whose entry exists and whose lock is free are
// lock-free (hazard-protected lookup, two CAS loops); creating or erasing an entry
// takes the key's shard mutex briefly; waiting for a held key is blocking (a short
// spin, then a futex sleep through detail::wait_until).
//
// Complexity: O(1) expected per key (hashing the key, one chain walk); lock_many
// O(n log n) for n keys; size() and stats() visit every shard (diagnostics).
//
// Memory ordering: an unlock is a release and the lock that next takes the key is an
// acquire on the same lock word, so everything the previous holder did before
// unlock() is visible to the next holder (exclusive or shared) after its lock returns.
// Shared holders see everything the last exclusive holder did; they are not ordered
// with each other.
#ifndef INTERLOCK_KEYED_MUTEX_HPP
#define INTERLOCK_KEYED_MUTEX_HPP

#include <interlock/config.hpp>
#include <interlock/detail/block_cache.hpp>
#include <interlock/detail/deadline.hpp>
#include <interlock/detail/hazard_pointer.hpp>
#include <interlock/detail/keyed_table.hpp>
#include <interlock/detail/spin.hpp>
#include <interlock/detail/striped_counter.hpp>
#include <interlock/detail/wait_on_word.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN

/// Thrown by keyed_mutex::with_lock_for (and only there) when the key could not be
/// locked before the timeout.
class lock_timeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A snapshot of a keyed_mutex's statistics (see keyed_mutex::stats).
struct keyed_mutex_stats {
  std::size_t keys_held = 0;                 ///< keys held (exclusive or shared) now
  std::size_t waiters = 0;                   ///< threads asleep waiting for a key now
  std::uint64_t acquisitions = 0;            ///< grants, exclusive and shared, since construction
  std::uint64_t contended_acquisitions = 0;  ///< grants that had to wait (spin or sleep)
  std::uint64_t timeouts = 0;                ///< timed locks that gave up
  std::uint64_t cancellations = 0;           ///< locks cancelled through a stop_token
  std::chrono::nanoseconds total_wait{0};    ///< summed wait of contended grants
  std::chrono::nanoseconds max_wait{0};      ///< longest wait of one contended grant

  /// Mean wait of a contended grant (0 when there was none).
  [[nodiscard]] std::chrono::nanoseconds average_wait() const noexcept {
    return contended_acquisitions == 0
               ? std::chrono::nanoseconds{0}
               : total_wait / static_cast<std::int64_t>(contended_acquisitions);
  }
};

template <class Key, class Hash = key_hash<Key>, class Equal = std::equal_to<>>
class keyed_mutex {
  struct entry : detail::keyed_entry<Key>, detail::cached_allocation<entry> {
    template <class K>
    entry(K&& k, std::uint64_t h, std::uint32_t initial_state, std::uint64_t floor)
        : detail::keyed_entry<Key>(std::forward<K>(k), h),
          state(initial_state),
          token(initial_state != 0 ? floor + 1 : floor),
          first_token(floor) {
      this->reclaim = [](detail::retirable* self) noexcept { delete static_cast<entry*>(self); };
    }
    // The written fields below stay at least 64 bytes away from the read-mostly key,
    // hash and links above, so lock-free lookups are not invalidated by every
    // lock/unlock (without over-aligning the entry, which would make allocation dear).
    char separation[64];
    alignas(16) std::atomic<std::uint32_t> refs{1};  // holders + waiters + acquirers
    detail::wait_word state;                         // the lock word (layout above)
    std::atomic<std::uint64_t> token;                // last fencing token granted
    detail::wait_word seq{0};                        // waiters sleep on this
    std::atomic<std::thread::id> owner{};            // exclusive holder (debug check)
    const std::uint64_t first_token;                 // token - first_token = grants of this entry
  };
  using table_type = detail::keyed_table<Key, entry, Hash, Equal>;

  static constexpr std::uint32_t exclusive_bit = 1u << 31;
  static constexpr std::uint32_t handoff_bit = 1u << 30;
  static constexpr std::uint32_t waiter_one = 1u << 16;
  static constexpr std::uint32_t waiter_mask = 0x3fffu << 16;
  static constexpr std::uint32_t reader_mask = 0xffffu;

  static constexpr std::size_t stat_stripes = 16;
  static constexpr std::size_t floor_stripes = 64;

  struct alignas(detail::cache_line_size) stat_stripe {
    // All relaxed: independent counters; stats() sums them, no ordering is implied.
    std::atomic<std::uint64_t> contended{0};
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> cancellations{0};
    std::atomic<std::uint64_t> wait_ns{0};
    std::atomic<std::uint64_t> max_wait_ns{0};
  };
  struct alignas(detail::cache_line_size) token_floor {
    std::atomic<std::uint64_t> value{0};         // highest token of an erased entry
    std::atomic<std::uint64_t> acquisitions{0};  // grants of erased entries (relaxed: a statistic)
  };

  enum class outcome { granted, busy, timed_out, cancelled };
  struct no_deadline {};

 public:
  using key_type = Key;
  using hasher = Hash;
  using key_equal = Equal;

  /// How long a waiter waits before it claims the next grant (the hand-off bit).
  static constexpr std::chrono::microseconds handoff_after{1000};

  /// RAII ownership of one key, exclusive (basic_guard<false>, `guard`) or shared
  /// (basic_guard<true>, `shared_guard`). Movable, not copyable. An empty guard
  /// (default-constructed, moved-from, unlocked, or returned by a failed try) owns
  /// nothing, and unlock() on it is a no-op. A guard may be unlocked on another
  /// thread than the one that locked. Thread-safety: one guard, one thread at a time.
  template <bool Shared>
  class basic_guard {
   public:
    basic_guard() noexcept = default;
    basic_guard(basic_guard&& other) noexcept
        : map_(std::exchange(other.map_, nullptr)),
          entry_(std::exchange(other.entry_, nullptr)),
          token_(std::exchange(other.token_, 0)) {
      if constexpr (!Shared) forget_owner(entry_);
    }
    basic_guard& operator=(basic_guard&& other) noexcept {
      if (this != &other) {
        unlock();
        map_ = std::exchange(other.map_, nullptr);
        entry_ = std::exchange(other.entry_, nullptr);
        token_ = std::exchange(other.token_, 0);
        if constexpr (!Shared) forget_owner(entry_);
      }
      return *this;
    }
    basic_guard(const basic_guard&) = delete;
    basic_guard& operator=(const basic_guard&) = delete;
    ~basic_guard() { unlock(); }

    /// Releases the key now (a no-op on an empty guard). Never blocks for the key;
    /// the last release of a key briefly locks its shard to erase the entry.
    void unlock() noexcept {
      if (entry_ == nullptr) return;
      if constexpr (Shared) {
        map_->release_shared(entry_);
      } else {
        map_->release_exclusive(entry_);
      }
      entry_ = nullptr;
      token_ = 0;
    }

    [[nodiscard]] bool owns_lock() const noexcept { return entry_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }

    /// This grant's fencing token (0 for an empty guard): larger than every earlier
    /// grant's token of the same key.
    [[nodiscard]] std::uint64_t fencing_token() const noexcept { return token_; }

    /// The key held. Precondition: owns_lock().
    [[nodiscard]] const Key& key() const noexcept {
      INTERLOCK_ASSERT(entry_ != nullptr, "keyed_mutex guard: key() on an empty guard");
      return entry_->key;
    }

   private:
    friend class keyed_mutex;
    basic_guard(keyed_mutex* map, entry* e, std::uint64_t token) noexcept
        : map_(map), entry_(e), token_(token) {}
    keyed_mutex* map_ = nullptr;
    entry* entry_ = nullptr;
    std::uint64_t token_ = 0;
  };
  using guard = basic_guard<false>;
  using shared_guard = basic_guard<true>;

  /// Exclusive ownership of several keys at once (lock_many). Movable; unlock()
  /// releases all of them; empty when a try form failed.
  class multi_guard {
   public:
    multi_guard() noexcept = default;
    multi_guard(multi_guard&& other) noexcept
        : map_(std::exchange(other.map_, nullptr)), held_(std::move(other.held_)) {
      other.held_.clear();
      forget_owners();
    }
    multi_guard& operator=(multi_guard&& other) noexcept {
      if (this != &other) {
        unlock();
        map_ = std::exchange(other.map_, nullptr);
        held_ = std::move(other.held_);
        other.held_.clear();
        forget_owners();
      }
      return *this;
    }
    multi_guard(const multi_guard&) = delete;
    multi_guard& operator=(const multi_guard&) = delete;
    ~multi_guard() { unlock(); }

    /// Releases every key (in reverse locking order). No-op when empty.
    void unlock() noexcept {
      for (auto it = held_.rbegin(); it != held_.rend(); ++it) map_->release_exclusive(it->e);
      held_.clear();
    }
    [[nodiscard]] bool owns_lock() const noexcept { return !held_.empty(); }
    explicit operator bool() const noexcept { return owns_lock(); }
    /// Distinct keys held.
    [[nodiscard]] std::size_t size() const noexcept { return held_.size(); }

    /// The fencing token of `key`'s grant, or 0 when this guard does not hold it.
    /// O(size()).
    template <class K>
    [[nodiscard]] std::uint64_t fencing_token(const K& key) const {
      for (const auto& h : held_) {
        if (map_->table_.key_eq()(h.e->key, key)) return h.token;
      }
      return 0;
    }

   private:
    friend class keyed_mutex;
    struct held {
      entry* e;
      std::uint64_t token;
    };
    void forget_owners() noexcept {
      for (const held& h : held_) forget_owner(h.e);
    }
    keyed_mutex* map_ = nullptr;
    std::vector<held> held_;
  };

  /// A Lockable / TimedLockable view of one key, for std::unique_lock and
  /// std::scoped_lock. It copies the key and holds the grant itself, so lock() and
  /// unlock() must pair up as for a mutex. Movable while unlocked.
  class mutex_view {
   public:
    void lock() { held_ = map_->lock(key_); }
    [[nodiscard]] bool try_lock() {
      held_ = map_->try_lock(key_);
      return held_.owns_lock();
    }
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
      held_ = map_->try_lock_for(key_, timeout);
      return held_.owns_lock();
    }
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
      held_ = map_->try_lock_until(key_, deadline);
      return held_.owns_lock();
    }
    void unlock() noexcept { held_.unlock(); }
    /// The current grant's fencing token (0 when not locked).
    [[nodiscard]] std::uint64_t fencing_token() const noexcept { return held_.fencing_token(); }
    [[nodiscard]] const Key& key() const noexcept { return key_; }

   private:
    friend class keyed_mutex;
    template <class K>
    mutex_view(keyed_mutex* map, K&& key) : map_(map), key_(std::forward<K>(key)) {}
    keyed_mutex* map_;
    Key key_;
    guard held_;
  };

  /// An empty map. `shards` (rounded up to a power of two) spreads entry creation
  /// and erasure over that many shard mutexes.
  explicit keyed_mutex(std::size_t shards = 64, Hash hash = Hash{}, Equal equal = Equal{})
      : table_(shards, std::move(hash), std::move(equal)) {}

  keyed_mutex(const keyed_mutex&) = delete;
  keyed_mutex& operator=(const keyed_mutex&) = delete;
  /// Precondition: no guard, view or waiter of this map exists any more.
  ~keyed_mutex() = default;

  // ---- exclusive ------------------------------------------------------------

  /// Locks `key` exclusively, waiting as long as it takes. `key` may be any type
  /// that Hash and Equal accept together with Key (std::string_view or const char*
  /// for std::string keys, without allocating unless the entry is created).
  /// Thread-safe. Blocking; lock-free when the key is free and its entry exists.
  /// Precondition: the calling thread does not hold `key` exclusively (see the note).
  template <class K>
  [[nodiscard]] guard lock(const K& key) {
    return acquire<false>(key, wait_kind::forever, static_cast<const no_deadline*>(nullptr),
                          nullptr);
  }

  /// As lock(key), but gives up when `stop` is requested: the returned guard is then
  /// empty (and counted as a cancellation). If stop is already requested, returns an
  /// empty guard without trying.
  template <class K>
  [[nodiscard]] guard lock(const K& key, std::stop_token stop) {
    return acquire<false>(key, wait_kind::forever, static_cast<const no_deadline*>(nullptr), &stop);
  }

  /// Takes `key` only if nobody holds it (and no starving waiter has claimed it).
  /// Thread-safe; never waits for the key (may briefly take its shard mutex to
  /// create the entry). Returns an empty guard on failure.
  template <class K>
  [[nodiscard]] guard try_lock(const K& key) {
    return acquire<false>(key, wait_kind::never, static_cast<const no_deadline*>(nullptr), nullptr);
  }

  /// As lock(key), but gives up after `timeout` (steady clock). Returns an empty
  /// guard on timeout (counted in stats().timeouts).
  template <class K, class Rep, class Period>
  [[nodiscard]] guard try_lock_for(const K& key,
                                   const std::chrono::duration<Rep, Period>& timeout) {
    return try_lock_until(key, detail::deadline_after(timeout));
  }

  /// As lock(key), but gives up at `deadline` (any clock). Empty guard on timeout.
  template <class K, class Clock, class Duration>
  [[nodiscard]] guard try_lock_until(const K& key,
                                     const std::chrono::time_point<Clock, Duration>& deadline) {
    return acquire<false>(key, wait_kind::until, &deadline, nullptr);
  }

  // ---- shared ---------------------------------------------------------------

  /// Locks `key` shared: any number of shared holders, no exclusive one. Same
  /// thread-safety, progress and lookup rules as lock(key).
  template <class K>
  [[nodiscard]] shared_guard lock_shared(const K& key) {
    return acquire<true>(key, wait_kind::forever, static_cast<const no_deadline*>(nullptr),
                         nullptr);
  }
  template <class K>
  [[nodiscard]] shared_guard lock_shared(const K& key, std::stop_token stop) {
    return acquire<true>(key, wait_kind::forever, static_cast<const no_deadline*>(nullptr), &stop);
  }
  template <class K>
  [[nodiscard]] shared_guard try_lock_shared(const K& key) {
    return acquire<true>(key, wait_kind::never, static_cast<const no_deadline*>(nullptr), nullptr);
  }
  template <class K, class Rep, class Period>
  [[nodiscard]] shared_guard try_lock_shared_for(
      const K& key, const std::chrono::duration<Rep, Period>& timeout) {
    return try_lock_shared_until(key, detail::deadline_after(timeout));
  }
  template <class K, class Clock, class Duration>
  [[nodiscard]] shared_guard try_lock_shared_until(
      const K& key, const std::chrono::time_point<Clock, Duration>& deadline) {
    return acquire<true>(key, wait_kind::until, &deadline, nullptr);
  }

  // ---- callbacks ------------------------------------------------------------

  /// Runs fn() (or fn(guard&)) with `key` locked and returns its result. An
  /// exception from fn releases the lock and propagates. Blocking, as lock(key).
  template <class K, class Fn>
  decltype(auto) with_lock(const K& key, Fn&& fn) {
    guard g = lock(key);
    return invoke_with(g, fn);
  }

  /// As with_lock, but throws lock_timeout when `key` is not locked within
  /// `timeout` (fn is then not called).
  template <class K, class Rep, class Period, class Fn>
  decltype(auto) with_lock_for(const K& key, const std::chrono::duration<Rep, Period>& timeout,
                               Fn&& fn) {
    guard g = try_lock_for(key, timeout);
    if (!g) throw lock_timeout("interlock::keyed_mutex: the key was not locked within the timeout");
    return invoke_with(g, fn);
  }

  // ---- several keys ---------------------------------------------------------

  /// Locks every key of `keys` exclusively, all or nothing, deadlock-free whatever
  /// order callers name them in (see the note); duplicates are collapsed. The grants
  /// (fencing tokens, statistics) are counted once every key is held, so a try or
  /// timed form that gives up counts none. An empty `keys` takes nothing and returns
  /// an empty guard, as a failed try does: test `keys` first where that matters.
  /// Thread-safe. Blocking. O(n log n) plus the waits.
  template <std::ranges::input_range Range>
  [[nodiscard]] multi_guard lock_many(const Range& keys) {
    return acquire_many(keys, wait_kind::forever, static_cast<const no_deadline*>(nullptr));
  }
  template <class K>
  [[nodiscard]] multi_guard lock_many(std::initializer_list<K> keys) {
    return acquire_many(keys, wait_kind::forever, static_cast<const no_deadline*>(nullptr));
  }

  /// Takes every key only if none is held; otherwise releases what it took and
  /// returns an empty guard. Never waits for a key.
  template <std::ranges::input_range Range>
  [[nodiscard]] multi_guard try_lock_many(const Range& keys) {
    return acquire_many(keys, wait_kind::never, static_cast<const no_deadline*>(nullptr));
  }
  template <class K>
  [[nodiscard]] multi_guard try_lock_many(std::initializer_list<K> keys) {
    return acquire_many(keys, wait_kind::never, static_cast<const no_deadline*>(nullptr));
  }

  /// As lock_many, but gives up after `timeout` for the whole set, releasing every
  /// key already taken, and returns an empty guard.
  template <std::ranges::input_range Range, class Rep, class Period>
  [[nodiscard]] multi_guard try_lock_many_for(const Range& keys,
                                              const std::chrono::duration<Rep, Period>& timeout) {
    const auto deadline = detail::deadline_after(timeout);
    return acquire_many(keys, wait_kind::until, &deadline);
  }
  template <class K, class Rep, class Period>
  [[nodiscard]] multi_guard try_lock_many_for(std::initializer_list<K> keys,
                                              const std::chrono::duration<Rep, Period>& timeout) {
    const auto deadline = detail::deadline_after(timeout);
    return acquire_many(keys, wait_kind::until, &deadline);
  }

  // ---- views and diagnostics ------------------------------------------------

  /// A Lockable view of `key` for std::unique_lock / std::scoped_lock. Creates no
  /// entry until locked.
  template <class K>
  [[nodiscard]] mutex_view mutex(K&& key) {
    return mutex_view(this, std::forward<K>(key));
  }

  /// Entries now (keys held or waited on). Thread-safe; locks each shard in turn:
  /// a diagnostic, O(shards).
  [[nodiscard]] std::size_t size() const { return table_.size(); }

  /// The statistics, cheap enough to leave on: an uncontended grant adds nothing
  /// (an entry's grants are its token minus its first token, folded into a striped
  /// counter when the entry is erased); the contended path adds to per-thread
  /// striped relaxed counters; keys_held and waiters are read from the entries'
  /// lock words (each shard locked in turn).
  /// Thread-safe; a snapshot that may be slightly stale under concurrency. O(entries).
  [[nodiscard]] keyed_mutex_stats stats() {
    keyed_mutex_stats out;
    for (const auto& f : floors_)
      out.acquisitions += f.acquisitions.load(std::memory_order_relaxed);
    for (const auto& s : stats_) {
      // Relaxed: statistics; see stat_stripe.
      out.contended_acquisitions += s.contended.load(std::memory_order_relaxed);
      out.timeouts += s.timeouts.load(std::memory_order_relaxed);
      out.cancellations += s.cancellations.load(std::memory_order_relaxed);
      out.total_wait += std::chrono::nanoseconds(
          static_cast<std::int64_t>(s.wait_ns.load(std::memory_order_relaxed)));
      out.max_wait = std::max(out.max_wait, std::chrono::nanoseconds(static_cast<std::int64_t>(
                                                s.max_wait_ns.load(std::memory_order_relaxed))));
    }
    table_.for_each_locked([&out](entry& e) {
      // Relaxed: a diagnostic snapshot of the word; nothing is read through it.
      const std::uint32_t s = e.state.load(std::memory_order_relaxed);
      out.acquisitions += e.token.load(std::memory_order_relaxed) - e.first_token;
      if ((s & (exclusive_bit | reader_mask)) != 0) ++out.keys_held;
      out.waiters += (s & waiter_mask) / waiter_one;
    });
    return out;
  }

 private:
  enum class wait_kind { never, forever, until };

  template <class Fn>
  static decltype(auto) invoke_with(guard& g, Fn& fn) {
    if constexpr (std::is_invocable_v<Fn&, guard&>) {
      return std::invoke(fn, g);
    } else {
      return std::invoke(fn);
    }
  }

  static constexpr bool can_take(std::uint32_t s, bool shared, bool priority) noexcept {
    if ((s & exclusive_bit) != 0) return false;
    if (!priority && (s & handoff_bit) != 0) return false;
    return shared ? (s & reader_mask) < reader_mask : (s & reader_mask) == 0;
  }
  static constexpr std::uint32_t take(std::uint32_t s, bool shared, bool priority) noexcept {
    const std::uint32_t taken = shared ? s + 1 : (s | exclusive_bit);
    return priority ? (taken & ~handoff_bit) : taken;
  }

  stat_stripe& my_stats() noexcept { return stats_[detail::thread_stripe_index() % stat_stripes]; }
  token_floor& floor_for(std::uint64_t h) noexcept { return floors_[(h >> 20) % floor_stripes]; }

  // ---- entry references -------------------------------------------------------

  /// A counted reference to `key`'s entry, creating it (with `initial_state` and
  /// the next token already granted when initial_state is not 0) if absent.
  template <class K>
  entry* acquire_ref(const K& key, std::uint64_t h, std::uint32_t initial_state, bool& created) {
    {
      typename table_type::lookup_guards guards;
      if (entry* e = table_.find(guards, key, h)) {
        // Relaxed: the count only keeps the entry alive; the lock word orders data.
        std::uint32_t r = e->refs.load(std::memory_order_relaxed);
        while (r > 0) {
          // Never from 0: a 0 entry may be being erased under the shard lock.
          if (e->refs.compare_exchange_weak(r, r + 1, std::memory_order_relaxed)) return e;
        }
      }
    }
    auto shard = table_.lock_shard(h);
    if (entry* e = shard.find(key)) {
      // Relaxed: under the shard lock, which also serializes erasure, so reviving
      // a 0 entry here is safe.
      e->refs.fetch_add(1, std::memory_order_relaxed);
      return e;
    }
    // Relaxed: ordered by the shard lock (see raise_floor).
    const std::uint64_t floor = floor_for(h).value.load(std::memory_order_relaxed);
    auto fresh = std::make_unique<entry>(key, h, initial_state, floor);
    shard.insert(fresh.get());  // may throw (growing the shard) before linking it
    created = true;
    return fresh.release();
  }

  /// Drops one reference; the last one erases the entry if it is still idle.
  void drop_ref(entry* e) noexcept {
    const std::uint64_t h = e->hash;  // read first: after the decrement e may be freed
    // (D1) release: our uses of the entry (its token) happen before an eraser's
    // acquire load (D2); acquire: if we erase, we see the others' uses.
    if (e->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    entry* victim = nullptr;
    {
      auto shard = table_.lock_shard(h);
      // Address compare only: someone may have revived, released and erased it.
      // (D2) acquire: pairs with the last release decrement (D1).
      if (shard.contains(e) && e->refs.load(std::memory_order_acquire) == 0) {
        // Linked and idle under the lock, so `e` is valid here, but its memory may
        // have been reused by another key's entry since we read `h`: fold its tokens
        // into the floor of the key it holds now.
        const std::uint64_t own_hash = e->hash;
        const std::uint64_t last = e->token.load(std::memory_order_relaxed);  // D2 ordered it
        raise_floor(own_hash, last);
        // Relaxed: a statistic.
        floor_for(own_hash).acquisitions.fetch_add(last - e->first_token,
                                                   std::memory_order_relaxed);
        shard.erase(e);
        victim = e;
      }
    }
    if (victim != nullptr) table_type::retire(victim);
  }

  /// Folds an erased entry's last token into its stripe's floor. Relaxed: erasure
  /// and re-creation of one key both run under that key's shard lock, which orders
  /// this RMW before the creator's load of the floor.
  void raise_floor(std::uint64_t h, std::uint64_t last) noexcept {
    auto& floor = floor_for(h).value;
    std::uint64_t seen = floor.load(std::memory_order_relaxed);
    while (seen < last && !floor.compare_exchange_weak(seen, last, std::memory_order_relaxed)) {
    }
  }

  // ---- the lock word ----------------------------------------------------------

  /// One attempt (a CAS loop while the word allows it) starting from the guess `s`.
  static bool try_take(entry* e, bool shared, bool priority, bool registered,
                       std::uint32_t s) noexcept {
    while (can_take(s, shared, priority)) {
      const std::uint32_t desired = take(s, shared, priority) - (registered ? waiter_one : 0);
      // (A1) acquire: pairs with the release RMW of the previous holder's unlock
      // (R1/R2), so everything it did is visible to us.
      if (e->state.compare_exchange_weak(s, desired, std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }

  /// Bumps the sequence word and wakes one or all sleepers.
  static void wake_waiters(entry* e, bool all) noexcept {
    // (W1) release: pairs with a waiter's acquire load of seq (W2): a waiter that
    // sees the new sequence also sees the lock word change made before it.
    e->seq.fetch_add(1, std::memory_order_release);
    if (all) {
      detail::wake_all(e->seq);
    } else {
      detail::wake_one(e->seq);
    }
  }

  /// After a waiter's grant: a shared holder lets the next sleeper in too (it may be a
  /// reader); a hand-off waiter that cleared the bit lets everyone retry. Also after
  /// the last try at a deadline, or a reader asleep behind the hand-off bit would stay
  /// asleep for the whole of this reader's hold.
  static void wake_fellow_readers(entry* e, bool shared, bool priority) noexcept {
    const std::uint32_t now = e->state.load(std::memory_order_relaxed);  // hint only
    if (shared && (now & waiter_mask) != 0) wake_waiters(e, priority);
  }

  void release_exclusive(entry* e) noexcept {
#ifndef NDEBUG
    e->owner.store(std::thread::id{}, std::memory_order_relaxed);  // debug only, same thread
#endif
    // (R1) release: pairs with the next holder's acquire CAS (A1).
    const std::uint32_t old = e->state.fetch_sub(exclusive_bit, std::memory_order_release);
    if ((old & waiter_mask) != 0) wake_waiters(e, (old & handoff_bit) != 0);
    drop_ref(e);
  }

  void release_shared(entry* e) noexcept {
    // (R2) release: pairs with the next exclusive holder's acquire CAS (A1).
    const std::uint32_t old = e->state.fetch_sub(1, std::memory_order_release);
    if ((old & waiter_mask) != 0) {
      const std::uint32_t readers = old & reader_mask;
      if (readers == 1) {
        wake_waiters(e, (old & handoff_bit) != 0);  // the key is free now
      } else if (readers == reader_mask) {
        wake_waiters(e, true);  // below the reader cap again: a waiting reader fits
      }
    }
    drop_ref(e);
  }

  /// Unregisters a waiter that gives up (timeout or cancellation).
  static void leave(entry* e, bool priority) noexcept {
    // Relaxed: this RMW publishes nothing; waking goes through seq (W1).
    std::uint32_t s = e->state.load(std::memory_order_relaxed);
    std::uint32_t desired = 0;
    do {
      desired = (s - waiter_one) & (priority ? ~handoff_bit : ~0u);
    } while (!e->state.compare_exchange_weak(s, desired, std::memory_order_relaxed));
    // We may have consumed a wake-up meant for the next waiter (or, as the hand-off
    // waiter, kept the others off a free lock): pass it on.
    if ((desired & waiter_mask) != 0) wake_waiters(e, priority);
  }

  /// The wait of a contended acquisition that began at `start` and ends now, in ns.
  static std::uint64_t waited_since(std::chrono::steady_clock::time_point start) noexcept {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                          std::chrono::steady_clock::now() - start)
                                          .count());
  }

  void record_grant(bool contended, std::chrono::steady_clock::time_point start) noexcept {
    if (contended) record_wait(waited_since(start));  // the grant is counted by its token
  }

  /// Counts one contended acquisition that waited `waited` ns.
  void record_wait(std::uint64_t waited) noexcept {
    stat_stripe& s = my_stats();
    // Relaxed: statistics only (see stat_stripe).
    s.contended.fetch_add(1, std::memory_order_relaxed);
    s.wait_ns.fetch_add(waited, std::memory_order_relaxed);
    std::uint64_t max = s.max_wait_ns.load(std::memory_order_relaxed);
    while (max < waited &&
           !s.max_wait_ns.compare_exchange_weak(max, waited, std::memory_order_relaxed)) {
    }
  }

  /// A moved guard may travel to another thread: the debug check stops attributing its
  /// key to the thread that locked it (which may then wait for that key again).
  static void forget_owner([[maybe_unused]] entry* e) noexcept {
#ifndef NDEBUG
    // Relaxed: a debug record; the guard's holder is the only writer while it holds.
    if (e != nullptr) e->owner.store(std::thread::id{}, std::memory_order_relaxed);
#endif
  }

  static void check_not_owner([[maybe_unused]] entry* e) noexcept {
#ifndef NDEBUG
    // Relaxed: only our own earlier store can equal our id.
    INTERLOCK_ASSERT(e->owner.load(std::memory_order_relaxed) != std::this_thread::get_id(),
                     "keyed_mutex: this thread already holds this key exclusively");
#endif
  }

  /// Takes the lock word of `e` (we hold a reference). Spins briefly, then sleeps.
  template <class Deadline>
  outcome lock_entry(entry* e, bool shared, wait_kind kind, const Deadline* deadline,
                     const std::stop_token* stop, bool& contended,
                     std::chrono::steady_clock::time_point& start) {
    check_not_owner(e);
    if (try_take(e, shared, false, false, 0)) return outcome::granted;
    if (kind == wait_kind::never) return outcome::busy;
    contended = true;
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < spin_limit; ++i) {
      detail::cpu_relax();
      // Relaxed: a guess for the CAS, which is the acquire.
      if (try_take(e, shared, false, false, e->state.load(std::memory_order_relaxed))) {
        return outcome::granted;
      }
    }
    return wait_registered(e, shared, deadline, stop, start);
  }

  template <class Deadline>
  outcome wait_registered(entry* e, bool shared, const Deadline* deadline,
                          const std::stop_token* stop,
                          std::chrono::steady_clock::time_point start) {
    struct wake_on_stop {
      entry* e;
      void operator()() const noexcept { wake_waiters(e, true); }
    };
    std::optional<std::stop_callback<wake_on_stop>> on_stop;
    if (stop != nullptr && stop->stop_possible()) on_stop.emplace(*stop, wake_on_stop{e});

    // Register (a CAS loop so that 16,383 waiters never overflow into the flags).
    // Relaxed: the lock word's modification order alone orders a registration
    // against a release, which wakes whenever it sees a registered waiter.
    std::uint32_t s = e->state.load(std::memory_order_relaxed);
    for (;;) {
      if ((s & waiter_mask) == waiter_mask) {
        // Not registered yet: giving up here leaves nothing to undo.
        if (stop != nullptr && stop->stop_requested()) return outcome::cancelled;
        if constexpr (!std::is_same_v<Deadline, no_deadline>) {
          if (std::chrono::steady_clock::now() >= detail::steady_deadline_of(*deadline)) {
            return outcome::timed_out;
          }
        }
        std::this_thread::yield();
        s = e->state.load(std::memory_order_relaxed);
        continue;
      }
      if (e->state.compare_exchange_weak(s, s + waiter_one, std::memory_order_relaxed)) break;
    }
    bool priority = false;
    const auto handoff_at = start + handoff_after;
    for (;;) {
      // (W2) acquire: pairs with W1. Loaded before the lock word, so a release that
      // we miss below has bumped seq after this load, and the futex sees it.
      const std::uint32_t q = e->seq.load(std::memory_order_acquire);
      s = e->state.load(std::memory_order_relaxed);  // a guess; the CAS (A1) acquires
      if (can_take(s, shared, priority)) {
        if (try_take(e, shared, priority, true, s)) {
          wake_fellow_readers(e, shared, priority);
          return outcome::granted;
        }
        continue;
      }
      const auto now = std::chrono::steady_clock::now();
      if (!priority && (s & handoff_bit) == 0 && now >= handoff_at) {
        if (e->state.compare_exchange_strong(s, s | handoff_bit, std::memory_order_relaxed)) {
          priority = true;  // relaxed: claims the next grant; publishes nothing
        }
        continue;
      }
      if (stop != nullptr && stop->stop_requested()) {
        leave(e, priority);
        return outcome::cancelled;
      }
      // Sleep until woken, until the caller's deadline, or (not yet starving, no
      // hand-off pending) until it is time to claim the hand-off.
      const bool wake_to_claim = !priority && now < handoff_at;
      bool deadline_passed = false;
      if constexpr (std::is_same_v<Deadline, no_deadline>) {
        if (wake_to_claim) {
          detail::wait_until(e->seq, q, handoff_at);
        } else {
          detail::wait(e->seq, q);
        }
      } else {
        if (wake_to_claim && handoff_at < detail::steady_deadline_of(*deadline)) {
          detail::wait_until(e->seq, q, handoff_at);
        } else {
          deadline_passed = !detail::wait_until(e->seq, q, *deadline);
        }
      }
      if (deadline_passed) {
        // One last try: a lock that is free at the deadline is still taken.
        if (try_take(e, shared, priority, true, e->state.load(std::memory_order_relaxed))) {
          wake_fellow_readers(e, shared, priority);
          return outcome::granted;
        }
        leave(e, priority);
        return outcome::timed_out;
      }
    }
  }

  template <bool Shared, class K, class Deadline>
  basic_guard<Shared> acquire(const K& key, wait_kind kind, const Deadline* deadline,
                              const std::stop_token* stop) {
    if (stop != nullptr && stop->stop_requested()) {
      my_stats().cancellations.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistic
      return {};
    }
    const std::uint64_t h = table_.hash_of(key);
    bool created = false;
    entry* e = acquire_ref(key, h, Shared ? 1u : exclusive_bit, created);
    bool contended = false;
    std::chrono::steady_clock::time_point start{};
    if (!created) {
      const outcome result = lock_entry(e, Shared, kind, deadline, stop, contended, start);
      if (result != outcome::granted) {
        drop_ref(e);
        // Relaxed: statistics.
        if (result == outcome::timed_out)
          my_stats().timeouts.fetch_add(1, std::memory_order_relaxed);
        if (result == outcome::cancelled) {
          my_stats().cancellations.fetch_add(1, std::memory_order_relaxed);
        }
        return {};
      }
    }
    return basic_guard<Shared>(this, e, grant(e, created, !Shared, contended, start));
  }

  /// Bookkeeping of a grant: the token, the debug owner, the statistics.
  std::uint64_t grant(entry* e, bool created, bool exclusive, bool contended,
                      std::chrono::steady_clock::time_point start) noexcept {
    const std::uint64_t token = issue_token(e, created, exclusive);
    record_grant(contended, start);
    return token;
  }

  /// The next fencing token of `e` (which counts the grant) and the debug owner.
  std::uint64_t issue_token(entry* e, bool created, bool exclusive) noexcept {
    // Relaxed: grants of one key are ordered by the lock word (A1 after R1/R2), so
    // the accesses to token follow that order; a created entry's token was set
    // before the entry was published. An exclusive holder is alone, so a load and a
    // store suffice; shared holders may be many, so they add.
    // A creator's grant is the entry's first: first_token + 1, whatever readers that
    // joined the new entry before this call have taken since (they add to `token`).
    std::uint64_t token = created ? e->first_token + 1 : e->token.load(std::memory_order_relaxed);
    if (!created) {
      if (exclusive) {
        e->token.store(++token, std::memory_order_relaxed);
      } else {
        token = e->token.fetch_add(1, std::memory_order_relaxed) + 1;
      }
    }
#ifndef NDEBUG
    if (exclusive) e->owner.store(std::this_thread::get_id(), std::memory_order_relaxed);
#endif
    return token;
  }

  template <class Range, class Deadline>
  multi_guard acquire_many(const Range& keys, wait_kind kind, const Deadline* deadline) {
    std::vector<entry*> entries;
    if constexpr (std::ranges::sized_range<const Range>) entries.reserve(std::ranges::size(keys));
    try {
      for (const auto& key : keys) {
        bool created = false;
        entries.push_back(nullptr);  // may throw before the reference is taken
        entries.back() = acquire_ref(key, table_.hash_of(key), 0, created);
      }
    } catch (...) {
      for (entry* e : entries) {
        if (e != nullptr) drop_ref(e);
      }
      throw;
    }
    // Address order is a total order over live entries, and a referenced key's
    // entry cannot change: every thread orders the same entries the same way.
    std::sort(entries.begin(), entries.end(), std::less<entry*>{});
    auto last = entries.begin();
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      if (last != entries.begin() && *it == *(last - 1)) {
        drop_ref(*it);  // a duplicate: we hold another reference to it
      } else {
        *last++ = *it;
      }
    }
    entries.erase(last, entries.end());

    multi_guard out;
    out.map_ = this;
    try {
      out.held_.reserve(entries.size());
    } catch (...) {
      for (entry* e : entries) drop_ref(e);
      throw;
    }
    constexpr std::uint64_t not_contended = ~std::uint64_t{0};
    for (std::size_t i = 0; i < entries.size(); ++i) {
      bool contended = false;
      std::chrono::steady_clock::time_point start{};
      const outcome result =
          lock_entry(entries[i], false, kind, deadline, nullptr, contended, start);
      if (result != outcome::granted) {
        for (std::size_t j = i; j < entries.size(); ++j) drop_ref(entries[j]);
        out.unlock();  // empty now
        if (result == outcome::timed_out) {
          my_stats().timeouts.fetch_add(1, std::memory_order_relaxed);  // relaxed: statistic
        }
        return out;
      }
      // Until every key is held, `token` carries the ns this key waited (or
      // not_contended); the token itself is issued below.
      out.held_.push_back({entries[i], contended ? waited_since(start) : not_contended});
    }
    // Every key is held: only now count the grants (tokens, waits), so that a try form
    // that gave up half-way counts none of the keys it let go again. (Every path
    // returns `out` itself, so it is not moved on return, which would clear the debug
    // owner that issue_token records.)
    for (auto& h : out.held_) {
      const std::uint64_t waited = h.token;
      h.token = issue_token(h.e, false, true);
      if (waited != not_contended) record_wait(waited);
    }
    return out;
  }

#if INTERLOCK_TSAN
  static constexpr int spin_limit = 16;
#else
  static constexpr int spin_limit = 64;
#endif

  table_type table_;
  std::array<stat_stripe, stat_stripes> stats_{};
  std::array<token_floor, floor_stripes> floors_{};
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_KEYED_MUTEX_HPP
