// detail::record_pool: blocks are distinct, aligned and inside their run; a freed block
// is reused by its shard (also when another thread freed it); memory stays bounded by
// the blocks live at once; the pool outlives its owner until its last block is freed.
// Run under ASan (a block used after the pool is gone, or a pool never freed, is
// reported) and TSan (blocks handed between threads).
#include <interlock/detail/record_pool.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace {

using interlock::detail::record_pool;
using interlock::detail::record_pool_allocator;

constexpr std::size_t block_bytes = 208;  // an idempotency record's size, roughly
constexpr std::size_t block_align = 16;

std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

/// Offset of `p` inside its run.
std::size_t offset_in_run(const void* p) { return address_of(p) % record_pool::run_bytes; }

/// A block stamped with an id in every word, to detect two owners of one block.
void stamp(void* block, std::uint64_t id) {
  for (std::size_t i = 0; i < block_bytes / sizeof id; ++i) {
    std::memcpy(static_cast<char*>(block) + i * sizeof id, &id, sizeof id);
  }
}

bool stamped_with(const void* block, std::uint64_t id) {
  for (std::size_t i = 0; i < block_bytes / sizeof id; ++i) {
    std::uint64_t word = 0;
    std::memcpy(&word, static_cast<const char*>(block) + i * sizeof id, sizeof id);
    if (word != id) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("record_pool carves distinct, aligned blocks inside their runs, across chunks",
          "[record_pool]") {
  record_pool::owner pool(4);
  // More than the first chunk (256 KiB) holds: the second chunk (2 MiB) is taken.
  const std::size_t first_chunk = record_pool::first_chunk_bytes(4);
  REQUIRE(first_chunk == 256 * 1024);
  const std::size_t count = 2 * first_chunk / block_bytes;
  std::vector<void*> blocks;
  std::set<std::uintptr_t> addresses;
  for (std::size_t i = 0; i < count; ++i) {
    void* b = pool.at(1).allocate(block_bytes, block_align);
    blocks.push_back(b);
    addresses.insert(address_of(b));
    stamp(b, i);
  }
  CHECK(addresses.size() == count);  // distinct
  bool aligned = true;
  bool inside_run = true;
  for (void* b : blocks) {
    aligned = aligned && address_of(b) % block_align == 0;
    const std::size_t offset = offset_in_run(b);
    inside_run = inside_run && offset >= record_pool::run_header_bytes &&
                 offset + block_bytes <= record_pool::run_bytes;
  }
  CHECK(aligned);
  CHECK(inside_run);
  bool intact = true;  // no block overwrote another
  for (std::size_t i = 0; i < count; ++i) intact = intact && stamped_with(blocks[i], i);
  CHECK(intact);
  CHECK(pool.reserved_bytes() == first_chunk + record_pool::chunk_bytes);
  for (void* b : blocks) record_pool::deallocate(b);
}

TEST_CASE("record_pool reuses a freed block, and memory stays at the blocks live at once",
          "[record_pool]") {
  record_pool::owner pool(2);
  void* first = pool.at(0).allocate(block_bytes, block_align);
  record_pool::deallocate(first);
  void* again = pool.at(0).allocate(block_bytes, block_align);
  CHECK(again == first);  // the shard's own freed block comes back first

  // A million allocations with at most 64 live at a time never need a second chunk.
  std::vector<void*> live;
  for (std::size_t i = 0; i < 1'000'000; ++i) {
    live.push_back(pool.at(i % 2).allocate(block_bytes, block_align));
    if (live.size() == 64) {
      for (void* b : live) record_pool::deallocate(b);
      live.clear();
    }
  }
  for (void* b : live) record_pool::deallocate(b);
  CHECK(pool.reserved_bytes() == record_pool::first_chunk_bytes(2));
  record_pool::deallocate(again);
}

TEST_CASE("record_pool takes back blocks freed by other threads while its shards allocate",
          "[record_pool]") {
  // Two allocating threads (one shard each, as a shard lock would allow) hand every
  // block, stamped with a unique id, to two freeing threads. A block handed out twice
  // while live would fail its stamp check. At most `in_flight` blocks are out at once
  // (the allocators wait for the freers), so the memory bound below does not depend
  // on how the threads are scheduled.
  constexpr std::size_t per_allocator = 100'000;
  constexpr std::size_t in_flight = 2048;
  std::atomic<std::size_t> outstanding{0};
  record_pool::owner pool(2);
  std::mutex queue_mutex;
  std::vector<std::pair<void*, std::uint64_t>> queue;
  std::atomic<int> allocators_running{2};
  std::atomic<std::size_t> corrupted{0};
  std::atomic<std::size_t> freed{0};

  auto allocator = [&](std::size_t shard) {
    for (std::size_t i = 0; i < per_allocator; ++i) {
      while (outstanding.load() >= in_flight) std::this_thread::yield();
      outstanding.fetch_add(1);
      void* b = pool.at(shard).allocate(block_bytes, block_align);
      const std::uint64_t id = shard * per_allocator + i;
      stamp(b, id);
      std::lock_guard lock(queue_mutex);
      queue.emplace_back(b, id);
    }
    allocators_running.fetch_sub(1);
  };
  auto freer = [&] {
    for (;;) {
      std::vector<std::pair<void*, std::uint64_t>> batch;
      {
        std::lock_guard lock(queue_mutex);
        batch.swap(queue);
      }
      if (batch.empty()) {
        if (allocators_running.load() == 0) {
          std::lock_guard lock(queue_mutex);
          if (queue.empty()) return;
        }
        std::this_thread::yield();
        continue;
      }
      for (auto [b, id] : batch) {
        if (!stamped_with(b, id)) corrupted.fetch_add(1);
        record_pool::deallocate(b);
        freed.fetch_add(1);
        outstanding.fetch_sub(1);
      }
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(allocator, 0);
  threads.emplace_back(allocator, 1);
  threads.emplace_back(freer);
  threads.emplace_back(freer);
  for (auto& t : threads) t.join();
  CHECK(corrupted.load() == 0);
  CHECK(freed.load() == 2 * per_allocator);
  // About 2,050 blocks live at most (about 430 KiB): the first chunk and one more, where
  // 200,000 blocks without reuse would take about 40 MiB.
  CHECK(pool.reserved_bytes() <= record_pool::first_chunk_bytes(2) + record_pool::chunk_bytes);
}

TEST_CASE("record_pool outlives its owner until the last block is freed", "[record_pool]") {
  // Under ASan, writing a block of a freed pool is also reported.
  const std::size_t pools_before = record_pool::pools_alive();
  void* survivor = nullptr;
  {
    record_pool::owner pool(1);
    survivor = pool.at(0).allocate(block_bytes, block_align);
    CHECK(record_pool::pools_alive() == pools_before + 1);
  }
  CHECK(record_pool::pools_alive() == pools_before + 1);  // kept by its block
  stamp(survivor, 42);
  CHECK(stamped_with(survivor, 42));
  record_pool::deallocate(survivor);  // the last block: frees the pool
  CHECK(record_pool::pools_alive() == pools_before);

  { record_pool::owner unused(4); }
  CHECK(record_pool::pools_alive() == pools_before);  // no block ever: freed with its owner
}

TEST_CASE("record_pool: last frees from many threads race the owner's destruction",
          "[record_pool]") {
  // Four threads free the blocks of two shards (each shard's live count reaching zero
  // again and again) while the owner is destroyed midway: the pool is freed exactly
  // once, after the last block (TSan checks the ordering, ASan the lifetime).
  const std::size_t pools_before = record_pool::pools_alive();
  constexpr std::size_t per_thread = 20'000;
  auto pool = std::make_unique<record_pool::owner>(2);
  std::vector<std::vector<void*>> blocks(4);
  for (std::size_t t = 0; t < 4; ++t) {
    for (std::size_t i = 0; i < per_thread; ++i) {
      blocks[t].push_back(pool->at(t % 2).allocate(block_bytes, block_align));
    }
  }
  std::atomic<std::size_t> freed{0};
  std::vector<std::thread> freers;
  for (std::size_t t = 0; t < 4; ++t) {
    freers.emplace_back([&, t] {
      for (void* b : blocks[t]) {
        record_pool::deallocate(b);
        freed.fetch_add(1);
      }
    });
  }
  while (freed.load() < 2 * per_thread) std::this_thread::yield();
  pool.reset();  // half the blocks still out
  for (auto& t : freers) t.join();
  CHECK(freed.load() == 4 * per_thread);
  CHECK(record_pool::pools_alive() == pools_before);
}

TEST_CASE("record_pool refuses blocks it cannot hold; the allocator sends them to operator new",
          "[record_pool]") {
  record_pool::owner pool(1);
  CHECK_THROWS_AS(pool.at(0).allocate(record_pool::max_block_bytes + 1, 8), std::bad_alloc);
  CHECK_THROWS_AS(pool.at(0).allocate(64, 128), std::bad_alloc);
  CHECK_THROWS_AS(pool.at(0).allocate(64, 24), std::bad_alloc);  // not a power of two
  CHECK(pool.reserved_bytes() == 0);

  struct large {
    char bytes[4 * record_pool::max_block_bytes];
  };
  struct alignas(128) over_aligned {
    std::uint64_t word;
  };
  auto big = std::allocate_shared<large>(record_pool_allocator<large>(pool.at(0)));
  auto wide = std::allocate_shared<over_aligned>(record_pool_allocator<over_aligned>(pool.at(0)));
  big->bytes[sizeof big->bytes - 1] = 'x';  // all of it is addressable (ASan)
  CHECK(address_of(wide.get()) % 128 == 0);
  CHECK(pool.reserved_bytes() == 0);  // neither came from the pool
}

TEST_CASE("record_pool_allocator serves std::allocate_shared", "[record_pool]") {
  struct payload {
    std::uint64_t words[4];
  };
  std::shared_ptr<payload> kept;
  {
    record_pool::owner pool(8);
    auto p = std::allocate_shared<payload>(record_pool_allocator<payload>(pool.at(3)),
                                           payload{{1, 2, 3, 4}});
    // The control block and the object are one block in shard 3's run.
    CHECK(pool.reserved_bytes() == record_pool::first_chunk_bytes(8));
    CHECK(offset_in_run(p.get()) >= record_pool::run_header_bytes);
    kept = p;
  }
  CHECK(kept->words[3] == 4);  // still valid after the owner is gone
  kept.reset();                // frees the block and, with it, the pool
}
