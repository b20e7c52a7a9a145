// interlock/idempotency_guard.hpp: exactly-once effects for retried and duplicated
// requests, and unique claims.
//
// Design note. A client times out and retries a payment, or two copies of one request
// arrive at once, and the charge runs twice. idempotency_guard<Key, Result> runs the
// first call for a key, lets concurrent duplicates wait for it and share its result
// (one shared object, no copy per waiter), replays that result to later retries until
// it expires, and rejects the same key with a different request (a fingerprint
// mismatch) without running anything. unique_claims<Key> is the same table without an
// operation: try_claim(key) succeeds for exactly one caller until the claim is
// released or expires (the double-spend / nullifier case).
//
// The per-key state machine (absent -> in progress -> completed | failed -> expired)
// is `idempotency_record_state` with the pure decision function `decide_idempotent`,
// separate from the in-memory table that stores the records, so that a shared store
// (Redis, PostgreSQL) can hold the same states for several processes.
//
// Storage is detail::keyed_table: replaying a stored result or joining an execution in
// flight takes no lock (a hazard-protected lookup); only creating, expiring, evicting
// or forgetting a record locks its shard. Each shard keeps its completed records in
// completion order, which is both the expiry queue and the eviction order. Records are
// allocated with make_shared, or, with idempotency_options::pooled_records, from the
// guard's own detail::record_pool (under the shard lock that creating one takes
// anyway): faster replays over many stored keys, slower creation at many threads, see
// the option. Off by default, because most calls to a guard are first runs.
//
// When not to use it: across processes (use the Redis store), or when the operation's
// effect is itself idempotent and cheap (just run it).
//
// Requirements: Hash and Equal must not throw (lookups are noexcept), nor Result's
// destructor (records are reclaimed in noexcept code). An operation must not call run
// on its own guard with its own key: the inner call joins the outer one and waits for
// it for ever (as a thread that locks a std::mutex it holds). Copying a Key (or an
// Owner), Hash, Equal and an injected clock run under a shard's internal lock: they
// must not call into the same guard. Result's destructor may run on any thread that
// uses the guard (records are reclaimed by later calls), never while a shard lock is
// held and never before the waiters of a call are woken; it should not block on
// another thread that uses the guard.
//
// Memory ordering: everything the executing call did before it published the outcome
// (the operation's effects and the stored result) is visible to every caller that
// receives that outcome, joined or replayed: the state is published with a release
// store (1) and read with acquire loads (2).
//
// Exceptions: an exception thrown by the operation reaches the executing caller and
// every joined waiter (rethrown from one std::exception_ptr). By default nothing is
// stored, so a later retry runs the operation again; with failure_policy::store the
// failure is replayed until it expires. One exception to "nothing stored": when op
// returned but its value could not be made into the stored Result (a converting or
// moving constructor threw), the failure is stored whatever the policy, since running
// op again would repeat its effect. A record is never left in progress: the
// executing call always publishes an outcome, success or failure, before it returns.
// Hashing the request (sha256_error, or a codec's exception) and std::bad_alloc happen
// before any record is created.
#ifndef INTERLOCK_IDEMPOTENCY_GUARD_HPP
#define INTERLOCK_IDEMPOTENCY_GUARD_HPP

#include <interlock/config.hpp>
#include <interlock/detail/coarse_clock.hpp>
#include <interlock/detail/deadline.hpp>
#include <interlock/detail/hazard_pointer.hpp>
#include <interlock/detail/keyed_table.hpp>
#include <interlock/detail/record_pool.hpp>
#include <interlock/detail/striped_counter.hpp>
#include <interlock/detail/wait_on_word.hpp>
#include <interlock/sha256.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <ratio>
#include <type_traits>
#include <utility>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN

// ============================================================================
// The state machine (store-independent)
// ============================================================================

/// The states of one idempotency key. `absent` and `expired` are the same to a
/// caller: the next call executes.
enum class idempotency_record_state : std::uint32_t {
  absent,
  in_progress,
  completed,
  failed,
  expired
};

/// What happened to one call.
enum class run_status {
  executed,     ///< this call ran the operation
  joined,       ///< waited for the call in flight and shares its result
  replayed,     ///< received the stored result of an earlier call
  mismatch,     ///< the key was used with a different request: nothing ran
  in_progress,  ///< another call is running it and this one did not wait (long enough)
};

/// What to do with a concurrent duplicate.
enum class concurrency_policy {
  wait,    ///< wait (bounded by run_for / run_until) and share the result (singleflight)
  reject,  ///< return run_status::in_progress at once (the Stripe / IETF 409 behaviour)
};

/// What to keep when the operation throws.
enum class failure_policy {
  forget,  ///< store nothing: a later retry runs the operation again (default)
  store,   ///< store the failure and replay it until it expires (Stripe v1)
};

/// The decision for a call, given the stored record (if any).
enum class idempotency_action { execute, join, replay, mismatch, reject };

/// The whole state machine: what a call with `fingerprint` does when the key's record
/// is in `state` with `stored_fingerprint`. Pure; every store uses it.
[[nodiscard]] constexpr idempotency_action decide_idempotent(idempotency_record_state state,
                                                             const digest& stored_fingerprint,
                                                             const digest& fingerprint,
                                                             concurrency_policy policy) noexcept {
  switch (state) {
    case idempotency_record_state::absent:
    case idempotency_record_state::expired:
      return idempotency_action::execute;
    case idempotency_record_state::in_progress:
      if (stored_fingerprint != fingerprint) return idempotency_action::mismatch;
      return policy == concurrency_policy::wait ? idempotency_action::join
                                                : idempotency_action::reject;
    case idempotency_record_state::completed:
    case idempotency_record_state::failed:
      return stored_fingerprint == fingerprint ? idempotency_action::replay
                                               : idempotency_action::mismatch;
  }
  return idempotency_action::execute;
}

