// interlock/detail/hazard_pointer.hpp: safe memory reclamation for lock-free reads.
//
// Design note. Readers of a published immutable node (cas_slot, versioned, the keyed
// tables) protect it with a hazard pointer: they write the node's address into a
// per-thread record, then re-check that the node is still published. A writer that
// unpublishes a node *retires* it; a retired node is freed only once no record holds
// its address. Hazard pointers were chosen over epochs because a reader may hold a
// snapshot for as long as it likes: with epochs one held snapshot stops all
// reclamation, while here it pins only its own node, so the count of retired but
// unreclaimed nodes stays bounded (at most threshold + records per thread).
//
// Cost on the read path: one store and one re-load. The store-load ordering that
// hazard pointers need is made asymmetric: readers issue only a compiler barrier and
// the rare scanner issues membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which runs a
// full barrier on every CPU running this process. Where membarrier is unavailable,
// both sides use seq_cst fences (the protecting store stays a release). Under
// ThreadSanitizer, which models neither membarrier nor fences, there are no fences:
// the protecting store, the reader's re-load, the writer's unpublishing store and the
// scanner's record loads are seq_cst, and a seq_cst read-modify-write stands in for
// the scanner's barrier (see barrier_load_order).
//
// Records are never freed while the process runs; they are reused by any thread.
// Each thread caches a few free records and keeps its own retired list; at thread
// exit the cache returns to the domain and unreclaimed nodes go to a shared orphan
// list that the next scan adopts. A scan does not free what it finds unprotected at
// once: each later retire frees one of those nodes (reclaim_now and thread exit free
// the rest), so a writer allocating one node per commit reuses the one just freed.
#ifndef INTERLOCK_DETAIL_HAZARD_POINTER_HPP
#define INTERLOCK_DETAIL_HAZARD_POINTER_HPP

#include <interlock/config.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

// ---- asymmetric barrier ------------------------------------------------------

inline bool register_membarrier() noexcept {
#if defined(__linux__) && !INTERLOCK_TSAN
  const long commands = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0);
  if (commands < 0 || (commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
  return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0;
#else
  return false;
#endif
}

/// True when readers may use a compiler barrier because scanners use membarrier.
/// Decided once per process; the function-local static makes every caller agree.
inline bool asymmetric_barrier() noexcept {
  static const bool available = register_membarrier();
  return available;
}

/// The order of the loads on either side of the barrier pair: acquire, and seq_cst
/// under ThreadSanitizer. There the barriers are not fences (TSan does not model
/// them), and only seq_cst on the hazard store, the reader's re-load, the scanner's
/// read-modify-write and its record loads forbids, in the C++ model, the outcome in
/// which the reader sees the old node while the scanner misses its hazard.
inline constexpr std::memory_order barrier_load_order =
    INTERLOCK_TSAN ? std::memory_order_seq_cst : std::memory_order_acquire;

/// The order of a writer's store that unpublishes a node (unlinks it, or replaces the
/// array that names it) before retiring it: release, and seq_cst under
/// ThreadSanitizer, where the argument above needs every one of those four operations
/// seq_cst. (snapshot_cell's publishing CAS is seq_cst anyway.)
inline constexpr std::memory_order unpublish_store_order =
    INTERLOCK_TSAN ? std::memory_order_seq_cst : std::memory_order_release;

/// The reader's half: orders its hazard store before its re-load of the source.
inline void light_barrier() noexcept {
  if constexpr (INTERLOCK_TSAN) {
    return;  // the hazard store itself is seq_cst under TSan (hazard_guard::set)
  } else if (asymmetric_barrier()) {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // heavy_barrier does the CPU part
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with heavy_barrier's fence
  }
}

/// The scanner's half: after it, every reader's earlier hazard store is visible.
inline void heavy_barrier() noexcept {
#if INTERLOCK_TSAN
  // TSan does not support fences: a seq_cst read-modify-write stands in for one (the
  // readers' hazard stores are seq_cst too, so the store-load order still holds).
  static std::atomic<int> tsan_fence{0};
  tsan_fence.fetch_add(0, std::memory_order_seq_cst);
  return;
#endif
#if defined(__linux__)
  if (asymmetric_barrier()) {
    // Readers use only a compiler barrier now: a plain fence here would not pair with
    // it. The registered command does not fail in practice; if it ever does, the
    // global (slower, unregistered) command is also a full barrier on every CPU, and
    // without either no scan can be correct.
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0) return;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0) == 0) return;
    INTERLOCK_ASSERT(false, "hazard_domain: membarrier failed after registration");
    std::abort();
  }
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with light_barrier's fence
}

