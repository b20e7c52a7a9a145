// interlock/versioned.hpp: a value with a version number, committed optimistically.
//
// Design note. Two tabs (or two workers) read a record, both modify it, and the last
// write silently wins. versioned<T> numbers every committed value: read() returns
// {value, version}, and try_commit(expected_version, desired) commits only if no
// other commit happened since that version; otherwise it reports a conflict that
// carries the current version and value, so the caller can merge and retry without
// another read. update(fn, policy) is that loop, with retries governed by a
// retry_policy (<interlock/retry.hpp>). validate(version) is the optimistic-read check
// of Java's StampedLock: "is what I read still current?".
//
// Versions: the initial value has version 1 (`initial_version`), and every commit
// adds exactly 1, so after n commits the version is n + 1. Versions never repeat, so
// comparing versions cannot be fooled by a value that changed and changed back (no
// ABA). Unlike cas_slot<T>, nothing is hashed: a version, not a digest, identifies
// a state, and this header does not need OpenSSL.
//
// Two representations, chosen at compile time (`versioned<T>::uses_seqlock`):
//  - Seqlock, for a small trivially copyable T: sizeof(T) <= 64 bytes (one cache
//    line of payload, at most 8 words, so a read is a handful of loads and a write
//    rarely overlaps it) and alignof(T) <= 8. A sequence counter `seq` equals
//    2 * version while the value is stable and is odd while a write is in progress.
//    Readers copy the value word by word with atomic loads into a local buffer and
//    keep the copy only if `seq` was even and unchanged around it: they never return
//    a torn value, and write shared memory only when starving (after 16 failed
//    copies in a row a reader raises a counter that makes writers pause briefly, at
//    most 256 CPU pauses, before their next claim; see Progress). A writer
//    claims the value with one CAS of `seq` from 2v to 2v + 1 (the version check and
//    the claim are the same instruction), stores the words and publishes 2v + 2.
//  - Snapshot publication, for every other T: the value lives in an immutable node
//    {value, version} behind an atomic pointer; a writer builds the next node outside
//    any critical region and publishes it with one CAS; readers protect the node with
//    a hazard pointer (detail/hazard_pointer.hpp, the machinery cas_slot uses) while
//    they copy it, and replaced nodes are retired to the same hazard domain.
//
// When not to use it: for a counter (std::atomic::fetch_add never conflicts), when
// writers must queue rather than retry (keyed_mutex), or when a value that is the
// same after two changes should count as unchanged (cas_slot compares content).
//
// Progress.
//  - Seqlock: try_commit's claim is one CAS. A read (and the copy of the current
//    value in a conflict result) retries while writes overlap it: it completes as
//    soon as it runs between two writes, so it is obstruction-free with respect to
//    other readers, and it waits for a writer that is descheduled in the middle of its
//    few word stores (spinning, then yielding the CPU). A writer committing back to
//    back on another core can leave no such gap: on a 16-core machine a reader racing
//    one did not finish in minutes. So a reader that has failed
//    `starvation_threshold` (16) times in a row says so, and while one does, every
//    writer pauses before its claim until that reader is through, for at most
//    `reader_window_pauses` (256) CPU pauses (about 1 to 20 microseconds, depending
//    on the CPU's pause instruction): readers then make progress, and a writer never
//    waits longer than that bound, even for a reader that was descheduled. Otherwise
//    writers never wait for readers.
//  - Snapshot publication: reads are lock-free (a hazard-pointer protect retries only
//    when a commit replaced the node in between); try_commit is lock-free (one CAS;
//    a failed CAS is a conflict, not a retry).
//  - update: lock-free as a system (every conflict means another commit succeeded);
//    one caller may retry many times under contention, as its policy allows, and
//    sleeps between attempts when the policy has delays.
//
// Memory ordering: everything a writer did before a successful try_commit or update
// (including building the value) is visible to a thread whose read() (or validate(),
// or version()) returns that commit's version or a later one. Commits are totally
// ordered by their versions. A conflict result's value and version come from one
// consistent read, made after the failed commit.
//
// Exception safety: if fn, T's copy or move constructor, an allocation, or a hazard
// record allocation throws before a commit, the value and version are unchanged and
// the exception reaches the caller (strong guarantee). One exception: update() and
// try_update() move the committed value into their result after the commit, so for a
// T whose move constructor can throw, such a throw leaves the commit in place (the
// guarantee is strong for nothrow-movable T). The seqlock write path runs no user
// code between its claim and its publication, so it cannot be left half written.
#ifndef INTERLOCK_VERSIONED_HPP
#define INTERLOCK_VERSIONED_HPP

