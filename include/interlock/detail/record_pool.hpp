// interlock/detail/record_pool.hpp: fixed-size blocks for the records of one keyed
// table, allocated per shard under the shard's lock and freed from any thread.
//
// Design note. An idempotency_guard that stores many results is read by lookups that
// each miss the cache on one record, at a random place among all of them. Where the
// records live matters as much as how many instructions a lookup runs: measured on
// replays over 100,000 stored keys, records in a pool of 2 MiB chunks backed by huge
// pages were replayed about 1.3x as fast as records from malloc on a 16-core Xeon at
// 2 threads (the translation of a random address is one page-walk step shorter), and
// 1.15-1.2x as fast on a 2-core AMD VM, where the same pool without huge pages did as
// well (there it is the records' own region that counts, away from the heap's other
// blocks). So an idempotency_guard allocates its records here.
//
// Layout. The pool takes chunks from the system: the first 256 KiB, every later one
// 2 MiB, each aligned to its size; on Linux a 2 MiB chunk is advised for transparent
// huge pages (madvise MADV_HUGEPAGE), so a small table never holds a huge page. Each
// shard of the table carves its blocks from a run: 16 KiB of a chunk, aligned to
// 16 KiB, whose first 64 bytes name the shard. So freeing a block needs no header and
// no lookup: the run's address is the block's address rounded down.
//
// Allocation: `allocate(shard)` is called with the caller's lock for that shard held
// (the keyed table's shard lock), so a shard's free list and current run need no
// atomics; it pops the shard's free list, else takes every block that other threads
// returned, else carves from the run, else takes a new run (the pool's mutex, once
// per run). Freeing: `deallocate(block)` pushes the block onto its shard's returned
// stack with one CAS, from any thread. Only the shard's allocator pops, and it takes
// the whole stack at once (exchange), so the stack has no ABA problem.
//
// Lifetime. The owner (the guard) holds one reference; every shard with blocks out
// holds one more, taken when its count of live blocks leaves zero and dropped when it
// returns there. So results handed out stay valid after the guard is destroyed, and
// the last block freed after that frees the whole pool. Counting per shard keeps the
// counts on 64 cache lines rather than one.
//
// Memory: the chunks are returned to the system only with the pool. A freed block is
// reused by the next record of its shard; a table that once held a million records
// keeps their memory until it is destroyed (as malloc keeps most freed small blocks).
//
// Thread-safety: allocate(shard) with that shard's lock held; deallocate from any
// thread. Progress: deallocate is lock-free; allocate is O(1) and takes the pool mutex
// once per run. Memory ordering: a returned block is pushed with a release CAS and
// taken with an acquire exchange, so what its last owner wrote happens before its
// reuse (1); the live counts and the pool's references are acquire-release, so every
// free happens before the pool is destroyed (2). Under AddressSanitizer a free block
// is poisoned (all but its link), so a use after free is still reported.
#ifndef INTERLOCK_DETAIL_RECORD_POOL_HPP
#define INTERLOCK_DETAIL_RECORD_POOL_HPP