// ---- records and retired nodes -----------------------------------------------

/// Base of every node that can be retired: an intrusive link, so retiring never
/// allocates (and so never throws after a commit).
struct retirable {
  retirable* next_retired = nullptr;
  void (*reclaim)(retirable*) noexcept = nullptr;
};

// Each record on its own cache line: readers write their record on every load, and
// two readers sharing a line would slow each other down.
struct alignas(cache_line_size) hazard_record {
  std::atomic<const void*> pointer{nullptr};
  std::atomic<bool> in_use{false};
  hazard_record* next = nullptr;  // written before the record is published; immutable after
};

/// Per-thread state. Trivially destructible, so it is constant-initialized and the
/// hot path reaches it without a TLS guard; `thread_exit_flush` (below) empties it.
struct hazard_thread_state {
  static constexpr int cache_capacity = 8;
  hazard_record* cache[cache_capacity] = {};
  int cached = 0;
  retirable* retired = nullptr;
  std::size_t retired_count = 0;
  retirable* reclaimable = nullptr;  // found unprotected by a scan; freed one per retire
  bool reclaiming = false;           // a reclaim is running: nested retires only push
  bool flush_registered = false;
  bool exited = false;  // after thread_local destruction: bypass the cache
};

inline thread_local hazard_thread_state hazard_tls{};

class hazard_domain {
 public:
  /// The process-wide domain. Constant-initialized and trivially destructible, so it
  /// exists before any dynamic initialization and is never torn down: a cas_slot or
  /// table with static storage duration may retire nodes during static destruction.
  /// Reaching it costs no initialization check on the read path. What is retired
  /// after the last thread's exit scan is released with the process.
  static hazard_domain& instance() noexcept { return process_domain_; }

  hazard_domain(const hazard_domain&) = delete;
  hazard_domain& operator=(const hazard_domain&) = delete;
  ~hazard_domain() = default;  // trivial: the process's domain is never torn down

  /// A record owned by the caller until release_record. Throws std::bad_alloc only
  /// when every record is taken and a new one cannot be allocated.
  hazard_record* acquire_record() {
    hazard_record* record = acquire_record(std::nothrow);
    if (record == nullptr) throw std::bad_alloc();
    return record;
  }

  /// As acquire_record, but nullptr where that throws.
  hazard_record* acquire_record(std::nothrow_t) noexcept {
    hazard_thread_state& state = hazard_tls;
    if (state.cached > 0) return state.cache[--state.cached];
    return acquire_shared_record();
  }

  void release_record(hazard_record* record) noexcept {
    // (1) release: the reader's accesses to the node it protected happen before a
    // scanner's acquire load (4) that sees the cleared record.
    record->pointer.store(nullptr, std::memory_order_release);
    hazard_thread_state& state = hazard_tls;
    if (!state.exited && state.cached < hazard_thread_state::cache_capacity) {
      register_thread_flush(state);
      state.cache[state.cached++] = record;
      return;
    }
    // (2) release: pairs with the acquire CAS (3) of the next thread to take it.
    record->in_use.store(false, std::memory_order_release);
  }

  /// Hands `node` to the domain: it is reclaimed once no hazard record holds it.
  /// The caller must already have unpublished it. May free one earlier node (run its
  /// destructor) and, every ~1024 calls, scan. Never throws.
  void retire(retirable* node) noexcept {
    hazard_thread_state& state = hazard_tls;
    if (!push_retired(state, node)) return;
    // A retire from inside a reclaim (a destructor releasing another slot) only
    // pushes: the loop that runs the reclaim frees the rest, so nesting stays one
    // level deep however many nodes free others.
    if (state.reclaiming) return;
    reclaim_one(state);
    if (state.retired_count >= scan_threshold()) scan(state);
  }