#include <interlock/config.hpp>
#include <interlock/detail/block_cache.hpp>
#include <interlock/detail/hazard_pointer.hpp>
#include <interlock/detail/snapshot_cell.hpp>
#include <interlock/detail/spin.hpp>
#include <interlock/retry.hpp>

#include <array>
#include <atomic>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN

/// A version number. The initial value has version 1; each commit adds 1.
using version_type = std::uint64_t;

/// The result of a version-checked commit (versioned<T>::try_commit, and the Redis
/// store's): committed with `version` (the new one), or a conflict carrying the
/// current `version` and its value in `current` (empty when committed: the caller has
/// the value it committed).
template <class T>
struct versioned_commit {
  bool committed = false;
  version_type version = 0;
  std::optional<T> current;
  explicit operator bool() const noexcept { return committed; }
};

/// A consistent view of one commit: the value and the version it was committed as.
template <class T>
struct versioned_snapshot {
  T value;
  version_type version;
};

namespace detail {

/// True when versioned<T> uses the seqlock representation.
/// Trivially copy-assignable too: a T with a const or reference member is trivially
/// copyable, but writing new bytes over a live one (as a reader's copy does) or making
/// one from zero bytes would be undefined; such a T takes the node path.
template <class T>
inline constexpr bool seqlock_eligible =
    sizeof(T) <= 64 && alignof(T) <= 8 &&
    std::conjunction_v<std::is_trivially_copyable<T>, std::is_trivially_copy_assignable<T>>;

/// One step of a spin-wait: a CPU pause, and after a while, yielding the CPU to the
/// (possibly descheduled) thread we wait for.
inline void spin_pause(unsigned& spins) noexcept {
  if (++spins < 64) {
    cpu_relax();
  } else {
    std::this_thread::yield();
  }
}

/// The seqlock representation. See the design note in the header comment.
template <class T>
class seqlock_cell {
  static constexpr std::size_t word_count = (sizeof(T) + 7) / 8;
  using words = std::array<std::uint64_t, word_count>;

 public:
  explicit seqlock_cell(const T& initial) noexcept {
    const words bits = to_words(initial);
    // Relaxed: the constructor runs before the cell is shared with other threads.
    for (std::size_t i = 0; i < word_count; ++i) data_[i].store(bits[i], std::memory_order_relaxed);
    seq_.store(2 * 1, std::memory_order_relaxed);
  }

  /// Calls fn(const T&, version_type) on a consistent copy and returns its result.
  template <class Fn>
  auto visit(Fn&& fn) const {
    T value = blank();
    const version_type version = read_into(value);
    return std::forward<Fn>(fn)(std::as_const(value), version);
  }

  /// A consistent copy of the value and its version.
  [[nodiscard]] versioned_snapshot<T> read() const noexcept {
    versioned_snapshot<T> out{blank(), 0};  // returned in place: the words land there
    out.version = read_into(out.value);
    return out;
  }

  [[nodiscard]] version_type version() const noexcept {
    // (R4) acquire: pairs with the publishing store (W3), so a caller that sees
    // version v sees everything the writer of v did. An odd seq (a write in progress
    // on top of v = seq / 2) still reads as v: that write has not committed.
    return seq_.load(std::memory_order_acquire) / 2;
  }

  [[nodiscard]] bool validate(version_type version) const noexcept {
    // (R4) as in version(); a write in progress on top of `version` already fails.
    // The last version a commit can make is max_version + 1; twice it still fits.
    return version <= max_version + 1 && seq_.load(std::memory_order_acquire) == 2 * version;
  }