/// The fingerprint that identifies a request: content_digest(request), or `request`
/// itself when it is already an interlock::digest. Every store (in-process, Redis)
/// compares fingerprints with it. Throws what hashing throws.
template <class Request>
[[nodiscard]] digest request_fingerprint(const Request& request) {
  if constexpr (std::is_same_v<Request, digest>) {
    return request;
  } else {
    return content_digest(request);
  }
}

/// The result of idempotency_guard::run.
template <class Result>
struct run_outcome {
  run_status status;
  /// The shared result for executed, joined and replayed; empty otherwise.
  std::shared_ptr<const Result> result;

  [[nodiscard]] bool has_result() const noexcept { return result != nullptr; }
  /// The result; precondition has_result().
  const Result& operator*() const noexcept { return *result; }
  const Result* operator->() const noexcept { return result.get(); }
};

/// The default retention clock of idempotency_guard and unique_claims: steady_clock as
/// of the last scheduler tick (CLOCK_MONOTONIC_COARSE on Linux; steady_clock itself
/// elsewhere). Its time_point is std::chrono::steady_clock::time_point, so expiry may
/// come up to one tick (1-10 ms) late, and reading it costs about 5 ns instead of 25 on
/// every replay. Never early: with this clock (and no injected `now`) a record's expiry
/// is counted from steady_clock::now() at completion, which the coarse clock never
/// passes before. Pass std::chrono::steady_clock as `Clock` for exact expiry.
using coarse_steady_clock = detail::coarse_steady_clock;

/// Retention and behaviour of an idempotency_guard or unique_claims.
struct idempotency_options {
  /// How long a completed (or stored failed) record is kept after it completed.
  std::chrono::nanoseconds time_to_live = std::chrono::hours(24);
  /// The most completed records kept; the oldest completed are evicted beyond it,
  /// never one in progress. Enforced per shard: each of the `shards` shards keeps at
  /// most ceil(capacity / shards), evicting its own oldest (set shards = 1 for an
  /// exact global order). At least 1 per shard: 0 would evict each record as it
  /// completes (and let every unique_claims caller win).
  std::size_t capacity = std::numeric_limits<std::size_t>::max();
  concurrency_policy on_concurrent = concurrency_policy::wait;
  failure_policy on_failure = failure_policy::forget;
  std::size_t shards = 64;
  /// idempotency_guard only: allocate records from a pool of the guard's own (see
  /// detail/record_pool.hpp) instead of make_shared. With many stored keys and mostly
  /// replays, turn it on: records kept together (2 MiB chunks advised for huge pages)
  /// replay faster than records spread through the heap (over 100,000 keys: 1.08x-1.12x
  /// at 1-2 threads on a 2-core AMD VM; about 1.15x, 0.95x-1.38x, at 1-16 threads on a
  /// 16-core Xeon). It costs creation on many cores: a freed record is reused by the
  /// next record of its shard, created by any thread, where malloc hands it to the
  /// thread that freed it, whose cache still holds it (first runs 0.77x-0.93x at 1-16
  /// threads on the Xeon; within noise on the VM). And the pool keeps its chunks until
  /// the guard is destroyed and every result it handed out is released.
  bool pooled_records = false;
};

/// Retention of a unique_claims: what it keeps and for how long. Its own type, because
/// a claim's defaults are not a cached result's: a nullifier spent once must stay spent,
/// so by default claims never expire and none is evicted (idempotency_options' 24 h time
/// to live would let a double spend through a day later).
struct claim_options {
  /// How long a claim is kept after it was granted; nanoseconds::max() (the default):
  /// until released.
  std::chrono::nanoseconds time_to_live = std::chrono::nanoseconds::max();
  /// The most claims kept. Beyond it the oldest are evicted, and an evicted key can be
  /// claimed again: set it only where that is acceptable. Per shard, as in
  /// idempotency_options; at least 1 per shard.
  std::size_t capacity = std::numeric_limits<std::size_t>::max();
  std::size_t shards = 64;
};

/// Counters of an idempotency_guard since construction (each read with a relaxed
/// load: exact per counter, not a snapshot across counters).
struct idempotency_stats {
  std::uint64_t executed = 0;
  std::uint64_t joined = 0;
  std::uint64_t replayed = 0;
  std::uint64_t mismatches = 0;
  std::uint64_t in_progress_rejections = 0;
  std::uint64_t failures = 0;
  std::uint64_t expirations = 0;
  std::uint64_t evictions = 0;
  std::uint64_t entries = 0;  ///< records stored now (in progress and completed)
  /// With pooled_records, the bytes the guard's record pool holds from the system: the
  /// records stored now, those retired but not yet reclaimed, those freed and kept for
  /// reuse, the unused rest of each shard's run and of the last chunk. Returned to the
  /// system once the guard is destroyed, every result it handed out released and every
  /// retired record reclaimed. 0 without pooled_records.
  std::uint64_t record_bytes = 0;
};