  /// Reclaims now every node retired by this thread or by exited threads that no
  /// record protects, including what those frees retire in turn. For tests and
  /// orderly shutdown; never needed for correctness. Does nothing when called from a
  /// destructor that a reclaim is running.
  void reclaim_now() noexcept {
    hazard_thread_state& state = hazard_tls;
    if (state.exited || state.reclaiming) return;
    reclaim_everything(state);
  }

  /// Called when a thread exits: cached records go back, unreclaimed nodes become orphans.
  void thread_exit(hazard_thread_state& state) noexcept {
    // Reclaim first: a destructor run here may still take and return a record.
    reclaim_everything(state);
    while (state.cached > 0) {
      state.cache[--state.cached]->in_use.store(false, std::memory_order_release);  // (2)
    }
    orphan_leftovers(state);
    state.exited = true;
  }

 private:
  constexpr hazard_domain() = default;

  /// A thread scans after this many retirements. Each scan costs a membarrier (an
  /// inter-processor interrupt to every CPU running the process, expensive in a VM),
  /// so scans are amortized over at least 1024 nodes: measured, a threshold of 128
  /// spent a fifth of keyed_mutex's time in those interrupts. A thread therefore holds
  /// at most 1024 (or 2 x records) + records nodes retired or awaiting their free
  /// (each retire frees one reclaimable node, so that list drains as the next fills),
  /// plus what it adopted from exited threads at its last scan.
  std::size_t scan_threshold() const noexcept {
    // Relaxed: a heuristic; a stale count only moves the next scan a little.
    const std::size_t records = record_count_.load(std::memory_order_relaxed);
    return std::max<std::size_t>(1024, 2 * records);
  }

  static void register_thread_flush(hazard_thread_state& state) noexcept;

  /// Pushes `node` on this thread's retired list; false when the thread has exited,
  /// in which case the node was dealt with here (see retire_after_exit).
  bool push_retired(hazard_thread_state& state, retirable* node) noexcept {
    if (!state.exited) register_thread_flush(state);
    node->next_retired = state.retired;
    state.retired = node;
    ++state.retired_count;
    if (!state.exited) return true;
    // A retire nested in the reclaim below only pushes: that loop frees it too.
    if (!state.reclaiming) retire_after_exit(state);
    return false;
  }

  /// A retire after this thread's exit flush: a static cas_slot destroyed after main's
  /// thread_locals, or a thread_local destroyed after the flusher. No later retire of
  /// this thread will scan, so its node is freed now if no reader holds it, as the exit
  /// flush would have done; what a reader still holds goes to the orphans, for the next
  /// scan of a live thread. (Orphaning it at once left a static slot's last value
  /// undestroyed at exit.) One scan, with its membarrier, per such retire.
  void retire_after_exit(hazard_thread_state& state) noexcept {
    const bool outer = std::exchange(state.reclaiming, true);
    reclaim_everything(state);
    state.reclaiming = outer;
    orphan_leftovers(state);
  }

  /// Hands whatever this thread still has retired to the orphan list.
  void orphan_leftovers(hazard_thread_state& state) noexcept {
    if (state.retired != nullptr) {
      retirable* tail = state.retired;
      while (tail->next_retired != nullptr) tail = tail->next_retired;
      push_orphans(state.retired, tail);
    }
    state.retired = nullptr;
    state.retired_count = 0;
  }

  /// Scans and frees until a round frees nothing (or nothing retired is left).
  void reclaim_everything(hazard_thread_state& state) noexcept {
    do {
      scan(state);
    } while (reclaim_all(state) > 0 && state.retired != nullptr);
  }

  /// A free record of any thread, or a new one; nullptr when none is free and
  /// allocating one failed.
  hazard_record* acquire_shared_record() noexcept {
    // (3) acquire: pairs with the release (2) of the thread that gave it back.
    for (hazard_record* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
      bool expected = false;
      if (!r->in_use.load(std::memory_order_relaxed) &&  // cheap pre-check; the CAS decides
          r->in_use.compare_exchange_strong(expected, true, std::memory_order_acquire,
                                            std::memory_order_relaxed)) {
        return r;
      }
    }
    auto* record = new (std::nothrow) hazard_record;
    if (record == nullptr) return nullptr;
    record->in_use.store(true, std::memory_order_relaxed);  // not yet shared
    record->next = records_.load(std::memory_order_relaxed);
    // (5) release: publishes the record's fields to scanners' acquire loads (4).
    while (!records_.compare_exchange_weak(record->next, record, std::memory_order_release,
                                           std::memory_order_relaxed)) {
    }
    record_count_.fetch_add(1, std::memory_order_relaxed);  // only a heuristic reads it
    return record;
  }