  /// Commits `desired` as version expected + 1 if the version is still `expected`.
  bool commit(version_type expected, const T& desired) noexcept {
    if (expected == 0 || expected > max_version) return false;  // 2 * expected must not wrap
    const words bits = to_words(desired);  // before the claim: nothing can fail after it
    // Relaxed: a progress hint only; which write pauses first does not matter.
    if (starving_readers_.load(std::memory_order_relaxed) != 0) let_starving_readers_through();
    std::uint64_t seq = 2 * expected;
    // (W1) acquire: pairs with the previous writer's publishing store (W3), so its
    // word stores happen before ours (ours come later in every word's modification
    // order). Relaxed on failure: a conflict reads the value afresh.
    if (!seq_.compare_exchange_strong(seq, seq + 1, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      return false;
    }
#if INTERLOCK_TSAN
    // TSan does not model fences: release word stores (W2') give it the same edge.
    for (std::size_t i = 0; i < word_count; ++i) {
      data_[i].store(bits[i], std::memory_order_release);  // (W2') pairs with (R2')
    }
#else
    // (W2) release fence: pairs with the readers' acquire fence (R2). A reader that
    // loads any word stored below sees the odd seq (W1) or a later one at (R3).
    std::atomic_thread_fence(std::memory_order_release);
    for (std::size_t i = 0; i < word_count; ++i) {
      // Relaxed: ordered after the claim by (W2) and before the publication by (W3).
      data_[i].store(bits[i], std::memory_order_relaxed);
    }
#endif
    // (W3) release: pairs with the readers' acquire loads (R1)/(R4) and the next
    // writer's claim (W1): the words above are visible to whoever sees seq + 2.
    seq_.store(seq + 2, std::memory_order_release);
    return true;
  }

 private:
  // The largest version a commit can start from: the seqlock path stops at version
  // 2^63 - 1 (then every commit conflicts), which takes 2^63 commits: 292 years at a
  // billion a second.
  static constexpr version_type max_version = std::numeric_limits<std::uint64_t>::max() / 2 - 1;
  /// Failed attempts in a row after which a reader asks writers to pause.
  static constexpr unsigned starvation_threshold = 16;
  /// The longest a writer pauses for starving readers before each claim.
  static constexpr unsigned reader_window_pauses = 256;

  /// Before a claim, while a reader is starving: wait until no reader is, or for at
  /// most reader_window_pauses CPU pauses (so a descheduled reader cannot stall a
  /// writer for longer). The pause is the gap between two writes that the reader
  /// needs; it copies a few words, far less than the bound.
  void let_starving_readers_through() const noexcept {
    for (unsigned i = 0; i < reader_window_pauses; ++i) {
      if (starving_readers_.load(std::memory_order_relaxed) == 0) return;  // a hint, as above
      cpu_relax();
    }
  }

  /// Copies the bytes of one stable state into `out`; returns its version. Each word
  /// is stored straight into `out` (no staging buffer that a wider copy would re-read
  /// before the narrow stores retire: that store-forwarding stall cost 8 ns per 64-byte
  /// read).
  version_type read_into(T& out) const noexcept {
    auto* const bytes = reinterpret_cast<unsigned char*>(std::addressof(out));
    unsigned spins = 0;
    unsigned failures = 0;
    for (;;) {
      // (R1) acquire: pairs with the publishing store (W3): the words we load below
      // are at least as new as the commit that made seq `before`.
      const std::uint64_t before = seq_.load(std::memory_order_acquire);
      if ((before & 1U) == 0) {
#if INTERLOCK_TSAN
        for (std::size_t i = 0; i < word_count; ++i) {
          put_word(bytes, i, data_[i].load(std::memory_order_acquire));  // (R2') pairs with (W2')
        }
#else
        for (std::size_t i = 0; i < word_count; ++i) {
          // Relaxed: a torn mix is detected by the re-check below, ordered by (R2).
          put_word(bytes, i, data_[i].load(std::memory_order_relaxed));
        }
        // (R2) acquire fence: pairs with the writers' release fence (W2): if a load
        // above saw a word of a later write, (R3) sees that write's odd seq or later.
        std::atomic_thread_fence(std::memory_order_acquire);
#endif
        // (R3) relaxed: ordered after the word loads by (R2) / (R2').
        if (seq_.load(std::memory_order_relaxed) == before) {
          if (failures >= starvation_threshold)
            starving_readers_.fetch_sub(1, std::memory_order_relaxed);
          return before / 2;
        }
      }
      // Relaxed: a progress hint (see let_starving_readers_through), ordered with nothing.
      // Counted up to the threshold only: a count that wrapped would announce this
      // reader twice and withdraw it once, slowing every writer for good.
      if (failures < starvation_threshold && ++failures == starvation_threshold)
        starving_readers_.fetch_add(1, std::memory_order_relaxed);
      spin_pause(spins);
    }
  }

  static words to_words(const T& value) noexcept {
    words bits{};
    std::memcpy(bits.data(), std::addressof(value), sizeof(T));
    return bits;
  }

  /// Copies word i (the last one possibly in part) into the bytes of a T.
  static void put_word(unsigned char* bytes, std::size_t i, std::uint64_t word) noexcept {
    const std::size_t offset = 8 * i;
    const std::size_t length = sizeof(T) - offset < 8 ? sizeof(T) - offset : 8;
    std::memcpy(bytes + offset, &word, length);
  }

  /// A T to copy bytes into (T need not be default-constructible; being trivially
  /// copyable, any object representation copied from a T is a valid T).
  static T blank() noexcept { return std::bit_cast<T>(std::array<std::byte, sizeof(T)>{}); }

  // The sequence and the payload share a line: a reader touches nothing else (unless
  // it starves).
  alignas(detail::cache_line_size) std::atomic<std::uint64_t> seq_{0};
  std::atomic<std::uint64_t> data_[word_count];
  // Readers that have failed starvation_threshold times in a row and not yet read.
  mutable std::atomic<std::uint32_t> starving_readers_{0};
};

/// The snapshot-publication representation: an immutable node behind an atomic
/// pointer, protected by hazard pointers. See the header's design note.
template <class T>
class node_cell {
  struct node : retirable, cached_allocation<node> {
    template <class U>
    node(U&& v, version_type ver) : value(std::forward<U>(v)), version(ver) {
      reclaim = [](retirable* self) noexcept { delete static_cast<node*>(self); };
    }
    const T value;
    const version_type version;
  };

