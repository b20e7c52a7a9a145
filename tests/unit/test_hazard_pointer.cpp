// detail::hazard_domain: what a scan finds unprotected is freed one node per later
// retire (not all at once), protected nodes are never freed, reclaim_retired() frees
// everything unprotected, and a node whose destruction retires another node loses
// nothing.
#include <interlock/detail/hazard_pointer.hpp>

#include <catch2/catch.hpp>

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace {

using interlock::detail::hazard_domain;
using interlock::detail::hazard_guard;
using interlock::detail::retirable;

/// A retirable node that counts its frees. When it owns a child, freeing it retires
/// the child (as a value holding the last reference to another slot does).
struct counted_node : retirable {
  static inline std::size_t freed = 0;  // this thread's nodes are freed on this thread
  explicit counted_node(counted_node* owned_child = nullptr) : child(owned_child) {
    reclaim = [](retirable* self) noexcept {
      auto* node = static_cast<counted_node*>(self);
      if (node->child != nullptr) hazard_domain::instance().retire(node->child);
      ++freed;
      delete node;
    };
  }
  counted_node* child;
};

void retire(counted_node* node) { hazard_domain::instance().retire(node); }

}  // namespace

TEST_CASE("a scan's unprotected nodes are freed one per later retire", "[hazard][memory]") {
  interlock::reclaim_retired();
  counted_node::freed = 0;

  // Retire until the first scan has run: before it nothing is freed. The scan
  // threshold depends on how many hazard records the process has (at least 1024).
  constexpr std::size_t limit = 1'000'000;
  std::size_t retired = 0;
  std::size_t first_free_at = 0;
  while (retired < limit && first_free_at == 0) {
    retire(new counted_node);
    ++retired;
    if (counted_node::freed > 0) first_free_at = retired;
  }
  REQUIRE(first_free_at > 0);
  INFO("first free after " << first_free_at << " retires");
  CHECK(first_free_at >= 1024);     // nothing is freed before the first scan
  CHECK(counted_node::freed == 1);  // and the scan itself freed nothing at once

  // From then on each retire frees exactly one node: a scan's thousand nodes are not
  // handed back to the allocator in one burst.
  std::size_t frees_of_more_than_one = 0;
  for (int i = 0; i < 512; ++i) {
    const std::size_t before = counted_node::freed;
    retire(new counted_node);
    ++retired;
    if (counted_node::freed - before > 1) ++frees_of_more_than_one;
  }
  CHECK(frees_of_more_than_one == 0);
  CHECK(counted_node::freed == 1 + 512);

  interlock::reclaim_retired();
  CHECK(counted_node::freed == retired);  // nothing left behind
}

TEST_CASE("a protected node outlives every scan until its guard lets go", "[hazard][memory]") {
  interlock::reclaim_retired();
  counted_node::freed = 0;

  auto* held = new counted_node;
  std::size_t retired = 0;
  {
    hazard_guard guard;
    guard.protect_stable(held);  // the node is still ours: nothing can free it meanwhile
    retire(held);
    ++retired;
    for (int i = 0; i < 5000; ++i) {  // several scans
      retire(new counted_node);
      ++retired;
    }
    interlock::reclaim_retired();
    CHECK(counted_node::freed == retired - 1);  // all but the protected one
  }
  interlock::reclaim_retired();
  CHECK(counted_node::freed == retired);
}

TEST_CASE("a node whose free retires another node loses nothing", "[hazard][memory]") {
  interlock::reclaim_retired();
  counted_node::freed = 0;

  // Chains parent -> child -> grandchild: each free retires the next node during a
  // scan's reclamation. Enough of them that frees happen during scans and drips.
  constexpr std::size_t chains = 3000;
  for (std::size_t i = 0; i < chains; ++i) {
    retire(new counted_node(new counted_node(new counted_node)));
  }
  interlock::reclaim_retired();
  CHECK(counted_node::freed == 3 * chains);
}

TEST_CASE("frees that retire more nodes do not nest on the stack", "[hazard][memory]") {
  // Thousands of nodes each holding the last reference to another: freeing one
  // retires the next. On a small stack (64 KiB) that must not recurse once per
  // node. Runs in its own thread so the stack size is known.
  struct outcome {
    std::size_t retired = 0;
    std::size_t freed = 0;
  } result;
  pthread_attr_t attributes;
  REQUIRE(pthread_attr_init(&attributes) == 0);
  REQUIRE(pthread_attr_setstacksize(&attributes, 64 * 1024) == 0);
  pthread_t thread;
  const int started = pthread_create(
      &thread, &attributes,
      [](void* out) -> void* {
        auto& r = *static_cast<outcome*>(out);
        interlock::reclaim_retired();
        counted_node::freed = 0;
        for (int i = 0; i < 20'000; ++i) {
          retire(new counted_node(new counted_node));
          r.retired += 2;
        }
        interlock::reclaim_retired();
        r.freed = counted_node::freed;
        return nullptr;
      },
      &result);
  pthread_attr_destroy(&attributes);
  REQUIRE(started == 0);
  REQUIRE(pthread_join(thread, nullptr) == 0);
  CHECK(result.freed == result.retired);
}

namespace {
/// A retirable node that counts its frees in an atomic (freed on any thread).
struct shared_counted_node : retirable {
  static inline std::atomic<int> freed{0};
  shared_counted_node() {
    reclaim = [](retirable* self) noexcept {
      freed.fetch_add(1);
      delete static_cast<shared_counted_node*>(self);
    };
  }
};

/// A thread_local whose destructor retires a node. Constructed before the thread's
/// first retire, it is destroyed after the hazard state's exit flush (thread_locals
/// are destroyed in reverse order of construction), like a static cas_slot destroyed
/// after main's thread_locals at exit.
struct retires_when_destroyed {
  shared_counted_node* node = nullptr;
  ~retires_when_destroyed() {
    if (node != nullptr) hazard_domain::instance().retire(node);
  }
};
}  // namespace

TEST_CASE("a node retired after its thread's exit flush is freed then, not orphaned",
          "[hazard][memory]") {
  // It used to go straight to the orphan list, which only a later scan of another
  // thread empties: a static cas_slot's last value was never destroyed at exit.
  shared_counted_node::freed = 0;
  std::thread worker([] {
    static thread_local retires_when_destroyed late;  // constructed first: destroyed last
    late.node = new shared_counted_node;
    hazard_domain::instance().retire(new shared_counted_node);  // registers the exit flush
  });
  worker.join();
  CHECK(shared_counted_node::freed.load() == 2);
}
