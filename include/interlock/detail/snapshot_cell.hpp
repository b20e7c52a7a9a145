// interlock/detail/snapshot_cell.hpp: publication of immutable snapshots, shared by
// cas_slot and versioned.
//
// Design note. A snapshot cell holds an atomic pointer to an immutable node. A writer
// builds its new node completely (outside any critical region), then publishes it with
// one compare-and-swap that succeeds only if a caller-supplied condition held for the
// node it replaces; the replaced node is retired to the hazard-pointer domain and
// freed once no reader protects it. Readers protect the current node with a hazard
// pointer (detail/hazard_pointer.hpp): they never block, never see a torn value, and
// the node stays valid while protected.
//
// Because the node being replaced is protected while it is checked and compared, its
// address cannot be reused meanwhile: a successful CAS means no commit intervened
// (no ABA on the pointer).
//
// Memory ordering: the publishing CAS (1) is a release (seq_cst, for cas_slot's
// waiters) and a reader's validating load inside hazard_guard::protect is an acquire,
// so everything the writer did before publishing (building the node) is visible to a
// reader whose protect returns it.
#ifndef INTERLOCK_DETAIL_SNAPSHOT_CELL_HPP
#define INTERLOCK_DETAIL_SNAPSHOT_CELL_HPP

#include <interlock/config.hpp>
#include <interlock/detail/hazard_pointer.hpp>

#include <atomic>
#include <memory>
#include <type_traits>

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

template <class Node>
class snapshot_cell {
  static_assert(std::is_base_of_v<retirable, Node>,
                "snapshot_cell: Node must derive from retirable");

 public:
  /// An empty cell, or one that owns `initial` (published before the cell is shared).
  explicit snapshot_cell(Node* initial = nullptr) noexcept : head_(initial) {}
  snapshot_cell(const snapshot_cell&) = delete;
  snapshot_cell& operator=(const snapshot_cell&) = delete;

  /// Retires the last node (a snapshot may still protect it). Precondition: no other
  /// thread is using the cell.
  ~snapshot_cell() {
    // (2) acquire: pairs with the release CAS (1) of the last commit.
    if (Node* last = head_.load(std::memory_order_acquire)) hazard_domain::instance().retire(last);
  }

  /// Takes the current node out of the cell (the cell is left empty and its
  /// destructor retires nothing): for an owner whose readers never hold a node past
  /// their call, so that at destruction nothing can protect it and the owner may
  /// delete it at once. Precondition: no other thread is using the cell.
  [[nodiscard]] Node* release() noexcept {
    // acquire: as (2).
    return head_.exchange(nullptr, std::memory_order_acquire);
  }

  /// Loads and protects the current node (nullptr for an empty cell). Lock-free.
  Node* protect(hazard_guard& guard) const noexcept { return guard.protect(head_); }

  /// The outcome of publish: whether `fresh` was published, and otherwise the node
  /// (protected by the caller's guard) for which `decide` said no.
  struct outcome {
    bool published;
    Node* current;
  };

  /// Does nothing: the default `published` step.
  struct nothing_to_announce {
    void operator()() const noexcept {}
  };

  /// Publishes `fresh` if decide(const Node* current) holds for the node current at
  /// the moment of the CAS; prepare(Node& fresh) runs after each successful decide and
  /// before each CAS attempt (cas_slot takes its stamp there). `current_guard`
  /// protects the node being checked; on a conflict it keeps protecting the node
  /// returned. On success the cell owns `fresh` (released from the unique_ptr),
  /// published() (noexcept) runs, and then the replaced node is retired.
  /// Lock-free: a retry means another writer published.
  template <class Decide, class Prepare, class Published = nothing_to_announce>
  outcome publish(std::unique_ptr<Node>& fresh, hazard_guard& current_guard, Decide&& decide,
                  Prepare&& prepare, Published published = {}) {
    for (;;) {
      Node* current = current_guard.protect(head_);
      if (!decide(static_cast<const Node*>(current))) return {false, current};
      // `current` is protected, so its address cannot be reused before the CAS. On
      // failure the loop protects and checks the node that won.
      if (publish_if_current(fresh, current, prepare, published)) return {true, current};
    }
  }

  /// The current node's address with a seq_cst load, only to compare with a node the
  /// caller protects (it is never dereferenced): a waiter's check that no commit
  /// slipped past its registration (cas_slot). Wait-free.
  [[nodiscard]] const Node* current_seq_cst() const noexcept {
    return head_.load(std::memory_order_seq_cst);
  }

  /// Publishes `fresh` if `expected` is still the current node: the commit of a
  /// read-modify-write that already holds `expected` protected (so its address cannot
  /// be reused meanwhile: no ABA). Nothing here dereferences the current node, so no
  /// hazard pointer is taken. prepare(Node& fresh) runs once, before the CAS. On
  /// success the cell owns `fresh`, published() (noexcept) runs, and then `expected`
  /// is retired. Wait-free (one CAS), apart from what retiring runs.
  ///
  /// published() comes before retiring because retiring may run the destructor of an
  /// older node's value, and now and then a reclamation scan (a membarrier system
  /// call): cas_slot wakes its waiters there, so that no waiter sleeps through user
  /// code (a destructor that joins a thread waiting on the same slot would deadlock).
  template <class Prepare, class Published = nothing_to_announce>
  bool publish_if_current(std::unique_ptr<Node>& fresh, const Node* expected, Prepare&& prepare,
                          Published published = {}) {
    static_assert(std::is_nothrow_invocable_v<Published&>,
                  "snapshot_cell: the published step runs after the commit and must not throw");
    prepare(*fresh);
    Node* current = const_cast<Node*>(expected);  // compared, never written through
    // (1) seq_cst on success: a release that publishes the node's contents to readers'
    // acquire in protect, and a member of the seq_cst order that cas_slot's waiter
    // check relies on (the same instruction as a release on x86). Relaxed on failure:
    // nothing is read.
    if (!head_.compare_exchange_strong(current, fresh.get(), std::memory_order_seq_cst,
                                       std::memory_order_relaxed)) {
      return false;
    }
    fresh.release();  // owned by the cell now
    published();
    if (current != nullptr) hazard_domain::instance().retire(current);
    return true;
  }

 private:
  std::atomic<Node*> head_;
};

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_SNAPSHOT_CELL_HPP