 public:
  template <class U>
  explicit node_cell(U&& initial) : cell_(new node(std::forward<U>(initial), 1)) {}
  node_cell(const node_cell&) = delete;
  node_cell& operator=(const node_cell&) = delete;

  /// Destroys the current value now. Readers hold a node only during visit(), so once
  /// no other thread uses the cell (the destructor's precondition) nothing protects
  /// it: deferring it to a reclamation scan would only delay T's destructor.
  ~node_cell() { delete cell_.release(); }

  /// Calls fn(const T&, version_type) on the current node, protected while fn runs.
  template <class Fn>
  auto visit(Fn&& fn) const {
    hazard_guard guard;
    const node* current = cell_.protect(guard);
    return std::forward<Fn>(fn)(current->value, current->version);
  }

  [[nodiscard]] version_type version() const {
    return visit([](const T&, version_type v) { return v; });
  }

  [[nodiscard]] bool validate(version_type version) const {
    return visit([version](const T&, version_type v) { return v == version; });
  }

  /// Commits a node built from `desired` as version expected + 1 if the current node
  /// still has version `expected` (detail::snapshot_cell::publish: the node checked is
  /// protected, so a successful CAS means no commit happened since).
  template <class U>
  bool commit(version_type expected, U&& desired) {
    // Build first: if T's constructor or the allocation throws, nothing is published.
    auto fresh = std::make_unique<node>(std::forward<U>(desired), expected + 1);
    hazard_guard guard;
    return cell_
        .publish(
            fresh, guard, [expected](const node* current) { return current->version == expected; },
            [](node&) {})
        .published;
  }

