// detail::block_cache: a freed block is handed back to the same thread's next
// allocation, at most `capacity` blocks are kept per thread, and a thread's blocks are
// released at its exit (also those freed during its exit, after the cache closed).
#include <interlock/detail/block_cache.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

namespace {

using interlock::detail::block_cache;
using interlock::detail::cached_allocation;

struct small_node : cached_allocation<small_node> {
  std::uint64_t words[6] = {};
};

struct alignas(64) aligned_node : cached_allocation<aligned_node> {
  std::uint64_t word = 0;
};

using small_cache = block_cache<sizeof(small_node), alignof(small_node)>;
using aligned_cache = block_cache<sizeof(aligned_node), alignof(aligned_node)>;

/// Frees `node` from a thread_local destructor: constructed before the cache's own
/// closer, it is destroyed after it, so the free meets a closed cache.
struct free_at_thread_exit {
  small_node* node = nullptr;
  std::size_t kept_after_free = 99;
  std::size_t* report = nullptr;
  ~free_at_thread_exit() {
    delete node;
    kept_after_free = small_cache::cached_blocks();
    *report = kept_after_free;
  }
};

}  // namespace

TEST_CASE("block_cache hands a freed block to the next allocation", "[block_cache]") {
  // Catch2's assertions are not thread-safe: the thread records, the main thread checks.
  std::size_t kept_after_free = 99;
  std::size_t kept_after_reuse = 99;
  bool same_address = false;
  std::uint64_t reused_word = 99;
  std::thread([&] {
    auto* first = new small_node;
    first->words[0] = 1;
    void* const address = first;
    delete first;
    kept_after_free = small_cache::cached_blocks();
    auto* second = new small_node;  // value-initialized again by its constructor
    same_address = static_cast<void*>(second) == address;
    reused_word = second->words[0];
    kept_after_reuse = small_cache::cached_blocks();
    delete second;
  }).join();
  CHECK(kept_after_free == 1);
  CHECK(same_address);
  CHECK(reused_word == 0);
  CHECK(kept_after_reuse == 0);
}

TEST_CASE("block_cache keeps at most capacity blocks per thread", "[block_cache]") {
  std::size_t small_kept = 0;
  std::size_t aligned_kept = 99;
  std::thread([&] {
    std::vector<std::unique_ptr<small_node>> nodes;
    for (std::size_t i = 0; i < 3 * small_cache::capacity; ++i) {
      nodes.push_back(std::make_unique<small_node>());
    }
    nodes.clear();
    small_kept = small_cache::cached_blocks();
    aligned_kept = aligned_cache::cached_blocks();
  }).join();
  CHECK(small_kept == small_cache::capacity);
  // Each node type has its own cache.
  CHECK(aligned_kept == 0);
}

TEST_CASE("block_cache keeps the alignment of over-aligned nodes", "[block_cache]") {
  int checked = 0;
  int misaligned = 0;
  std::thread([&] {
    std::vector<std::unique_ptr<aligned_node>> nodes;
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 20; ++i) nodes.push_back(std::make_unique<aligned_node>());
      for (const auto& n : nodes) {
        ++checked;
        if (reinterpret_cast<std::uintptr_t>(n.get()) % alignof(aligned_node) != 0) ++misaligned;
      }
      nodes.clear();
    }
  }).join();
  CHECK(checked == 60);
  CHECK(misaligned == 0);
}

TEST_CASE("block_cache blocks freed by another thread are reused by it", "[block_cache]") {
  std::vector<small_node*> made;
  std::thread([&] {
    for (int i = 0; i < 4; ++i) made.push_back(new small_node);
  }).join();
  std::size_t kept = 0;
  bool reused_last = false;
  std::thread([&] {
    for (small_node* n : made) delete n;  // allocated by the other (exited) thread
    kept = small_cache::cached_blocks();
    auto* reused = new small_node;
    reused_last = static_cast<void*>(reused) == static_cast<void*>(made.back());
    delete reused;
  }).join();
  CHECK(kept == 4);
  CHECK(reused_last);
}

TEST_CASE("block_cache does not keep blocks freed after the thread's cache closed",
          "[block_cache]") {
  std::size_t kept_after_exit_free = 99;
  std::size_t kept_before_exit = 99;
  std::thread([&] {
    // Constructed before the first free on this thread registers the closer, so it
    // is destroyed after the closer ran.
    thread_local free_at_thread_exit late;
    late.report = &kept_after_exit_free;
    late.node = new small_node;
    delete new small_node;  // registers the closer; one block kept
    kept_before_exit = small_cache::cached_blocks();
  }).join();
  CHECK(kept_before_exit == 1);
  CHECK(kept_after_exit_free == 0);  // freed to the allocator, not kept (and leaked)
}