/// Counters of a unique_claims since construction.
struct claim_stats {
  std::uint64_t granted = 0;
  std::uint64_t refused = 0;
  std::uint64_t released = 0;
  std::uint64_t expirations = 0;
  std::uint64_t evictions = 0;
  std::uint64_t entries = 0;  ///< claims held now
};

namespace detail {

/// A stored record with an expiry and a place in its shard's completion order.
template <class Key>
struct retained_entry : keyed_entry<Key> {
  using keyed_entry<Key>::keyed_entry;
  /// Expiry in ticks of the clock since its epoch. Written before the record is
  /// published as completed, immutable after.
  std::int64_t expires_at = std::numeric_limits<std::int64_t>::max();
  // Completion order, guarded by the shard lock.
  retained_entry* older = nullptr;
  retained_entry* newer = nullptr;
  bool in_order = false;
};

/// The retention machinery shared by idempotency_guard and unique_claims: a keyed
/// table whose shards keep their completed entries oldest first, expire them and
/// evict beyond a capacity. Entries to retire are collected while a shard is locked
/// and retired after it is unlocked (a reclamation scan never runs under the lock).
/// They are collected in an intrusive list (retire_list), so collecting never
/// allocates and never fails.
template <class Key, class Entry, class Hash, class Equal, class Clock>
class retained_table {
 public:
  using time_point = typename Clock::time_point;
  using table_type = keyed_table<Key, Entry, Hash, Equal>;
  using locked_shard = typename table_type::locked_shard;

  retained_table(const idempotency_options& options, std::function<time_point()> now)
      : options_(options),
        now_(std::move(now)),
        table_(options.shards),
        orders_(table_.shard_count()),
        per_shard_capacity_(per_shard(options.capacity, table_.shard_count())) {}

  table_type& table() noexcept { return table_; }
  const table_type& table() const noexcept { return table_; }
  const idempotency_options& options() const noexcept { return options_; }

  [[nodiscard]] std::int64_t now_ticks() const {
    return (now_ ? now_() : Clock::now()).time_since_epoch().count();
  }

  /// now + time_to_live in Clock ticks: rounded up to a whole tick (a record never
  /// expires before its time to live), saturating at the ends of the tick range.
  [[nodiscard]] std::int64_t expiry_from_now() const {
    return expiry_from(expiry_base(now_ticks()));
  }

  /// The time to count an expiry from, given `now` just read from the clock: `now`,
  /// except with the default coarse clock (no injected `now`), which may trail real
  /// time by a tick: then steady_clock::now() (same epoch and ticks, exact), so that a
  /// record never expires before its time to live, only up to one tick after it.
  [[nodiscard]] std::int64_t expiry_base(std::int64_t now) const noexcept {
    if constexpr (std::is_same_v<Clock, coarse_steady_clock>) {
      if (!now_) return std::chrono::steady_clock::now().time_since_epoch().count();
    }
    return now;
  }

  /// `now` (in Clock ticks) + time_to_live, as expiry_from_now.
  [[nodiscard]] std::int64_t expiry_from(std::int64_t now) const noexcept {
    return add_ticks_saturating<typename Clock::duration::period>(now, options_.time_to_live);
  }

  static bool expired(const Entry& e, std::int64_t now) noexcept { return now >= e.expires_at; }

  /// Entries unlinked under a shard lock, to retire once it is unlocked. Chained
  /// through their retire link, which is free until they are retired, so collecting
  /// never allocates. Declare it before locking: its destructor retires what is left,
  /// after the unlock, also when an exception leaves the scope.
  class retire_list {
   public:
    retire_list() = default;
    retire_list(const retire_list&) = delete;
    retire_list& operator=(const retire_list&) = delete;
    ~retire_list() { retire_all(); }

    void push(Entry* e) noexcept {
      e->next_retired = head_;
      head_ = e;
      ++size_;
    }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

    /// Hands every collected entry to the hazard domain. Call with no lock held.
    void retire_all() noexcept {
      while (head_ != nullptr) {
        Entry* e = static_cast<Entry*>(head_);
        head_ = e->next_retired;  // read before retiring reuses the link
        table_type::retire(e);
      }
      size_ = 0;
    }

   private:
    retirable* head_ = nullptr;
    std::size_t size_ = 0;
  };

  /// Under the shard lock: appends a completed entry to the shard's order and evicts
  /// the oldest beyond capacity into `retired`. Never allocates, never throws.
  void complete_locked(locked_shard& shard, Entry* e, retire_list& retired) noexcept {
    order& o = orders_[shard.index()];
    e->in_order = true;
    e->older = o.newest;
    e->newer = nullptr;
    (o.newest != nullptr ? o.newest->newer : o.oldest) = e;
    o.newest = e;
    ++o.size;
    while (o.size > per_shard_capacity_) {
      auto* victim = static_cast<Entry*>(o.oldest);
      remove_locked(shard, victim, retired);
      counters_.bump(evicted);
    }
  }

  /// Under the shard lock: removes the shard's expired entries (oldest first).
  void purge_locked(locked_shard& shard, std::int64_t now, retire_list& retired) noexcept {
    order& o = orders_[shard.index()];
    while (o.oldest != nullptr && expired(*static_cast<Entry*>(o.oldest), now)) {
      expire_locked(shard, static_cast<Entry*>(o.oldest), retired);
    }
  }

  /// Under the shard lock: removes one expired entry found by key.
  void expire_locked(locked_shard& shard, Entry* e, retire_list& retired) noexcept {
    remove_locked(shard, e, retired);
    counters_.bump(expired_count);
  }