 private:
  alignas(detail::cache_line_size) snapshot_cell<node> cell_;
};

}  // namespace detail

/// A value with a version number; writers commit only on top of the version they read.
/// See the header's design note for representations, progress and memory ordering.
///
/// Requirements: T is a copy-constructible object type. Thread-safety: every member
/// function may be called concurrently from any number of threads, except the
/// destructor. The destructor destroys the current value at once; values replaced by
/// earlier commits are destroyed by hazard-pointer reclamation (within a bounded
/// number of later retires on the committing thread, at its exit, or by
/// interlock::reclaim_retired()).
template <class T>
class versioned {
  static_assert(std::is_object_v<T> && !std::is_const_v<T>,
                "versioned<T>: T must be a non-const object type");
  static_assert(std::is_copy_constructible_v<T>, "versioned<T>: T must be copy-constructible");

 public:
  using value_type = T;
  using snapshot = versioned_snapshot<T>;

  /// True when T is small and trivially copyable and a seqlock holds it.
  static constexpr bool uses_seqlock = detail::seqlock_eligible<T>;
  /// The version of the initial value.
  static constexpr version_type initial_version = 1;

  /// The result of try_commit (see versioned_commit).
  using commit_result = versioned_commit<T>;

  enum class update_status { committed, declined, gave_up };

  /// The result of update / try_update: how it ended, a snapshot (committed: the
  /// value and version it committed; declined: the snapshot fn declined to change;
  /// gave up: the snapshot current when it gave up), and what the retry loop spent.
  struct update_result {
    update_status status;
    snapshot current;
    std::uint32_t attempts;
    std::chrono::nanoseconds elapsed;              // time spent retrying (0 without a conflict)
    retry_status retry = retry_status::succeeded;  // out_of_* when status == gave_up

    [[nodiscard]] bool committed() const noexcept { return status == update_status::committed; }
    explicit operator bool() const noexcept { return committed(); }
  };

  /// A value-initialized T at version 1.
  versioned() requires std::default_initializable<T> : cell_(T{}) {}
  /// `initial` at version 1.
  explicit versioned(const T& initial) : cell_(initial) {}
  explicit versioned(T&& initial) requires(!uses_seqlock) : cell_(std::move(initial)) {}

  versioned(const versioned&) = delete;
  versioned& operator=(const versioned&) = delete;

  /// A copy of the current value and its version, from one commit (never torn).
  /// Thread-safe. Progress: seqlock: retries while writes overlap it (see the design
  /// note); otherwise lock-free. Throws what T's copy throws (the snapshot path) or
  /// std::bad_alloc for a hazard record; nothing changes.
  [[nodiscard]] snapshot read() const {
    if constexpr (uses_seqlock) {
      return cell_.read();
    } else {
      return cell_.visit([](const T& value, version_type version) {
        return snapshot{value, version};
      });
    }
  }

  /// Calls fn(const T& value, version_type version) on a consistent view of the
  /// current value, without copying it on the snapshot path (the node is protected
  /// while fn runs; fn must not expect it to stay current). Returns fn's result by
  /// value (a reference to the value would outlive its protection).
  /// Thread-safety and progress as read(); fn's exceptions pass through.
  template <class Fn>
  requires std::is_invocable_v<Fn&, const T&, version_type>
  auto visit(Fn&& fn) const { return cell_.visit(std::forward<Fn>(fn)); }

  /// The current version. Thread-safe. Seqlock: wait-free (one load); otherwise
  /// lock-free. A seqlock write in progress is not committed yet: its version is not
  /// reported until it is published.
  [[nodiscard]] version_type version() const { return cell_.version(); }

  /// The optimistic-read check: true if `version` is still the current version.
  /// Seqlock: false as soon as a commit on top of it has begun. Thread-safety and
  /// progress as version(). Memory ordering: true means every commit up to `version`
  /// is visible to the caller and none after it had started at the check.
  [[nodiscard]] bool validate(version_type version) const { return cell_.validate(version); }