  void push_orphans(retirable* head, retirable* tail) noexcept {
    tail->next_retired = orphans_.load(std::memory_order_relaxed);
    // (6) release: pairs with the acquire exchange (7) of the adopting scanner.
    while (!orphans_.compare_exchange_weak(tail->next_retired, head, std::memory_order_release,
                                           std::memory_order_relaxed)) {
    }
  }

  void adopt_orphans(hazard_thread_state& state) noexcept {
    // (7) acquire: pairs with (6).
    retirable* adopted = orphans_.exchange(nullptr, std::memory_order_acquire);
    while (adopted != nullptr) {
      retirable* next = adopted->next_retired;
      adopted->next_retired = state.retired;
      state.retired = adopted;
      ++state.retired_count;
      adopted = next;
    }
  }

  /// Frees the oldest-found node that a scan left reclaimable, if any. Freeing one per
  /// retire keeps the allocator's per-thread cache in balance: a writer that allocates
  /// one node per commit gets this one back, where freeing a whole scan's worth at once
  /// (a thousand nodes) overflowed that cache into the allocator's slower shared bins.
  /// The node leaves the list before its reclaim runs, so a reclaim that retires (a
  /// destructor releasing another protected structure) may re-enter safely.
  static void reclaim_one(hazard_thread_state& state) noexcept {
    retirable* node = state.reclaimable;
    if (node == nullptr) return;
    state.reclaimable = node->next_retired;
    const bool outer = std::exchange(state.reclaiming, true);
    node->reclaim(node);
    state.reclaiming = outer;
  }

  /// Frees every reclaimable node; returns how many.
  static std::size_t reclaim_all(hazard_thread_state& state) noexcept {
    std::size_t freed = 0;
    for (; state.reclaimable != nullptr; ++freed) reclaim_one(state);
    return freed;
  }

  /// Moves every retired node that no hazard record holds to the reclaimable list.
  /// What the previous scan left there is freed first (normally nothing: each retire
  /// since then freed one), so that list never holds more than one scan's worth.
  void scan(hazard_thread_state& state) noexcept {
    reclaim_all(state);
    adopt_orphans(state);
    if (state.retired == nullptr) return;
    std::vector<const void*> hazards;
    try {
      hazards.reserve(record_count_.load(std::memory_order_relaxed) + 16);
    } catch (const std::bad_alloc&) {
      return;  // keep everything; the next retire tries again
    }
    // Every reader's hazard store that preceded its successful re-validation is
    // visible after this barrier (light_barrier is the other half).
    heavy_barrier();
    // (4) acquire: pairs with the records_ publication (5) and with a reader's
    // release of its record (1), so a cleared record means the reader is done.
    for (hazard_record* r = records_.load(std::memory_order_acquire); r != nullptr; r = r->next) {
      if (const void* p = r->pointer.load(barrier_load_order); p != nullptr) {
        try {
          hazards.push_back(p);
        } catch (const std::bad_alloc&) {
          return;  // keep everything; the next retire tries again
        }
      }
    }
    std::sort(hazards.begin(), hazards.end());
    retirable* keep = nullptr;
    std::size_t kept = 0;
    retirable* node = state.retired;
    while (node != nullptr) {
      retirable* next = node->next_retired;
      const bool is_protected =
          std::binary_search(hazards.begin(), hazards.end(), static_cast<const void*>(node));
      retirable*& list = is_protected ? keep : state.reclaimable;
      node->next_retired = list;
      list = node;
      if (is_protected) ++kept;
      node = next;
    }
    state.retired = keep;
    state.retired_count = kept;
  }

  std::atomic<hazard_record*> records_{nullptr};
  std::atomic<std::size_t> record_count_{0};
  std::atomic<retirable*> orphans_{nullptr};

  static hazard_domain process_domain_;
};

inline constinit hazard_domain hazard_domain::process_domain_{};
static_assert(std::is_trivially_destructible_v<hazard_domain>,
              "hazard_domain: never torn down, see instance()");