  /// Under the shard lock: unlinks `e` and collects it for retirement after the unlock.
  void remove_locked(locked_shard& shard, Entry* e, retire_list& retired) noexcept {
    erase_locked(shard, e);
    retired.push(e);
  }

  /// Under the shard lock: the entry for `key`, or nullptr when there is none or
  /// is_expired(entry) holds (the entry is then removed and counted as an expiration).
  template <class K, class IsExpired>
  Entry* find_unexpired_locked(locked_shard& shard, const K& key, retire_list& retired,
                               IsExpired&& is_expired) noexcept {
    Entry* e = shard.find(key);
    if (e != nullptr && is_expired(static_cast<const Entry&>(*e))) {
      expire_locked(shard, e, retired);
      return nullptr;
    }
    return e;
  }

  /// Under the shard lock: unlinks `e` from the table and from the completion order.
  void erase_locked(locked_shard& shard, Entry* e) noexcept {
    if (e->in_order) {
      order& o = orders_[shard.index()];
      (e->older != nullptr ? e->older->newer : o.oldest) = e->newer;
      (e->newer != nullptr ? e->newer->older : o.newest) = e->older;
      e->in_order = false;
      --o.size;
    }
    shard.erase(e);
  }

  /// Removes every expired entry now. O(shards + expired).
  std::size_t purge_expired() {
    std::size_t purged = 0;
    retire_list retired;
    const std::int64_t now = now_ticks();
    for (std::size_t i = 0; i < table_.shard_count(); ++i) {
      {
        auto shard = table_.lock_shard(table_.shard_hash(i));
        purge_locked(shard, now, retired);
      }
      purged += retired.size();
      retired.retire_all();
    }
    return purged;
  }

  [[nodiscard]] std::uint64_t expirations() const noexcept {
    return counters_.total(expired_count);
  }
  [[nodiscard]] std::uint64_t evictions() const noexcept { return counters_.total(evicted); }

 private:
  struct alignas(cache_line_size) order {
    retained_entry<Key>* oldest = nullptr;
    retained_entry<Key>* newest = nullptr;
    std::size_t size = 0;
  };

  static std::size_t per_shard(std::size_t capacity, std::size_t shards) noexcept {
    if (capacity == std::numeric_limits<std::size_t>::max()) return capacity;
    if (capacity == 0) return 1;  // see idempotency_options::capacity
    return capacity / shards + (capacity % shards != 0 ? 1 : 0);
  }

  idempotency_options options_;
  std::function<time_point()> now_;  // empty: Clock::now
  table_type table_;
  std::vector<order> orders_;
  std::size_t per_shard_capacity_;
  enum counter : std::size_t { expired_count, evicted, count };
  striped_counters<count> counters_;
};

}  // namespace detail

// ============================================================================
// idempotency_guard
// ============================================================================

/// Runs an operation at most once per key (until its record expires) and gives every
/// caller with that key the same outcome.
///
/// Thread-safety: every member function is thread-safe.
/// Progress: replaying a stored result and detecting a mismatch take no lock (one
/// hashed, hazard-protected lookup; lock-free); creating a record locks one shard
/// briefly; joining blocks until the execution in flight publishes its outcome or the
/// caller's deadline passes.
/// Complexity: O(1) expected per call, plus the expired records a call purges.
/// Memory: the result lives inside its record (one allocation with the record's
/// reference counts), and the shared_ptr a caller receives shares ownership of that
/// record: a result held after its record was evicted, expired or forgotten (or after
/// the guard is destroyed) stays valid, and the record's memory is freed when the last
/// holder lets go. Replaying hands out that pointer: no copy, no allocation. With
/// idempotency_options::pooled_records, records come from the guard's pool
/// (detail/record_pool.hpp): a freed record's memory is reused by a later record, and
/// the pool's chunks (the first holds a run per shard, later ones 2 MiB) go back to the
/// system when the guard is destroyed, every result it handed out released and every
/// retired record reclaimed (one record still held keeps the whole pool);
/// stats().record_bytes says how much it holds. A record larger than 2 KiB (a large
/// Result) or aligned to more than 64 bytes is allocated with operator new even then.
/// Expiry is read from `Clock` (coarse_steady_clock by default: up to one tick late).
template <class Key, class Result, class Hash = key_hash<Key>, class Equal = std::equal_to<>,
          class Clock = coarse_steady_clock>
class idempotency_guard {
  struct entry : detail::retained_entry<Key> {
    template <class K>
    entry(K&& k, std::uint64_t h, const digest& fp)
        : detail::retained_entry<Key>(std::forward<K>(k), h), fingerprint(fp) {
      // Reclaiming drops the table's reference; a caller still holding the result
      // keeps the entry (its storage) alive until it lets go.
      this->reclaim = [](detail::retirable* self) noexcept {
        const std::shared_ptr<entry> last = std::move(static_cast<entry*>(self)->owner);
      };
    }
    const digest fingerprint;
    detail::wait_word state{static_cast<std::uint32_t>(idempotency_record_state::in_progress)};
    std::atomic<std::uint32_t> waiters{0};
    // The table's reference to this entry, set when it is linked and dropped when it
    // is reclaimed. The entry is allocated with its reference counts (make_record), so
    // they are in its first or the next cache line: handing out the result (an aliasing
    // shared_ptr to `result` below) costs no cache miss beyond the lookup's own.
    std::shared_ptr<entry> owner;
    // Written by the executing call before the state is published (1); immutable after.
    std::optional<Result> result;
    std::exception_ptr failure;
    // The failure is kept for replay (failure_policy::store, or a result that could not
    // be stored after op ran); else the record is being removed. Written before the
    // state is published; immutable after.
    bool failure_stored = false;
  };
  using retained = detail::retained_table<Key, entry, Hash, Equal, Clock>;
  using steady_deadline = detail::steady_deadline;

