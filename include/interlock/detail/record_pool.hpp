// interlock/detail/record_pool.hpp: fixed-size blocks for the records of one keyed
// table, allocated per shard under the shard's lock and freed from any thread.
//
// Design note. An idempotency_guard that stores many results is read by lookups that
// each miss the cache on one record, at a random place among all of them. Where the
// records live matters as much as how many instructions a lookup runs: measured on
// replays over 100,000 stored keys, records from this pool were replayed 1.08x-1.12x as
// fast as records from malloc at 1-2 threads on a 2-core AMD VM (where the same pool
// without huge pages did as well: there it is the records' own region that counts,
// away from the heap's other blocks), and about 1.15x (0.95x-1.38x) at 1-16 threads on
// a 16-core Xeon, where the huge pages count. The price is reuse across threads: a
// freed block goes back to its shard, whose next record any thread may create, where
// malloc gives it to the freeing thread, whose cache still holds it; creating records
// at 1-16 threads on the Xeon measured 0.77x-0.93x. So idempotency_guard uses the pool
// only when asked (idempotency_options::pooled_records).
//
// Layout. The pool maps chunks from the system: the first holds one run per shard (at
// least 256 KiB), every later one is 2 MiB, aligned to 2 MiB and, on Linux, advised
// for transparent huge pages (madvise MADV_HUGEPAGE). So a table only holds a huge
// page once its shards have filled their first runs (about 70 records each). Each
// shard carves its blocks from a run: 16 KiB of a chunk, aligned to 16 KiB, whose
// first 64 bytes name the shard. So freeing a block needs no header and no lookup: the
// run's address is the block's address rounded down. Blocks are at most 2 KiB
// (max_block_bytes) and aligned to at most 64 bytes; record_pool_allocator sends
// anything larger or more aligned to operator new.
//
// Allocation: `allocate` is called with the caller's lock for that shard held (the
// keyed table's shard lock), so a shard's free list and current run need no atomics;
// it pops the shard's free list, else takes every block that other threads returned,
// else carves from the run, else takes a new run (the pool's mutex, once per run).
// Freeing: `deallocate(block)` pushes the block onto its shard's returned stack with
// one CAS, from any thread. Only the shard's allocator pops, and it takes the whole
// stack at once (exchange), so the stack has no ABA problem.
//
// Lifetime. The pool starts with one reference for the owner (the guard) and one for
// each shard. A shard counts the blocks it handed out (under the lock, no atomic) and
// the blocks given back (an atomic on the freeing side). When the owner goes, nothing
// allocates any more: it subtracts each shard's handed-out count from its given-back
// count, and from then on the free that brings a shard's count to zero (or the owner,
// if it already is) drops the shard's reference. So results handed out stay valid after
// the guard is destroyed, the last block freed after that frees the whole pool, and an
// allocation touches no cache line that freeing threads write (it takes their returned
// blocks in one exchange when its own list is empty). One block still out keeps every
// chunk: the pool's memory returns to the system once the owner is gone and every block
// is freed (for idempotency_guard: every result released and every retired record
// reclaimed).
//
// Memory: a freed block is reused by the next record of its shard; a table that once
// held a million records keeps their memory until it is destroyed (as malloc keeps
// most freed small blocks). reserved_bytes() says how much the pool holds.
//
// Thread-safety: allocate with that shard's lock held; deallocate from any thread.
// Progress: deallocate is lock-free, except the last one after the owner is gone,
// which unmaps the pool; allocate is O(1) and takes the pool mutex once per run.
// Memory ordering: a returned block is pushed with a release CAS and taken with an
// acquire exchange, so what its last owner wrote happens before its reuse (1); the
// given-back counts and the pool's references are acquire-release, so every free
// happens before the pool is destroyed (2). Under AddressSanitizer every byte of a
// chunk that is not a block in use (or a run header) is poisoned, except the link word
// of a free block, so an overflow past a block or a use after free is still reported.
#ifndef INTERLOCK_DETAIL_RECORD_POOL_HPP
#define INTERLOCK_DETAIL_RECORD_POOL_HPP

#include <interlock/config.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

class record_pool {
  struct free_block {
    free_block* next;
  };

