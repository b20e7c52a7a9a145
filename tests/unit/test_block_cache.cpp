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
  std::thread([] {
    auto* first = new small_node;
    first->words[0] = 1;
    void* const address = first;
    delete first;
    CHECK(small_cache::cached_blocks() == 1);
    auto* second = new small_node;  // value-initialized again by its constructor
    CHECK(static_cast<void*>(second) == address);
    CHECK(second->words[0] == 0);
    CHECK(small_cache::cached_blocks() == 0);
    delete second;
  }).join();
}

TEST_CASE("block_cache keeps at most capacity blocks per thread", "[block_cache]") {
  std::thread([] {
    std::vector<std::unique_ptr<small_node>> nodes;
    for (std::size_t i = 0; i < 3 * small_cache::capacity; ++i) {
      nodes.push_back(std::make_unique<small_node>());
    }
    nodes.clear();
    CHECK(small_cache::cached_blocks() == small_cache::capacity);
    // Each node type has its own cache.
    CHECK(aligned_cache::cached_blocks() == 0);
  }).join();
}

TEST_CASE("block_cache keeps the alignment of over-aligned nodes", "[block_cache]") {
  std::thread([] {
    std::vector<std::unique_ptr<aligned_node>> nodes;
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 20; ++i) nodes.push_back(std::make_unique<aligned_node>());
      for (const auto& n : nodes) {
        CHECK(reinterpret_cast<std::uintptr_t>(n.get()) % alignof(aligned_node) == 0);
      }
      nodes.clear();
    }
  }).join();
}

TEST_CASE("block_cache blocks freed by another thread are reused by it", "[block_cache]") {
  std::vector<small_node*> made;
  std::thread([&] {
    for (int i = 0; i < 4; ++i) made.push_back(new small_node);
  }).join();
  std::thread([&] {
    for (small_node* n : made) delete n;  // allocated by the other (exited) thread
    CHECK(small_cache::cached_blocks() == 4);
    auto* reused = new small_node;
    CHECK(static_cast<void*>(reused) == static_cast<void*>(made.back()));
    delete reused;
  }).join();
}

TEST_CASE("block_cache does not keep blocks freed after the thread's cache closed",
          "[block_cache]") {
  std::size_t kept_after_exit_free = 99;
  std::thread([&] {
    // Constructed before the first free on this thread registers the closer, so it
    // is destroyed after the closer ran.
    thread_local free_at_thread_exit late;
    late.report = &kept_after_exit_free;
    late.node = new small_node;
    delete new small_node;  // registers the closer; one block kept
    CHECK(small_cache::cached_blocks() == 1);
  }).join();
  CHECK(kept_after_exit_free == 0);  // freed to the allocator, not kept (and leaked)
}