 public:
  using key_type = Key;
  using result_type = Result;
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using outcome = run_outcome<Result>;

  /// `now` replaces Clock::now for expiry (tests pass a fake clock; nothing sleeps).
  /// It must not throw: it is also read when a completed operation's result is
  /// stored, where an exception could not be reported (std::terminate).
  explicit idempotency_guard(idempotency_options options = {},
                             std::function<time_point()> now = nullptr)
      : records_(options.pooled_records ? std::make_unique<detail::record_pool::owner>(
                                              detail::keyed_table_shards(options.shards))
                                        : nullptr),
        store_(options, std::move(now)) {}

  idempotency_guard(const idempotency_guard&) = delete;
  idempotency_guard& operator=(const idempotency_guard&) = delete;

  /// Precondition: no other thread uses the guard. Records still stored are freed (or
  /// kept by the results callers hold); records this thread retired earlier are
  /// reclaimed now (so they do not keep a record pool alive).
  ~idempotency_guard() { reclaim_retired(); }

  /// Runs op() -> Result for the first call with `key`; see run_status for the other
  /// cases. `request` identifies the request: its fingerprint is
  /// content_digest(request), or `request` itself when it is an interlock::digest.
  /// A concurrent duplicate waits without a deadline (or is rejected, per policy).
  /// Throws what op throws (to the executing and every joined caller), and what
  /// hashing the request or allocating a record throws (before anything is recorded).
  template <class K, class Request, class Op>
  outcome run(const K& key, const Request& request, Op&& op) {
    return run_impl(key, fingerprint_of(request), op, nullptr);
  }

  /// As run, but a concurrent duplicate waits at most `timeout`, then returns
  /// run_status::in_progress.
  template <class K, class Request, class Rep, class Period, class Op>
  outcome run_for(const K& key, const Request& request, std::chrono::duration<Rep, Period> timeout,
                  Op&& op) {
    const steady_deadline deadline = detail::deadline_after(timeout);
    return run_impl(key, fingerprint_of(request), op, &deadline);
  }

  /// As run_for, with a deadline on any clock (steady_clock deadlines are used as they
  /// are; others are converted once to the time left, saturating, so
  /// time_point<C, hours>::max() waits as long as it takes).
  template <class K, class Request, class DeadlineClock, class Duration, class Op>
  outcome run_until(const K& key, const Request& request,
                    const std::chrono::time_point<DeadlineClock, Duration>& deadline, Op&& op) {
    const steady_deadline steady = detail::steady_deadline_of(deadline);
    return run_impl(key, fingerprint_of(request), op, &steady);
  }

  /// Drops the completed (or stored failed) record for `key`, so the next call runs.
  /// Returns false when there is none (an expired record counts as none: it is removed
  /// and counted as an expiration), or when the key is in progress (never dropped:
  /// that would let a second execution start beside the first).
  /// Blocking (one shard lock).
  template <class K>
  bool forget(const K& key) {
    const std::uint64_t h = store_.table().hash_of(key);
    typename retained::retire_list retired;
    auto shard = store_.table().lock_shard(h);
    entry* victim =
        store_.find_unexpired_locked(shard, key, retired, expired_at(store_.now_ticks()));
    if (victim == nullptr || state_of(*victim) == idempotency_record_state::in_progress) {
      return false;
    }
    store_.remove_locked(shard, victim, retired);
    return true;
  }

  /// Removes every expired record now (expired records are also removed as their
  /// shard is used). Returns how many. Blocking; O(shards + expired).
  std::size_t purge_expired() { return store_.purge_expired(); }

  /// The counters; `entries` locks each shard in turn (O(shards)), `record_bytes` the
  /// record pool's mutex.
  [[nodiscard]] idempotency_stats stats() const {
    idempotency_stats s;
    s.executed = counters_.total(executed);
    s.joined = counters_.total(joined);
    s.replayed = counters_.total(replayed);
    s.mismatches = counters_.total(mismatches);
    s.in_progress_rejections = counters_.total(rejections);
    s.failures = counters_.total(failures);
    s.expirations = store_.expirations();
    s.evictions = store_.evictions();
    s.entries = store_.table().size();
    s.record_bytes = records_ != nullptr ? records_->reserved_bytes() : 0;
    return s;
  }

  /// Records stored now (in progress and completed). O(shards).
  [[nodiscard]] std::size_t size() const { return store_.table().size(); }

 private:
  /// The request's fingerprint (request_fingerprint), as a reference when the request
  /// already is a digest: no 32-byte copy on every call. Lives to the end of the
  /// caller's full expression.
  template <class Request>
  static decltype(auto) fingerprint_of(const Request& request) {
    if constexpr (std::is_same_v<Request, digest>) {
      return (request);  // parenthesized: decltype(auto) deduces const digest&
    } else {
      return request_fingerprint(request);
    }
  }

  static idempotency_record_state state_of(const entry& e) noexcept {
    // (2) acquire: pairs with the publication (1); the result and failure written
    // before it are visible.
    return static_cast<idempotency_record_state>(e.state.load(std::memory_order_acquire));
  }