#include <interlock/config.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
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
  static constexpr std::size_t first_chunk_bytes = 256 * 1024;
  static constexpr std::size_t chunk_bytes = 2 * 1024 * 1024;

  /// One shard's blocks. The table's lock for this shard guards `free_`, `bump_` and
  /// `run_end_`; `returned_` and `live_` are atomics any thread may touch.
  class alignas(cache_line_size) shard {
   public:
    /// A block of `size` bytes aligned to `align` (at most run_header_bytes). Call
    /// with this shard's lock held, always with the same size. Throws std::bad_alloc
    /// (nothing is allocated then).
    void* allocate(std::size_t size, std::size_t align) {
      INTERLOCK_ASSERT(align <= run_header_bytes && run_header_bytes % align == 0,
                       "record_pool: alignment above 64 bytes");
      const std::size_t block = block_size(size, align);
      if (block_ == 0) {
        block_ = block;  // written once, before any block of this shard exists
      }
      INTERLOCK_ASSERT(block_ == block, "record_pool: one block size per shard");
      void* p = pop_free();
      if (p == nullptr) p = carve();
      if (live_.fetch_add(1, std::memory_order_relaxed) == 0) pool_->acquire();
      INTERLOCK_DETAIL_UNPOISON(p, block_);
      return p;
    }

   private:
    friend class record_pool;

    static std::size_t block_size(std::size_t size, std::size_t align) noexcept {
      const std::size_t at_least = size < sizeof(free_block) ? sizeof(free_block) : size;
      return (at_least + align - 1) / align * align;
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
      // (2) acq_rel: the push above happens before whoever frees the pool.
      if (live_.fetch_sub(1, std::memory_order_acq_rel) == 1) pool_->release();
    }

    record_pool* pool_ = nullptr;
    std::size_t block_ = 0;
    free_block* free_ = nullptr;
    char* bump_ = nullptr;
    char* run_end_ = nullptr;
    std::atomic<free_block*> returned_{nullptr};
    std::atomic<std::size_t> live_{0};
  };

  /// The owner's handle: creates the pool, drops the owner's reference when destroyed.
  class owner {
   public:
    explicit owner(std::size_t shard_count) : pool_(new record_pool(shard_count)) {}
    owner(const owner&) = delete;
    owner& operator=(const owner&) = delete;
    ~owner() { pool_->release(); }

    /// Shard `index` (in [0, shard_count)).
    [[nodiscard]] shard& at(std::size_t index) const noexcept { return pool_->shards_[index]; }
    /// Bytes taken from the system so far (chunks are kept until the pool is freed).
    [[nodiscard]] std::size_t reserved_bytes() const { return pool_->reserved_bytes(); }

   private:
    record_pool* pool_;
  };

  /// Frees a block from any shard of any pool, from any thread. Lock-free.
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

  explicit record_pool(std::size_t shard_count) : shards_(new shard[shard_count]) {
    for (std::size_t i = 0; i < shard_count; ++i) shards_[i].pool_ = this;
  }

  ~record_pool() {
    for (const chunk& c : chunks_) {
      INTERLOCK_DETAIL_UNPOISON(c.memory, c.bytes);
      ::operator delete (c.memory, std::align_val_t{c.bytes});
    }
  }

  void acquire() noexcept { references_.fetch_add(1, std::memory_order_relaxed); }

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
    ::new (run) run_header{s};
    return run;
  }

  /// Under mutex_: one more chunk from the system.
  void add_chunk() {
    const std::size_t bytes = chunks_.empty() ? first_chunk_bytes : chunk_bytes;
    chunks_.reserve(chunks_.size() + 1);  // may throw before anything is allocated
    auto* memory = static_cast<char*>(::operator new (bytes, std::align_val_t{bytes}));
    advise_huge_pages(memory, bytes);
    chunks_.push_back(chunk{memory, bytes});  // cannot throw: reserved
    next_run_ = memory;
    chunk_end_ = memory + bytes;
  }

  static void advise_huge_pages([[maybe_unused]] char* memory,
                                [[maybe_unused]] std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // A hint: ignored (and harmless) where transparent huge pages are off.
    if (bytes >= chunk_bytes) (void)::madvise(memory, bytes, MADV_HUGEPAGE);
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

  std::unique_ptr<shard[]> shards_;
  std::atomic<std::size_t> references_{1};  // the owner's
  mutable std::mutex mutex_;                // guards the fields below
  std::vector<chunk> chunks_;
  char* next_run_ = nullptr;
  char* chunk_end_ = nullptr;
};

/// A standard allocator over one shard of a record_pool, for std::allocate_shared
/// (which allocates exactly one object of the rebound type). Stores one pointer.
template <class T>
class record_pool_allocator {
 public:
  using value_type = T;
  static_assert(alignof(T) <= record_pool::run_header_bytes,
                "record_pool_allocator: alignment above 64 bytes");

  explicit record_pool_allocator(record_pool::shard& s) noexcept : shard_(&s) {}
  template <class U>
  record_pool_allocator(const record_pool_allocator<U>& other) noexcept : shard_(other.shard_) {}

  T* allocate(std::size_t n) {
    INTERLOCK_ASSERT(n == 1, "record_pool_allocator: one object at a time");
    (void)n;
    return static_cast<T*>(shard_->allocate(sizeof(T), alignof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept { record_pool::deallocate(p); }

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
