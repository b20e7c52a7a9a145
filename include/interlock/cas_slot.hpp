// interlock/cas_slot.hpp: a lock-free slot whose value carries its SHA-256 content
// digest (its ETag) and a logical stamp; writers commit only if the content they
// read is still current.
//
// Design note. Concurrent read-modify-write loses updates when each writer overwrites
// what another wrote. A cas_slot<T> holds one immutable node {value, digest, stamp}
// behind an atomic pointer. A writer builds its new node (hashing the new content)
// before the atomic step, then publishes it with one compare-and-swap that succeeds
// only if the node it checked is still current. compare_exchange checks *content
// identity* (the digest, like HTTP If-Match or an S3 conditional write): writing back
// content identical to what was read leaves the digest unchanged, so a
// compare_exchange against that digest still succeeds (ETag semantics: ABA on content
// is by design; use the stamp, or update(), when any intervening commit matters).
//
// Readers never wait for a writer, never hash and never see a torn value: load()
// protects the current node with a hazard pointer (see detail/hazard_pointer.hpp) and
// returns a move-only snapshot that keeps that node alive until the snapshot is
// destroyed. (A thread that holds more snapshots at once than ever before allocates a
// hazard record, once: the only call into the allocator on the read path.)
// Replaced nodes are reclaimed once no snapshot holds them: never freed under a
// reader, never leaked, and at most a bounded number wait per thread.
//
// Stamps: every commit takes a stamp from a lamport_clock, the slot's own by default
// or one shared by several slots, so that stamps order commits across them. Stamps of
// one slot strictly increase, so waiting for "a stamp other than the one I saw"
// cannot miss an A -> B -> A change. Stamps stay below lamport_clock::max_time: once a
// clock saturates (only a corrupt or hostile remote stamp passed to its witness() can
// get it there), commits throw stamp_overflow_error rather than reuse a stamp.
//
// When not to use it: for a plain counter (std::atomic is faster), for a value that
// is written far more often than read and is expensive to hash, or when writers must
// queue rather than retry (use keyed_mutex).
//
// Memory ordering: everything a writer did before a successful commit (including
// building the value) is visible to a reader whose load() returns that commit's
// snapshot: the publishing CAS is a release and the reader's validating load an
// acquire. Commits to one slot are totally ordered (the CAS on one atomic), and that
// order agrees with their stamps. Waiting: a waiter registers, then reads the node
// pointer with a seq_cst load; a commit's seq_cst CAS is followed by a seq_cst read of the
// waiter count. One of the two sees the other, so no wake-up is lost, and a commit
// with nobody waiting touches no waiter state beyond that one load. Waiters are woken
// right after the CAS, before the replaced node is retired: retiring may run an older
// value's destructor (and now and then a reclamation scan), and no waiter sleeps
// through that.
//
// Exception safety: if the codec, T's copy or move constructor, `fn`, or an
// allocation throws, or a commit meets a saturated clock (stamp_overflow_error), the
// slot is unchanged and the exception reaches the caller.
#ifndef INTERLOCK_CAS_SLOT_HPP
#define INTERLOCK_CAS_SLOT_HPP

#include <interlock/config.hpp>
#include <interlock/detail/block_cache.hpp>
#include <interlock/detail/deadline.hpp>
#include <interlock/detail/hazard_pointer.hpp>
#include <interlock/detail/snapshot_cell.hpp>
#include <interlock/detail/wait_on_word.hpp>
#include <interlock/lamport_clock.hpp>
#include <interlock/sha256.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN

/// Thrown by cas_slot::update and value() when the slot (or snapshot) holds no value.
class empty_slot_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// Thrown by a commit (the slot then unchanged) once the slot's clock has saturated at
/// lamport_clock::max_time: a commit must carry a stamp above the previous one, or a
/// waiter keyed on the stamp could miss it. Only a corrupt or hostile remote stamp
/// passed to the clock's witness() gets a clock there.
class stamp_overflow_error : public std::overflow_error {
 public:
  using std::overflow_error::overflow_error;
};

template <class T>
class cas_slot {
  static_assert(std::is_object_v<T> && !std::is_const_v<T>,
                "cas_slot<T>: T must be a non-const object type");

  struct node : detail::retirable, detail::cached_allocation<node> {
    template <class... Args>
    node(const digest& hash, Args&&... args) : value(std::forward<Args>(args)...), etag(hash) {
      reclaim = [](detail::retirable* self) noexcept { delete static_cast<node*>(self); };
    }
    const T value;
    const digest etag;
    std::uint64_t stamp = 0;  // written before publication, immutable after
  };

 public:
  using value_type = T;
  using stamp_type = lamport_clock::time_type;