  /// A predicate for find_unexpired_locked: the record is visibly expired at `now`
  /// (completed or failed, past its time to live; never one in progress).
  auto expired_at(std::int64_t now) const noexcept {
    return [this, now](const entry& e) noexcept {
      return visible_state(e, now) == idempotency_record_state::expired;
    };
  }

  idempotency_record_state visible_state(const entry& e, std::int64_t now) const noexcept {
    const auto s = state_of(e);
    const bool done =
        s == idempotency_record_state::completed || s == idempotency_record_state::failed;
    return done && retained::expired(e, now) ? idempotency_record_state::expired : s;
  }

  template <class K, class Op>
  outcome run_impl(const K& key, const digest& fingerprint, Op& op,
                   const steady_deadline* deadline) {
    auto& table = store_.table();
    const std::uint64_t h = table.hash_of(key);
    typename retained::table_type::lookup_guards guards;
    // Fast path, no lock: replay, mismatch, join or reject on a live record.
    if (entry* e = table.find(guards, key, h)) {
      if (is_replayable(*e, fingerprint)) {
        counters_.bump(replayed);
        return outcome{run_status::replayed, shared_result(*e)};
      }
      if (auto answered = answer(*e, fingerprint, deadline)) return std::move(*answered);
    }
    // Slow path: under the shard lock, find the record again or create ours.
    for (;;) {
      entry* existing = nullptr;
      entry* mine = nullptr;
      typename retained::retire_list retired;
      {
        auto shard = table.lock_shard(h);
        const std::int64_t now = store_.now_ticks();
        store_.purge_locked(shard, now, retired);
        existing = store_.find_unexpired_locked(shard, key, retired, expired_at(now));
        if (existing == nullptr) {
          auto fresh = make_record(shard.index(), key, h, fingerprint);
          shard.insert(fresh.get());  // may throw (growing the shard) before linking
          mine = fresh.get();
          mine->owner = std::move(fresh);  // the table's reference, dropped by reclaim
        }
        // Pinned while the lock is held: it can only be unlinked under this lock.
        guards.found.protect_stable(existing != nullptr ? existing : mine);
      }
      // Our record is linked in progress, and duplicates may already wait for it:
      // what we purged is retired (which may run a ~Result, user code) only once op's
      // outcome is published and they are woken, when `retired` goes out of scope.
      if (mine != nullptr) return execute(*mine, op);
      retired.retire_all();
      if (auto answered = answer(*existing, fingerprint, deadline)) return std::move(*answered);
      // It expired or a forgotten failure was removed meanwhile: try again.
    }
  }

  /// A new record for `key` in table shard `shard`, with its reference counts in one
  /// block: from that shard's pool with pooled_records (from operator new for a record
  /// larger than 2 KiB or aligned to more than 64 bytes), else from make_shared.
  /// Called under the shard lock. Throws std::bad_alloc.
  template <class K>
  std::shared_ptr<entry> make_record(std::size_t shard, const K& key, std::uint64_t h,
                                     const digest& fingerprint) {
    if (records_ == nullptr) return std::make_shared<entry>(Key(key), h, fingerprint);
    return std::allocate_shared<entry>(detail::record_pool_allocator<entry>(records_->at(shard)),
                                       Key(key), h, fingerprint);
  }

  /// The common case, decided first and inline: `e` completed for this fingerprint and
  /// has not expired, so decide_idempotent says replay. (Every other case, including a
  /// stored failure, goes through answer.) Measured on replays over 100,000 keys,
  /// together with fingerprint_of: 309 -> 265 instructions per call (callgrind); the
  /// time it saves is within the 2-core VM's noise (two sets of 6 alternating runs at
  /// 2 threads: 4.8x -> 5.4x and 5.6x -> 5.3x a global map).
  bool is_replayable(const entry& e, const digest& fingerprint) const {
    return state_of(e) == idempotency_record_state::completed && e.fingerprint == fingerprint &&
           !retained::expired(e, store_.now_ticks());
  }

  /// The answer for a call that found record `e`, or empty when this call must execute.
  std::optional<outcome> answer(entry& e, const digest& fingerprint,
                                const steady_deadline* deadline) {
    const auto state = visible_state(e, store_.now_ticks());
    switch (decide_idempotent(state, e.fingerprint, fingerprint, store_.options().on_concurrent)) {
      case idempotency_action::mismatch:
        counters_.bump(mismatches);
        return outcome{run_status::mismatch, nullptr};
      case idempotency_action::reject:
        counters_.bump(rejections);
        return outcome{run_status::in_progress, nullptr};
      case idempotency_action::replay:
        if (state == idempotency_record_state::failed && !e.failure_stored) {
          return std::nullopt;  // a failure being removed, not stored: run again
        }
        counters_.bump(replayed);
        return deliver(e, run_status::replayed);
      case idempotency_action::join:
        if (!wait_for_outcome(e, deadline)) {
          counters_.bump(rejections);
          return outcome{run_status::in_progress, nullptr};
        }
        counters_.bump(joined);
        return deliver(e, run_status::joined);
      case idempotency_action::execute:
        break;
    }
    return std::nullopt;
  }

  /// The outcome of a completed record; rethrows a failed record's exception.
  static outcome deliver(const entry& e, run_status status) {
    if (state_of(e) == idempotency_record_state::failed) std::rethrow_exception(e.failure);
    return outcome{status, shared_result(e)};
  }