/// Runs hazard_domain::thread_exit when the owning thread ends.
struct hazard_thread_flusher {
  ~hazard_thread_flusher() { hazard_domain::instance().thread_exit(hazard_tls); }
};

inline void hazard_domain::register_thread_flush(hazard_thread_state& state) noexcept {
  if (state.flush_registered) return;
  state.flush_registered = true;
  thread_local hazard_thread_flusher flusher;
  (void)flusher;  // odr-use: constructs it for this thread, so its destructor runs
}

/// Holds one hazard record: protects at most one node at a time. Movable, not
/// copyable. Construction may throw std::bad_alloc (see acquire_record).
class hazard_guard {
 public:
  hazard_guard() : record_(hazard_domain::instance().acquire_record()) {}
  /// A guard with a record if one can be had without throwing; check has_record().
  explicit hazard_guard(std::nothrow_t) noexcept
      : record_(hazard_domain::instance().acquire_record(std::nothrow)) {}
  /// A guard without a record (protects nothing; cannot protect until assigned).
  explicit hazard_guard(std::nullptr_t) noexcept : record_(nullptr) {}
  hazard_guard(hazard_guard&& other) noexcept : record_(std::exchange(other.record_, nullptr)) {}
  hazard_guard& operator=(hazard_guard&& other) noexcept {
    std::swap(record_, other.record_);
    return *this;
  }
  hazard_guard(const hazard_guard&) = delete;
  hazard_guard& operator=(const hazard_guard&) = delete;
  ~hazard_guard() {
    if (record_ != nullptr) hazard_domain::instance().release_record(record_);
  }

  /// Loads `source` and protects the loaded node: the result stays valid (not
  /// reclaimed) until this guard protects something else or is destroyed.
  /// Lock-free: retries only when a writer replaced the node in between.
  template <class T>
  T* protect(const std::atomic<T*>& source) noexcept {
    // Relaxed: a first guess, validated below.
    T* candidate = source.load(std::memory_order_relaxed);
    for (;;) {
      set(candidate);
      light_barrier();
      // (8) acquire: pairs with the writer's release CAS that published the node, so
      // the node's contents are visible once we see its address. (seq_cst under TSan:
      // barrier_load_order.)
      T* current = source.load(barrier_load_order);
      if (current == candidate) return current;
      candidate = current;
    }
  }

  /// Protects `node` without validation. The caller guarantees that the node cannot
  /// be retired before this store is visible to a scanner: it owns the node and has
  /// not yet published it (the publishing release orders this store first), or it
  /// holds the lock under which the node would be unlinked (the unlock orders it).
  void protect_stable(const void* node) noexcept { set(node); }

  /// False for a guard made from nullptr or std::nothrow without a record, or moved
  /// from: such a guard cannot protect.
  [[nodiscard]] bool has_record() const noexcept { return record_ != nullptr; }

  void clear() noexcept {
    if (record_ == nullptr) return;
    // (9) release: as (1).
    record_->pointer.store(nullptr, std::memory_order_release);
  }

 private:
  void set(const void* node) noexcept {
    if constexpr (INTERLOCK_TSAN) {
      // TSan does not model the barrier pair; a seq_cst store gives it the
      // happens-before edge from this reader to the scanner.
      record_->pointer.store(node, std::memory_order_seq_cst);
    } else {
      // Release, not relaxed: the store-load order before the re-load comes from
      // light_barrier / heavy_barrier, but overwriting a slot also ends the protection
      // of the node it held, so the reader's accesses to that node must happen before
      // a scan that sees the new value (as clear() does). Where membarrier is missing
      // (the seq_cst-fence fallback) only this release gives that edge. A plain store
      // on x86; on Arm, a store-release.
      record_->pointer.store(node, std::memory_order_release);
    }
  }

  hazard_record* record_;
};

}  // namespace detail

/// Reclaims now every value that this thread or an exited thread replaced and that
/// no live snapshot still holds. Never needed for correctness (reclamation runs on
/// its own every thousand or so replacements); useful in tests and before measuring
/// memory. Called from a value's destructor while a reclamation runs, it does nothing.
inline void reclaim_retired() noexcept { detail::hazard_domain::instance().reclaim_now(); }

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_HAZARD_POINTER_HPP