 public:
  static constexpr std::size_t run_bytes = 16 * 1024;
  static constexpr std::size_t run_header_bytes = 64;  // also the largest block alignment
  static constexpr std::size_t max_block_bytes = run_bytes / 8;
  static constexpr std::size_t chunk_bytes = 2 * 1024 * 1024;

  /// The size of a pool's first chunk: a run for each of `shard_count` shards, at
  /// least 256 KiB, a power of two.
  static constexpr std::size_t first_chunk_bytes(std::size_t shard_count) noexcept {
    return std::max<std::size_t>(256 * 1024, std::bit_ceil(shard_count) * run_bytes);
  }

  /// Pools now alive in the process (a diagnostic: tests check that none is leaked or
  /// freed early).
  static std::size_t pools_alive() noexcept {
    return alive_count().load(std::memory_order_acquire);
  }

  /// One shard's blocks. The table's lock for this shard guards the allocating side
  /// (`free_`, `bump_`, `run_end_`, `handed_out_`); the freeing side (`returned_`,
  /// `given_back_`) is atomic, on its own cache line, touched by any thread.
  class alignas(cache_line_size) shard {
   public:
    /// A block of `size` bytes (at most max_block_bytes) aligned to `align` (a power
    /// of two, at most run_header_bytes). Call with this shard's lock held, always with
    /// the same size. Throws std::bad_alloc (nothing is allocated then), also for a
    /// size or alignment beyond those bounds.
    void* allocate(std::size_t size, std::size_t align) {
      if (size > max_block_bytes || align > run_header_bytes || !std::has_single_bit(align)) {
        throw std::bad_alloc();
      }
      const std::size_t block = block_size(size, align);
      if (block_ == 0) {
        block_ = block;  // written once, before any block of this shard exists
      }
      INTERLOCK_ASSERT(block_ == block, "record_pool: one block size per shard");
      void* p = pop_free();
      if (p == nullptr) p = carve();
      ++handed_out_;
      INTERLOCK_DETAIL_UNPOISON(p, block_);
      return p;
    }

   private:
    friend class record_pool;

    /// `size` rounded up to `align`, and to hold (and align) a free block's link.
    static std::size_t block_size(std::size_t size, std::size_t align) noexcept {
      const std::size_t a = std::max(align, alignof(free_block));
      const std::size_t at_least = std::max(size, sizeof(free_block));
      return (at_least + a - 1) / a * a;
    }

    void* pop_free() noexcept {
      if (free_ == nullptr) {
        // (1) acquire: pairs with the release CAS in give_back.
        free_ = returned_.exchange(nullptr, std::memory_order_acquire);
        if (free_ == nullptr) return nullptr;
      }
      free_block* b = free_;
      free_ = b->next;
      return b;
    }

    void* carve() {
      if (bump_ == nullptr || run_end_ - bump_ < static_cast<std::ptrdiff_t>(block_)) {
        char* run = pool_->take_run(this);  // may throw; nothing changed yet
        bump_ = run + run_header_bytes;
        run_end_ = run + run_bytes;
      }
      void* p = bump_;
      bump_ += block_;
      return p;
    }

    /// From any thread: `p` is free again.
    void give_back(void* p) noexcept {
      auto* b = static_cast<free_block*>(p);
      INTERLOCK_DETAIL_POISON(reinterpret_cast<char*>(b) + sizeof(free_block),
                              block_ - sizeof(free_block));
      free_block* head = returned_.load(std::memory_order_relaxed);
      do {
        b->next = head;
        // (1) release: the block's last writes happen before its reuse.
      } while (!returned_.compare_exchange_weak(head, b, std::memory_order_release,
                                                std::memory_order_relaxed));
      // (2) acq_rel: the push above happens before whoever frees the pool. Before the
      // owner settled this shard the count only grows; after, it counts up from minus
      // the blocks still out, and the free that brings it to zero is the last one.
      if (given_back_.fetch_add(1, std::memory_order_acq_rel) == std::size_t(-1)) {
        pool_->release();
      }
    }