  /// A consistent view of one commit: value, digest and stamp. Move-only; it keeps
  /// its node alive (a hazard pointer) until it is destroyed or assigned.
  /// Thread-safety: a snapshot may be read from any thread, one at a time.
  class snapshot {
   public:
    /// An empty snapshot (as of an empty slot); holds no hazard record.
    snapshot() noexcept : guard_(nullptr), node_(nullptr) {}
    /// Moving transfers the protection: the moved-from snapshot becomes empty.
    snapshot(snapshot&& other) noexcept
        : guard_(std::move(other.guard_)), node_(std::exchange(other.node_, nullptr)) {}
    snapshot& operator=(snapshot&& other) noexcept {
      if (this == &other) return *this;  // clearing `other` would unprotect our node
      guard_ = std::move(other.guard_);  // swaps records with `other`...
      other.guard_.clear();              // ...which stops protecting our old node now
      node_ = std::exchange(other.node_, nullptr);
      return *this;
    }

    /// False for a snapshot of an empty slot.
    [[nodiscard]] bool has_value() const noexcept { return node_ != nullptr; }
    explicit operator bool() const noexcept { return has_value(); }

    /// The value. Throws empty_slot_error when the slot was empty.
    [[nodiscard]] const T& value() const {
      if (node_ == nullptr) throw empty_slot_error("interlock::cas_slot: the slot is empty");
      return node_->value;
    }
    /// The value, unchecked: precondition has_value().
    const T& operator*() const noexcept {
      INTERLOCK_ASSERT(node_ != nullptr, "dereferencing a snapshot of an empty cas_slot");
      return node_->value;
    }
    const T* operator->() const noexcept { return std::addressof(**this); }

    /// The content digest (ETag); the all-zero digest for an empty slot.
    [[nodiscard]] const digest& etag() const noexcept {
      static constexpr digest none{};
      return node_ != nullptr ? node_->etag : none;
    }
    /// The commit's stamp; 0 for an empty slot.
    [[nodiscard]] stamp_type stamp() const noexcept { return node_ != nullptr ? node_->stamp : 0; }

   private:
    friend class cas_slot;
    snapshot(detail::hazard_guard guard, const node* n) noexcept
        : guard_(std::move(guard)), node_(n) {}
    detail::hazard_guard guard_;
    const node* node_;
  };

  /// The outcome of a conditional write: committed or not, and always the snapshot
  /// that is current after the call (the new one, or the one that won), so a caller
  /// can retry without another load.
  struct result {
    bool committed;
    snapshot current;
    explicit operator bool() const noexcept { return committed; }
  };

  /// An empty slot with its own clock.
  cas_slot() : clock_(&cell_.own_clock) {}
  /// An empty slot whose stamps come from `shared` (which must outlive the slot).
  explicit cas_slot(lamport_clock& shared) : clock_(&shared) {}
  /// A slot holding `initial` (stamped by its own clock).
  explicit cas_slot(T initial) : cas_slot() { publish_initial(std::move(initial)); }
  cas_slot(T initial, lamport_clock& shared) : cas_slot(shared) {
    publish_initial(std::move(initial));
  }

  cas_slot(const cas_slot&) = delete;
  cas_slot& operator=(const cas_slot&) = delete;

  /// Destroys the slot. Snapshots may outlive it: the current node is retired, not
  /// freed, so a snapshot still holding it stays valid, and its T is destroyed by
  /// reclamation (a later retire or reclaim_retired() on this thread, or its exit)
  /// once no snapshot holds it. Precondition: no other thread is calling into the slot.
  /// Seeing a commit (through load() or a wake) does not mean its writer has returned
  /// from the call: join the writers, or synchronize with their return, first.
  ~cas_slot() = default;

  /// The current snapshot. Thread-safe. Lock-free (wait-free unless writers keep
  /// replacing the node between two loads); never hashes, never blocks. Throws
  /// std::bad_alloc only when a thread holds more snapshots than ever before and no
  /// hazard record can be allocated.
  [[nodiscard]] snapshot load() const {
    detail::hazard_guard guard;
    const node* current = cell_.nodes.protect(guard);
    return snapshot(std::move(guard), current);
  }

  /// Commits `desired` only if the current digest equals `expected` (the all-zero
  /// digest, `digest{}`, expects an empty slot). The digest of `desired` is computed
  /// first, outside any critical region. Thread-safe; lock-free. Returns committed
  /// or conflict, with the snapshot current after the call. Throws what hashing,
  /// T's move or the allocation throws, leaving the slot unchanged.
  result compare_exchange(const digest& expected, T desired) {
    return commit(make_node(std::move(desired)), [&expected](const node* current) {
      return (current != nullptr ? current->etag : digest{}) == expected;
    });
  }

  /// Creates the value only if the slot is empty (create-only write). Lock-free.
  /// On conflict the result carries the value that exists.
  result try_create(T desired) {
    return commit(make_node(std::move(desired)),
                  [](const node* current) { return current == nullptr; });
  }