  /// Commits `desired` as version expected_version + 1 if the current version is
  /// `expected_version`. Thread-safe. Progress: the commit itself is one CAS (seqlock:
  /// wait-free, apart from a bounded pause before the claim while a reader is starving,
  /// see the design note; otherwise lock-free); the copy of the current value in a
  /// conflict is a read (see read()). Returns committed with the new version, or a
  /// conflict with the current version and value (a version other than
  /// expected_version, unless the caller passed a version that was never current).
  /// Throws what T's copy/move or an allocation throws, the value and version then
  /// unchanged.
  [[nodiscard]] commit_result try_commit(version_type expected_version, T desired) {
    if (cell_.commit(expected_version, std::move(desired))) {
      return commit_result{true, expected_version + 1, std::nullopt};
    }
    return conflict();
  }

  /// The read-modify-write loop: reads the current snapshot, calls fn(const T&) -> T
  /// and commits the result on top of the version read; on a conflict, retries under
  /// `policy` (default: at once, without limit; see retry_policy). fn may run several
  /// times, so it should be free of side effects. Thread-safe. Progress: lock-free as
  /// a system; blocking (sleeps) when the policy has delays. Returns committed with
  /// the committed snapshot, or gave_up (only with a bounded policy) with the snapshot
  /// current when it gave up. Throws what fn, T's copy or an allocation throws (the value
  /// and version then unchanged), or the environment's exceptions. A throwing move of
  /// the committed value into the result happens after the commit (see the note on
  /// exception safety).
  template <class Fn, class Env = system_retry_environment>
  requires std::is_invocable_r_v<T, Fn&, const T&> update_result
  update(Fn fn, const retry_policy& policy = {}, Env&& env = Env{}) {
    auto step = [&fn](const T& value) -> std::optional<T> { return std::optional<T>(fn(value)); };
    return run(step, policy, std::forward<Env>(env));
  }

  /// As update, but fn(const T&) -> std::optional<T> may decline by returning an
  /// empty optional: nothing is written, no retry follows, and the result (declined)
  /// carries the snapshot fn saw.
  template <class Fn, class Env = system_retry_environment>
  requires std::is_invocable_r_v<std::optional<T>, Fn&, const T&> [[nodiscard]] update_result
  try_update(Fn fn, const retry_policy& policy = {}, Env&& env = Env{}) {
    return run(fn, policy, std::forward<Env>(env));
  }

 private:
  commit_result conflict() const {
    return cell_.visit([](const T& value, version_type version) {
      return commit_result{false, version, std::optional<T>(value)};
    });
  }

  /// The loop behind update and try_update: step(const T&) -> std::optional<T>.
  template <class Step, class Env>
  update_result run(Step& step, const retry_policy& policy, Env&& env) {
    bool declined = false;
    auto attempt = [&]() -> std::optional<snapshot> {
      version_type seen = 0;
      std::optional<snapshot> unchanged;  // the snapshot fn declined to change
      // fn runs on the protected node (snapshot path) or on a local copy (seqlock).
      std::optional<T> next = cell_.visit([&](const T& value, version_type version) {
        seen = version;
        std::optional<T> proposed = step(value);
        if (!proposed) unchanged.emplace(snapshot{value, version});
        return proposed;
      });
      if (!next) {
        declined = true;
        return unchanged;  // engaged: a decline ends the loop
      }
      // Commit a copy and keep `next` for the result: one copy either way, and a
      // throwing copy leaves the value unchanged.
      if (cell_.commit(seen, std::as_const(*next))) {
        return snapshot{std::move(*next), seen + 1};
      }
      return std::nullopt;  // a conflict: retried under the policy
    };
    auto outcome = retry_on_conflict(policy, attempt, std::forward<Env>(env));
    if (outcome) {
      return update_result{declined ? update_status::declined : update_status::committed,
                           std::move(*outcome.result), outcome.attempts, outcome.elapsed,
                           outcome.status};
    }
    // Gave up: report what is current now (fresher than the last conflict, and only
    // copied once).
    return update_result{update_status::gave_up, read(), outcome.attempts, outcome.elapsed,
                         outcome.status};
  }

  std::conditional_t<uses_seqlock, detail::seqlock_cell<T>, detail::node_cell<T>> cell_;
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_VERSIONED_HPP