    /// The owner is gone (no allocation can follow): from now on the shard's last
    /// free releases the shard's reference to the pool, or this call does when no
    /// block is out.
    void settle() noexcept {
      // (2) acq_rel, as in give_back. given_back_ <= handed_out_ (blocks return once).
      if (given_back_.fetch_sub(handed_out_, std::memory_order_acq_rel) == handed_out_) {
        pool_->release();
      }
    }

    // The allocating side (the caller's shard lock). pool_ and block_ are written
    // before any block of the shard exists; freeing threads only read them.
    record_pool* pool_ = nullptr;
    std::size_t block_ = 0;
    free_block* free_ = nullptr;
    char* bump_ = nullptr;
    char* run_end_ = nullptr;
    std::size_t handed_out_ = 0;  // blocks ever handed out
    // The freeing side: blocks returned since the allocator last took them, and how
    // many blocks were ever returned (minus handed_out_ once settled).
    alignas(cache_line_size) std::atomic<free_block*> returned_{nullptr};
    std::atomic<std::size_t> given_back_{0};
  };

  /// The owner's handle: creates the pool, drops the owner's reference when destroyed.
  class owner {
   public:
    explicit owner(std::size_t shard_count) : pool_(new record_pool(shard_count)) {}
    owner(const owner&) = delete;
    owner& operator=(const owner&) = delete;
    /// Precondition: no allocation runs or follows. Blocks still out keep the pool.
    ~owner() {
      for (std::size_t i = 0; i < pool_->shard_count_; ++i) pool_->shards_[i].settle();
      pool_->release();
    }

    /// Shard `index` (in [0, shard_count)).
    [[nodiscard]] shard& at(std::size_t index) const noexcept { return pool_->shards_[index]; }
    /// Bytes taken from the system so far (chunks are kept until the pool is freed).
    [[nodiscard]] std::size_t reserved_bytes() const { return pool_->reserved_bytes(); }

   private:
    record_pool* pool_;
  };

  /// Frees a block from any shard of any pool, from any thread. Lock-free (the last
  /// block freed after the owner is gone also frees the pool).
  static void deallocate(void* block) noexcept {
    const auto address = reinterpret_cast<std::uintptr_t>(block);
    auto* run = reinterpret_cast<run_header*>(address & ~std::uintptr_t{run_bytes - 1});
    run->owner->give_back(block);
  }

  record_pool(const record_pool&) = delete;
  record_pool& operator=(const record_pool&) = delete;

 private:
  struct run_header {
    shard* owner;
  };
  static_assert(sizeof(run_header) <= run_header_bytes);

  explicit record_pool(std::size_t shard_count)
      : shard_count_(shard_count), shards_(new shard[shard_count]), references_(1 + shard_count) {
    for (std::size_t i = 0; i < shard_count; ++i) shards_[i].pool_ = this;
    alive_count().fetch_add(1, std::memory_order_relaxed);
  }

  ~record_pool() {
    for (const chunk& c : chunks_) unmap_chunk(c.memory, c.bytes);
    alive_count().fetch_sub(1, std::memory_order_release);
  }

  static std::atomic<std::size_t>& alive_count() noexcept {
    static constinit std::atomic<std::size_t> count{0};
    return count;
  }