  /// The stored result of a completed `e` (protected by the caller): an aliasing
  /// pointer that shares ownership of the entry, so it stays valid after the record is
  /// evicted, expired or forgotten.
  static std::shared_ptr<const Result> shared_result(const entry& e) noexcept {
    return std::shared_ptr<const Result>(e.owner, std::addressof(*e.result));
  }

  /// Waits until `e` leaves in_progress; false when the deadline passed first.
  bool wait_for_outcome(entry& e, const steady_deadline* deadline) {
    constexpr auto in_progress = static_cast<std::uint32_t>(idempotency_record_state::in_progress);
    while (state_of(e) == idempotency_record_state::in_progress) {
      // (3) seq_cst, with the publisher's (1) and (4): either the publisher sees this
      // waiter and wakes it, or the futex sees the published state and returns.
      e.waiters.fetch_add(1, std::memory_order_seq_cst);
      bool in_time = true;
      if (deadline == nullptr) {
        detail::wait(e.state, in_progress);
      } else {
        in_time = detail::wait_until(e.state, in_progress, *deadline);
      }
      e.waiters.fetch_sub(1, std::memory_order_relaxed);  // a count; the futex orders
      if (!in_time) return state_of(e) != idempotency_record_state::in_progress;
    }
    return true;
  }

  void publish(entry& e, idempotency_record_state state) noexcept {
    // (1) seq_cst (a release, and ordered before (4)): pairs with (2) and (3).
    e.state.store(static_cast<std::uint32_t>(state), std::memory_order_seq_cst);
  }

  static void wake_waiters(entry& e) noexcept {
    if (e.waiters.load(std::memory_order_seq_cst) > 0) detail::wake_all(e.state);  // (4)
  }

  template <class Op>
  outcome execute(entry& e, Op& op) {
    bool op_returned = false;  // then a throw below comes from storing op's value
    try {
      decltype(auto) value = std::invoke(op);
      op_returned = true;
      e.result.emplace(std::forward<decltype(value)>(value));
    } catch (...) {
      // A result that could not be stored after op ran is stored as a failure, whatever
      // the policy: running op again would repeat its effect.
      fail(e, std::current_exception(), op_returned);
      throw;
    }
    counters_.bump(executed);
    std::shared_ptr<const Result> result = shared_result(e);
    finish(e, idempotency_record_state::completed);
    return outcome{run_status::executed, std::move(result)};
  }

  /// Publishes a completed (or stored failed) record: it enters its shard's
  /// completion order, which may evict older records.
  void finish(entry& e, idempotency_record_state state) noexcept {
    typename retained::retire_list retired;
    {
      auto shard = store_.table().lock_shard(e.hash);
      // Read under the lock: the shard's completion order must also be expiry order,
      // or a purge (oldest first) stops at a later record before an expired one.
      e.expires_at = store_.expiry_from_now();
      store_.complete_locked(shard, &e, retired);
      publish(e, state);
    }
    wake_waiters(e);
    retired.retire_all();
  }

  void fail(entry& e, std::exception_ptr failure, bool store_anyway = false) noexcept {
    counters_.bump(failures);
    e.failure = std::move(failure);
    if (store_anyway || store_.options().on_failure == failure_policy::store) {
      e.failure_stored = true;
      finish(e, idempotency_record_state::failed);
      return;
    }
    {
      auto shard = store_.table().lock_shard(e.hash);
      store_.erase_locked(shard, &e);  // a retry runs again
      publish(e, idempotency_record_state::failed);
    }
    wake_waiters(e);
    retained::table_type::retire(&e);  // joined waiters still hold hazard pointers
  }

  enum counter : std::size_t {
    executed,
    joined,
    replayed,
    mismatches,
    rejections,
    failures,
    count
  };
  // The records' memory, one pool shard per table shard. Declared before store_, so
  // it outlives the table, whose destruction frees the records it still holds.
  std::unique_ptr<detail::record_pool::owner> records_;  // with options.pooled_records
  retained store_;
  detail::striped_counters<count> counters_;  // bumped on every call: striped per thread
};

// ============================================================================
// unique_claims
// ============================================================================

/// Claims that succeed for exactly one caller per key, until released or expired
/// (the double-spend / nullifier case). A claim can carry an owner, inspected with
/// owner_of. Retention: by default claims never expire (time_to_live = max) and are
/// never evicted; with a capacity, the oldest claims are evicted (and can then be
/// claimed again): choose a capacity only where that is acceptable.
///
/// Thread-safety: every member function is thread-safe. Progress: a refused claim,
/// and is_claimed and owner_of on a claimed key, take no lock (lock-free lookup); a
/// miss is confirmed under one shard lock, and granting or releasing locks one shard.
template <class Key, class Owner = std::string, class Hash = key_hash<Key>,
          class Equal = std::equal_to<>, class Clock = coarse_steady_clock>
class unique_claims {
  struct entry : detail::retained_entry<Key> {
    template <class K>
    entry(K&& k, std::uint64_t h, std::optional<Owner> o)
        : detail::retained_entry<Key>(std::forward<K>(k), h), owner(std::move(o)) {
      this->reclaim = [](detail::retirable* self) noexcept { delete static_cast<entry*>(self); };
    }
    const std::optional<Owner> owner;
  };
  using retained = detail::retained_table<Key, entry, Hash, Equal, Clock>;

 public:
  using time_point = typename Clock::time_point;

  /// The default options: claims never expire and none is evicted.
  static claim_options default_options() { return {}; }