  /// Writes `desired` unconditionally and returns its snapshot. Lock-free.
  snapshot store(T desired) {
    return commit(make_node(std::move(desired)), [](const node*) { return true; }).current;
  }

  /// The read-modify-write loop: fn(const T&) -> T is called on the current value
  /// and its result committed if no other commit intervened; otherwise fn runs
  /// again on the newer value. Returns the committed snapshot. Lock-free (some
  /// writer always commits); fn may run several times under contention, so it
  /// should be free of side effects. Throws empty_slot_error on an empty slot, and
  /// whatever fn, hashing or T's move throws (the slot is then unchanged).
  template <class Fn>
  requires std::is_invocable_r_v<T, Fn&, const T&> snapshot update(Fn fn) {
    for (;;) {
      snapshot seen = load();
      // fn's result is converted to T before it is hashed, so the digest is the
      // stored value's even when fn returns another type (int for a short, double for
      // a float); the cast is explicit only to keep -Wconversion quiet in user code.
      if (auto committed = commit_if_current(make_node(static_cast<T>(fn(seen.value()))), seen)) {
        return std::move(*committed);
      }
    }
  }

  /// Like update, but fn(const T&) -> std::optional<T> may decline by returning an
  /// empty optional: then nothing is written and the result (not committed) carries
  /// the snapshot fn saw. On an empty slot fn is not called and the result is not
  /// committed.
  template <class Fn>
  requires std::is_invocable_r_v<std::optional<T>, Fn&, const T&> result try_update(Fn fn) {
    for (;;) {
      snapshot seen = load();
      if (!seen.has_value()) return result{false, std::move(seen)};
      std::optional<T> next = fn(*seen);
      if (!next) return result{false, std::move(seen)};
      if (auto committed = commit_if_current(make_node(std::move(*next)), seen)) {
        return result{true, std::move(*committed)};
      }
    }
  }

  /// Blocks until the slot's stamp differs from `seen_stamp` and returns the newer
  /// snapshot. Pass the stamp of a snapshot you hold (0 for an empty slot). Keyed on
  /// the stamp, so a change back to identical content still wakes the waiter.
  /// Thread-safe; blocking (futex); no lost wake-ups.
  snapshot wait_for_change(stamp_type seen_stamp) const {
    for (;;) {
      using no_deadline = const std::chrono::steady_clock::time_point*;
      if (auto changed = wait_step(seen_stamp, no_deadline{nullptr})) return std::move(*changed);
    }
  }

  /// As wait_for_change, but gives up after `timeout`: an empty optional means the
  /// stamp was still `seen_stamp` at the deadline. A waiter that times out leaves
  /// nothing behind.
  template <class Rep, class Period>
  std::optional<snapshot> wait_for_change_for(stamp_type seen_stamp,
                                              std::chrono::duration<Rep, Period> timeout) const {
    return wait_for_change_until(seen_stamp, detail::deadline_after(timeout));
  }

  /// As wait_for_change, but gives up at `deadline` (any clock).
  template <class Clock, class Duration>
  std::optional<snapshot> wait_for_change_until(
      stamp_type seen_stamp, const std::chrono::time_point<Clock, Duration>& deadline) const {
    for (;;) {
      bool timed_out = false;
      if (auto changed = wait_step(seen_stamp, &deadline, &timed_out)) return changed;
      if (timed_out) {
        snapshot last = load();
        if (last.stamp() != seen_stamp) return last;
        return std::nullopt;
      }
    }
  }

  /// The clock that stamps this slot's commits.
  [[nodiscard]] lamport_clock& clock() const noexcept { return *clock_; }

 private:
  /// A node holding `value` and its digest. Hash first, then construct the node
  /// around the moved value: if either throws, nothing has been published. It takes
  /// a T, so what is hashed is always what is stored.
  static std::unique_ptr<node> make_node(T&& value) {
    const digest hash = content_digest(value);
    return std::make_unique<node>(hash, std::move(value));
  }

  void publish_initial(T initial) {
    commit(make_node(std::move(initial)), [](const node*) { return true; });
  }

  /// The one commit path: publishes `fresh` if decide(current) holds for the node
  /// current at the moment of the CAS (detail::snapshot_cell::publish), then wakes
  /// waiters. The fresh node is protected before it is published, so the returned
  /// snapshot stays valid even if another writer replaces it at once.
  template <class Decide>
  result commit(std::unique_ptr<node> fresh, Decide decide) {
    detail::hazard_guard current_guard;
    detail::hazard_guard fresh_guard;
    fresh_guard.protect_stable(fresh.get());
    const node* candidate = fresh.get();
    const auto outcome =
        cell_.nodes.publish(fresh, current_guard, decide, stamp_before_publish(), wake_waiters());
    if (!outcome.published)
      return result{false, snapshot(std::move(current_guard), outcome.current)};
    return result{true, snapshot(std::move(fresh_guard), candidate)};
  }