  void release() noexcept {
    // (2) acq_rel: every earlier release happens before the delete.
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  /// A fresh run for `s`, named in its header. Throws std::bad_alloc.
  char* take_run(shard* s) {
    std::lock_guard lock(mutex_);
    if (next_run_ == chunk_end_) add_chunk();
    char* run = next_run_;
    next_run_ += run_bytes;
    INTERLOCK_DETAIL_UNPOISON(run, sizeof(run_header));
    ::new (run) run_header{s};
    return run;
  }

  /// Under mutex_: one more chunk from the system, poisoned until carved.
  void add_chunk() {
    const bool first = chunks_.empty();
    const std::size_t bytes = first ? first_chunk_bytes(shard_count_) : chunk_bytes;
    chunks_.reserve(chunks_.size() + 1);  // may throw before anything is mapped
    char* memory = map_chunk(bytes, /*huge_pages=*/!first);
    INTERLOCK_DETAIL_POISON(memory, bytes);
    chunks_.push_back(chunk{memory, bytes});  // cannot throw: reserved
    next_run_ = memory;
    chunk_end_ = memory + bytes;
  }

  /// `bytes` (a multiple of run_bytes, a power of two) aligned to min(bytes, 2 MiB).
  /// On Linux straight from mmap (over-mapped, then trimmed to the alignment), so the
  /// huge-page advice never outlives the chunk on memory that malloc reuses. Throws
  /// std::bad_alloc.
  static char* map_chunk(std::size_t bytes, [[maybe_unused]] bool huge_pages) {
    const std::size_t align = std::min(bytes, chunk_bytes);
#if defined(__linux__)
    const std::size_t span = bytes + align;
    void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    char* const start = static_cast<char*>(raw);
    const auto address = reinterpret_cast<std::uintptr_t>(start);
    char* const memory = start + ((align - address % align) % align);
    if (memory != start) ::munmap(start, static_cast<std::size_t>(memory - start));
    const std::size_t tail = static_cast<std::size_t>(start + span - (memory + bytes));
    if (tail != 0) ::munmap(memory + bytes, tail);
#if defined(MADV_HUGEPAGE)
    // A hint: ignored (and harmless) where transparent huge pages are off.
    if (huge_pages) (void)::madvise(memory, bytes, MADV_HUGEPAGE);
#endif
    return memory;
#else
    return static_cast<char*>(::operator new (bytes, std::align_val_t{align}));
#endif
  }

  static void unmap_chunk(char* memory, std::size_t bytes) noexcept {
    INTERLOCK_DETAIL_UNPOISON(memory, bytes);  // the addresses may be mapped again
#if defined(__linux__)
    ::munmap(memory, bytes);
#else
    ::operator delete (memory, std::align_val_t{std::min(bytes, chunk_bytes)});
#endif
  }

  std::size_t reserved_bytes() const {
    std::lock_guard lock(mutex_);
    std::size_t total = 0;
    for (const chunk& c : chunks_) total += c.bytes;
    return total;
  }

  struct chunk {
    char* memory;
    std::size_t bytes;
  };

  const std::size_t shard_count_;
  std::unique_ptr<shard[]> shards_;
  std::atomic<std::size_t> references_;  // the owner's and one per shard
  mutable std::mutex mutex_;             // guards the fields below
  std::vector<chunk> chunks_;
  char* next_run_ = nullptr;
  char* chunk_end_ = nullptr;
};

/// A standard allocator over one shard of a record_pool, for std::allocate_shared
/// (which allocates exactly one object of the rebound type). Stores one pointer. A
/// type larger than max_block_bytes or aligned to more than 64 bytes goes to operator
/// new and delete instead.
template <class T>
class record_pool_allocator {
 public:
  using value_type = T;
  using is_always_equal = std::true_type;  // deallocate never looks at the shard

  explicit record_pool_allocator(record_pool::shard& s) noexcept : shard_(&s) {}
  template <class U>
  record_pool_allocator(const record_pool_allocator<U>& other) noexcept : shard_(other.shard_) {}

  /// Whether T's blocks come from the pool.
  static constexpr bool pooled =
      sizeof(T) <= record_pool::max_block_bytes && alignof(T) <= record_pool::run_header_bytes;

  T* allocate(std::size_t n) {
    INTERLOCK_ASSERT(n == 1, "record_pool_allocator: one object at a time");
    if constexpr (pooled) {
      (void)n;
      return static_cast<T*>(shard_->allocate(sizeof(T), alignof(T)));
    } else {
      return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{alignof(T)}));
    }
  }
  /// `n` is 1; operator delete is called unsized (clang offers the sized aligned form
  /// only with -fsized-deallocation).
  void deallocate(T* p, std::size_t) noexcept {
    if constexpr (pooled) {
      record_pool::deallocate(p);
    } else {
      ::operator delete (p, std::align_val_t{alignof(T)});
    }
  }

  /// Any of them frees what any other allocated (a block names its shard).
  template <class U>
  bool operator==(const record_pool_allocator<U>&) const noexcept {
    return true;
  }

 private:
  template <class U>
  friend class record_pool_allocator;
  record_pool::shard* shard_;
};

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_RECORD_POOL_HPP