  /// `now` replaces Clock::now for expiry (tests pass a fake clock; it must not throw).
  explicit unique_claims(claim_options options = {}, std::function<time_point()> now = nullptr)
      : store_(retention_of(options), std::move(now)) {}

  /// True for exactly one caller per key until release(key) or expiry. Lock-free
  /// when the key is already claimed; otherwise locks one shard. Throws only
  /// std::bad_alloc (or what copying the key or owner throws), claiming nothing.
  template <class K>
  [[nodiscard]] bool try_claim(const K& key, std::optional<Owner> owner = std::nullopt) {
    auto& table = store_.table();
    const std::uint64_t h = table.hash_of(key);
    {
      typename retained::table_type::lookup_guards guards;
      if (entry* e = table.find(guards, key, h);
          e != nullptr && !retained::expired(*e, store_.now_ticks())) {
        counters_.bump(refused);
        return false;
      }
    }
    typename retained::retire_list retired;
    bool granted_now = false;
    {
      auto shard = table.lock_shard(h);
      const std::int64_t now = store_.now_ticks();
      store_.purge_locked(shard, now, retired);
      if (store_.find_unexpired_locked(shard, key, retired, expired_at(now)) == nullptr) {
        auto fresh = std::make_unique<entry>(Key(key), h, std::move(owner));
        fresh->expires_at = store_.expiry_from(store_.expiry_base(now));  // `now`, read once
        shard.insert(fresh.get());
        store_.complete_locked(shard, fresh.release(), retired);
        granted_now = true;
      }
    }
    retired.retire_all();
    counters_.bump(granted_now ? granted : refused);
    return granted_now;
  }

  /// Releases the claim on `key` so it can be claimed again, whoever holds it. False
  /// when not claimed (an expired claim is removed and counted as an expiration).
  /// Where claims lapse (a time to live, a capacity), prefer release(key, owner): a
  /// caller whose claim lapsed would otherwise release the next claimant's.
  /// Blocking (one shard lock).
  template <class K>
  bool release(const K& key) {
    return release_if(key, [](const entry&) { return true; });
  }

  /// Releases the claim on `key` only when it is live and was made with `owner`. False
  /// otherwise (not claimed, expired, or claimed by another owner or without one).
  /// Blocking (one shard lock).
  template <class K>
  bool release(const K& key, const Owner& owner) {
    return release_if(key, [&owner](const entry& e) { return e.owner && *e.owner == owner; });
  }

  /// True when `key` is claimed and the claim has not expired. Lock-free when it is
  /// claimed; a miss is confirmed under the shard lock (a lookup can miss while the
  /// shard grows).
  template <class K>
  [[nodiscard]] bool is_claimed(const K& key) const {
    typename retained::table_type::lookup_guards guards;
    const entry* e = find_live(guards, key);
    return e != nullptr;
  }

  /// The owner recorded with the claim on `key`: empty when unclaimed or claimed
  /// without an owner. Copies the owner. Lock-free when claimed, as is_claimed.
  template <class K>
  [[nodiscard]] std::optional<Owner> owner_of(const K& key) const {
    typename retained::table_type::lookup_guards guards;
    const entry* e = find_live(guards, key);
    return e != nullptr ? e->owner : std::nullopt;
  }

  std::size_t purge_expired() { return store_.purge_expired(); }

  [[nodiscard]] claim_stats stats() const {
    claim_stats s;
    s.granted = counters_.total(granted);
    s.refused = counters_.total(refused);
    s.released = counters_.total(released);
    s.expirations = store_.expirations();
    s.evictions = store_.evictions();
    s.entries = store_.table().size();
    return s;
  }

  [[nodiscard]] std::size_t size() const { return store_.table().size(); }

 private:
  static idempotency_options retention_of(const claim_options& options) {
    idempotency_options retention;
    retention.time_to_live = options.time_to_live;
    retention.capacity = options.capacity;
    retention.shards = options.shards;
    return retention;
  }

  template <class K, class Releasable>
  bool release_if(const K& key, Releasable&& releasable) {
    const std::uint64_t h = store_.table().hash_of(key);
    typename retained::retire_list retired;  // retired after the shard unlocks
    auto shard = store_.table().lock_shard(h);
    entry* victim =
        store_.find_unexpired_locked(shard, key, retired, expired_at(store_.now_ticks()));
    if (victim == nullptr || !releasable(*victim)) return false;
    store_.remove_locked(shard, victim, retired);
    counters_.bump(released);
    return true;
  }

  /// A predicate for find_unexpired_locked: the claim has expired at `now`.
  static auto expired_at(std::int64_t now) noexcept {
    return [now](const entry& e) noexcept { return retained::expired(e, now); };
  }

  template <class K>
  const entry* find_live(typename retained::table_type::lookup_guards& guards, const K& key) const {
    auto& table = store_.table();
    const std::uint64_t h = table.hash_of(key);
    if (entry* e = table.find(guards, key, h);
        e != nullptr && !retained::expired(*e, store_.now_ticks())) {
      return e;
    }
    // A false miss is possible while the shard grows: confirm under the lock.
    auto shard = table.lock_shard(h);
    entry* e = shard.find(key);
    if (e == nullptr || retained::expired(*e, store_.now_ticks())) return nullptr;
    guards.found.protect_stable(e);
    return e;
  }

  enum counter : std::size_t { granted, refused, released, count };
  mutable retained store_;  // lookups from const members lock shards
  detail::striped_counters<count> counters_;
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_IDEMPOTENCY_GUARD_HPP