  /// The commit of update() and try_update(): publishes `fresh` if the node `seen`
  /// holds is still current, else returns empty (the caller loads and recomputes).
  /// `seen` keeps that node protected, so only the fresh node needs a hazard pointer.
  std::optional<snapshot> commit_if_current(std::unique_ptr<node> fresh, const snapshot& seen) {
    detail::hazard_guard fresh_guard;
    fresh_guard.protect_stable(fresh.get());
    const node* candidate = fresh.get();
    if (!cell_.nodes.publish_if_current(fresh, seen.node_, stamp_before_publish(),
                                        wake_waiters())) {
      return std::nullopt;
    }
    return snapshot(std::move(fresh_guard), candidate);
  }

  /// The `prepare` step of both commits: stamps the fresh node from the clock. It runs
  /// after the node to replace was observed published, so stamps of one slot strictly
  /// increase: that node's stamp was taken before it was published. A saturated
  /// clock gives no new stamp: the lambda throws stamp_overflow_error before the CAS
  /// (nothing published).
  auto stamp_before_publish() {
    return [this](node& n) {
      n.stamp = clock_->tick();
      if (n.stamp == lamport_clock::max_time) throw_saturated();
    };
  }

  [[noreturn]] static void throw_saturated() {
    throw stamp_overflow_error(
        "interlock::cas_slot: the clock is saturated (lamport_clock::max_time); no commit "
        "can get a new stamp");
  }

  /// The `published` step of both commits: wakes the waiters right after the CAS,
  /// before the replaced node is retired (retiring may run an older value's
  /// destructor; see detail::snapshot_cell::publish_if_current).
  auto wake_waiters() noexcept {
    return [this]() noexcept { notify_waiters(); };
  }

  /// After a commit: wakes the waiters, if any. A commit with no waiter writes nothing
  /// here (one load of a line the commit already owns).
  void notify_waiters() noexcept {
    // (2) seq_cst, after the seq_cst publishing CAS (snapshot_cell (1)): either this
    // load sees a waiter's registration (4), and the waiter is woken below, or the
    // registration comes later in the seq_cst order, and the waiter's seq_cst load
    // (5) sees the new node, so it does not sleep.
    if (cell_.waiters.load(std::memory_order_seq_cst) == 0) return;
    // (3) seq_cst: a waiter that read the word before it sleeps on it now sees it
    // changed (the futex compares it) or is woken; one that reads it after also
    // synchronizes with the commit, so its load sees the new node.
    cell_.changes.fetch_add(1, std::memory_order_seq_cst);
    detail::wake_all(cell_.changes);
  }

  /// One round of waiting. Returns a snapshot if the stamp changed; otherwise sleeps
  /// once (until a commit, the deadline or a spurious wake) and returns empty.
  template <class Deadline = std::chrono::steady_clock::time_point>
  std::optional<snapshot> wait_step(stamp_type seen_stamp, const Deadline* deadline,
                                    bool* timed_out = nullptr) const {
    // Register first (4), so that every commit from here on sees this waiter (2).
    cell_.waiters.fetch_add(1, std::memory_order_seq_cst);
    struct unregister {
      std::atomic<std::uint32_t>& waiters;
      ~unregister() { waiters.fetch_sub(1, std::memory_order_relaxed); }  // a count only
    } guard{cell_.waiters};
    // (6) read the word before the node: a wake-up (3) for a commit the loads below
    // miss changes the word, and the futex then does not sleep.
    const std::uint32_t observed = cell_.changes.load(std::memory_order_seq_cst);
    snapshot current = load();
    if (current.stamp() != seen_stamp) return current;
    // (5) seq_cst, after the registration (4): a commit whose check (2) missed the
    // registration precedes this load in the seq_cst order, so this load sees that
    // commit's node (or a later one). (A load, not a fence: ThreadSanitizer models it.)
    if (cell_.nodes.current_seq_cst() != current.node_) return load();
    if (deadline == nullptr) {
      detail::wait(cell_.changes, observed);
    } else if (!detail::wait_until(cell_.changes, observed, *deadline)) {
      *timed_out = true;
    }
    return std::nullopt;
  }

  // The node pointer, the slot's own clock, the change counter the futex sleeps on and
  // the waiter count share one line: a commit owns that one line (the clock tick, the
  // CAS and the waiter check hit it) instead of moving two between cores; readers
  // read only the pointer.
  struct alignas(detail::cache_line_size) cell {
    detail::snapshot_cell<node> nodes;
    lamport_clock own_clock;
    mutable detail::wait_word changes{0};
    mutable std::atomic<std::uint32_t> waiters{0};
  };

  cell cell_;
  lamport_clock* clock_;
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_CAS_SLOT_HPP
