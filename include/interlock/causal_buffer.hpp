// interlock/causal_buffer.hpp: causal-order delivery of messages stamped with vector
// clocks.
//
// Design note. Replicas that exchange updates over a network receive them reordered,
// delayed and duplicated; applying an update before one it depends on (a reply before
// the post, a withdrawal before the deposit that funded it) corrupts state. A
// `causal_buffer` sits between the network and the application of one node: every
// offered message is delivered exactly once and only after all of its causal
// predecessors (causal broadcast, Birman-Schiper-Stephenson). A message m from node j
// stamped with vector clock m is deliverable when m[j] == local[j] + 1 and
// m[k] <= local[k] for every other node k, where `local` counts what this node has
// delivered (and sent, see stamp_send). Other messages are held until they become
// deliverable, expire or are evicted.
//
// Contract of the stamps: a node stamps each message it sends with its own clock after
// ticking its own entry (stamp_send does exactly that), so j's messages carry
// consecutive counters 1, 2, 3... Pruned clocks are rejected (pruning loses what a
// message depends on).
//
// When not to use it: when messages are independent (commutative updates, CRDTs
// delivered at least once); for total order (use a consensus log or sequencer).
//
// Guarantees: never delivers a message before a causal predecessor nor twice; drops
// duplicates (a counter already delivered or already held); holds at most
// max_entries messages and max_bytes bytes (as measured by the size function); an
// evicted, rejected or expired message leaves a gap that blocks its successors until
// it is offered again (retransmission), which missing() reports.
//
// Thread-safety: internally locked: every member may be called concurrently. The
// deliver callback runs under the buffer's lock, which keeps deliveries to concurrent
// callers in one causal order; it must not call back into the same buffer (that
// deadlocks) and should be short. The batch form returns deliveries after unlocking;
// each batch is in causal order and batches are causally ordered in the order their
// offer calls took the lock, so consume them on one thread (or use the callback form).
// Progress: blocking (one std::mutex).
//
// Exceptions: a message is counted as delivered and the local clock advanced before
// the callback sees it, so a callback that throws does not get it again; the exception
// leaves offer() (its result is lost); messages that became deliverable and were not
// handed out yet stay held and are delivered first by the next offer() (whatever it
// offers, a retransmitted duplicate included) or by deliver_ready(), before anything
// can expire them. Everything that can throw in a delivery (copying the sender id,
// making room in the batch, ticking the local clock) happens before the message is
// taken out, so a failure there leaves it held. When the batch form throws after it
// collected deliveries, those are kept and handed out first by the next offer() or
// deliver_ready(). Allocation failure while holding leaves the held messages as before
// the call (nothing is evicted until the new message is in), except that messages the
// same call expired first stay expired and, the call having thrown, are not reported
// (missing() still shows the gap). These guarantees assume that moving a Message, a
// NodeId or a clock does not throw (as std::string's moves).
//
// Memory ordering: every member locks one std::mutex, so everything a thread did
// before an offer() returned is visible to any thread whose later call (and whose
// deliver callback) observes that offer's effect.
#ifndef INTERLOCK_CAUSAL_BUFFER_HPP
#define INTERLOCK_CAUSAL_BUFFER_HPP

#include <interlock/config.hpp>
#include <interlock/vector_clock.hpp>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN

/// What an offer did with the offered message.
enum class offer_status {
  delivered,  ///< delivered (possibly together with held successors)
  held,       ///< waiting for a causal predecessor
  duplicate,  ///< already delivered or already held: dropped
  rejected,   ///< the buffer is full (reject_new) or the message alone exceeds max_bytes
  invalid     ///< a pruned clock, or a clock without an entry for its sender
};

/// What a full buffer does with a message it must hold.
enum class overflow_policy {
  reject_new,   ///< drop the new message (offer_status::rejected)
  evict_oldest  ///< evict the longest-held messages until it fits, report them
};

/// Causal-order delivery for one node. See the design note at the top of this header.
///
/// `Message` must be move-constructible. `Clock` (a std::chrono clock) times held
/// messages for expiry; tests inject a now-source through options::now.
template <class Message, class NodeId = std::uint64_t, class Clock = std::chrono::steady_clock>
requires std::move_constructible<Message>
class causal_buffer {
 public:
  using clock_type = vector_clock<NodeId>;
  using counter_type = std::uint64_t;
  using time_point = typename Clock::time_point;
  using duration = typename Clock::duration;

  /// A message with its sender and stamp.
  struct envelope {
    NodeId sender;
    clock_type clock;
    Message message;
  };
  using delivered = envelope;

  /// A message the buffer needs before it can deliver what it holds: the `counter`th
  /// message from `node`.
  struct missing_message {
    NodeId node;
    counter_type counter = 0;
    friend bool operator==(const missing_message&, const missing_message&) = default;
    /// E.g. "needs message 3 from node b".
    [[nodiscard]] std::string to_string() const {
      std::string text = "needs message " + std::to_string(counter) + " from node ";
      if constexpr (std::same_as<NodeId, std::string>) {
        text += node;
      } else if constexpr (requires(std::ostream & out, const NodeId& n) { out << n; }) {
        std::ostringstream out;
        out << node;
        text += out.str();
      } else {
        text += "?";
      }
      return text;
    }
  };

  struct options {
    /// The most messages held at once.
    std::size_t max_entries = 4096;
    /// The most bytes held at once, as measured by size_of.
    std::size_t max_bytes = std::size_t{64} << 20;
    overflow_policy when_full = overflow_policy::reject_new;
    /// Held messages older than this expire; empty: never.
    std::optional<duration> time_to_live;
    /// The size of a message in bytes; empty: sizeof(Message).
    std::function<std::size_t(const Message&)> size_of;
    /// The current time; empty: Clock::now.
    std::function<time_point()> now;
  };

  /// What one offer did.
  struct offer_result {
    offer_status status = offer_status::held;
    /// How many messages this offer delivered (the offered one and held ones).
    std::size_t delivered_count = 0;
    /// The batch form's deliveries, in causal order (empty for the callback form); those
    /// kept from an earlier batch offer that threw come first.
    std::vector<delivered> deliveries;
    /// Messages evicted to make room (evict_oldest), oldest first.
    std::vector<envelope> evicted;
    /// Held messages that expired during this offer.
    std::vector<envelope> expired;
  };

  struct statistics {
    std::uint64_t delivered = 0;
    std::uint64_t held = 0;        ///< held right now
    std::uint64_t held_bytes = 0;  ///< held right now
    std::uint64_t duplicates = 0;
    std::uint64_t rejected = 0;  ///< rejected and invalid messages
    std::uint64_t evicted = 0;
    std::uint64_t expired = 0;
  };

  /// A buffer for a node whose delivered (and sent) counts are `local`.
  /// Precondition: `local` is not pruned.
  explicit causal_buffer(clock_type local = {}, options opts = {})
      : local_(std::move(local)), options_(std::move(opts)) {
    INTERLOCK_ASSERT(!local_.is_pruned(), "causal_buffer needs an unpruned local clock");
    if (!options_.size_of) options_.size_of = [](const Message&) { return sizeof(Message); };
    if (!options_.now) options_.now = [] { return Clock::now(); };
  }
  causal_buffer(const causal_buffer&) = delete;
  causal_buffer& operator=(const causal_buffer&) = delete;

  /// Offers a message from `sender` stamped `clock` and calls `deliver(delivered&&)`
  /// for every message that became deliverable, in causal order. First hands out what an
  /// earlier throw left pending (see the design note), then expires held messages.
  /// Thread-safe; blocking (the callback runs under the lock, see the design
  /// note). Complexity: O((d + 1) * (s log h + n)) for d deliveries, s senders with
  /// held messages, h held messages and clocks of n entries. Returns the offered
  /// message's status (rejected or invalid on failure, nothing is thrown for them);
  /// exceptions from `deliver` propagate, see the design note.
  template <std::invocable<delivered&&> DeliverFn>
  offer_result offer(NodeId sender, clock_type clock, Message message, DeliverFn&& deliver) {
    offer_result result;
    const std::lock_guard lock(mutex_);
    callback_sink<DeliverFn> sink{deliver};
    offer_locked(std::move(sender), std::move(clock), std::move(message), result, sink);
    return result;
  }

  /// The batch form: the deliveries are returned in result.deliveries, in causal order.
  /// Thread-safe; blocking. Same complexity and failures as the callback form; when it
  /// throws, the deliveries it collected are handed out first by the next call.
  offer_result offer(NodeId sender, clock_type clock, Message message) {
    offer_result result;
    const std::lock_guard lock(mutex_);
    batch_sink sink{result.deliveries};
    try {
      offer_locked(std::move(sender), std::move(clock), std::move(message), result, sink);
    } catch (...) {
      // The collected messages already count as delivered: keep them for the next call
      // rather than lose them with the result.
      keep_undelivered(std::move(result.deliveries));
      throw;
    }
    return result;
  }

  /// Delivers held messages that are deliverable (after a callback threw, or kept from
  /// a batch offer that threw). Returns how many. Thread-safe; blocking (callback under
  /// the lock).
  template <std::invocable<delivered&&> DeliverFn>
  std::size_t deliver_ready(DeliverFn&& deliver) {
    const std::lock_guard lock(mutex_);
    callback_sink<DeliverFn> sink{deliver};
    const std::size_t kept = hand_out_undelivered(sink);
    return kept + deliver_held(sink);
  }

  /// Records a message this node sends: ticks its own entry `self` in the local view
  /// and returns the clock to stamp the message with. Thread-safe; blocking.
  /// Complexity: O(n) for the copy.
  clock_type stamp_send(const NodeId& self) {
    const std::lock_guard lock(mutex_);
    local_.tick(self);
    return local_;
  }

  /// Drops held messages older than the time to live and returns them (empty without
  /// a time to live). While a throwing callback has left held messages deliverable, it
  /// drops nothing: those are handed out first, by the next offer() or deliver_ready(),
  /// which then expire. Thread-safe; blocking. Complexity: O(e log h) for e expired.
  std::vector<envelope> expire() {
    std::vector<envelope> out;
    const std::lock_guard lock(mutex_);
    if (!drain_pending_) expire_locked(out);
    return out;
  }

  /// For every node, the first message the buffer lacks (neither delivered nor held)
  /// that some held message depends on, in node order. Empty when nothing is held.
  /// Thread-safe; blocking. Complexity: O(h * n * log h).
  [[nodiscard]] std::vector<missing_message> missing() const {
    const std::lock_guard lock(mutex_);
    std::map<NodeId, counter_type> needed;  // node -> the highest counter some message needs
    for (const auto& [sender, queue] : held_) {
      for (const auto& [counter, item] : queue) {
        for (const auto& e : item.clock.entries()) {
          const counter_type need = e.node == sender ? e.counter - 1 : e.counter;
          if (need > local_.get(e.node)) {
            auto& slot = needed[e.node];
            slot = std::max(slot, need);
          }
        }
      }
    }
    std::vector<missing_message> out;
    for (const auto& [node, highest] : needed) {
      counter_type next = local_.get(node) + 1;
      while (next <= highest && is_held(node, next)) ++next;
      if (next <= highest) out.push_back({node, next});
    }
    return out;
  }

  /// What the held message `counter` from `sender` waits for: per blocking node, the
  /// next message from it. Empty when no such message is held. Thread-safe; blocking.
  /// Complexity: O(log h + n log n).
  [[nodiscard]] std::vector<missing_message> waiting_for(const NodeId& sender,
                                                         counter_type counter) const {
    const std::lock_guard lock(mutex_);
    std::vector<missing_message> out;
    const auto queue = held_.find(sender);
    if (queue == held_.end()) return out;
    const auto item = queue->second.find(counter);
    if (item == queue->second.end()) return out;
    for (const auto& e : item->second.clock.entries()) {
      const counter_type have = local_.get(e.node);
      const counter_type need = e.node == sender ? e.counter - 1 : e.counter;
      if (need > have) out.push_back({e.node, have + 1});
    }
    return out;
  }

  /// A copy of the local view (delivered and sent counts). Thread-safe; blocking.
  [[nodiscard]] clock_type local() const {
    const std::lock_guard lock(mutex_);
    return local_;
  }

  [[nodiscard]] statistics stats() const {
    const std::lock_guard lock(mutex_);
    statistics s = stats_;
    s.held = held_count_;
    s.held_bytes = held_bytes_;
    return s;
  }

 private:
  struct held_item {
    clock_type clock;
    Message message;
    std::uint64_t sequence;
    std::size_t bytes;
  };
  using held_queue = std::map<counter_type, held_item>;  // counter -> item
  using held_map = std::map<NodeId, held_queue>;         // sender -> queue

  // A held message's place in arrival order, with what expiry and eviction read: they
  // decide from these records alone and look a message up only to take it.
  struct arrival_record {
    NodeId sender;
    counter_type counter;
    time_point arrived;
    std::size_t bytes;
  };

  // Grows `out` so that one more push_back cannot allocate (geometric, like push_back).
  template <class T>
  static void reserve_one_more(std::vector<T>& out) {
    if (out.size() == out.capacity()) out.reserve(std::max<std::size_t>(4, 2 * out.capacity()));
  }

  // Hands deliveries to the user's callback (the callback form).
  template <class DeliverFn>
  struct callback_sink {
    DeliverFn& deliver;
    void reserve_one() noexcept {}
    void operator()(delivered&& d) { deliver(std::move(d)); }
  };

  // Collects deliveries into a batch (the batch form). After reserve_one(), the next
  // call cannot allocate.
  struct batch_sink {
    std::vector<delivered>& out;
    void reserve_one() { reserve_one_more(out); }
    void operator()(delivered&& d) { out.push_back(std::move(d)); }
  };

  template <class Sink>
  void offer_locked(NodeId&& sender, clock_type&& clock, Message&& message, offer_result& result,
                    Sink& sink) {
    // Hand out what an earlier throw left deliverable before expiring anything: such
    // messages are due first, and retransmissions and later offers must not stall.
    result.delivered_count += hand_out_pending(sink);
    expire_locked(result.expired);
    const counter_type counter = clock.get(sender);
    if (clock.is_pruned() || counter == 0) {
      ++stats_.rejected;
      result.status = offer_status::invalid;
      return;
    }
    const counter_type have = local_.get(sender);
    if (counter <= have || is_held(sender, counter)) {
      ++stats_.duplicates;
      result.status = offer_status::duplicate;
      return;
    }
    if (counter == have + 1 && others_delivered(clock, sender)) {
      // Prepare everything that can throw before the message counts as delivered.
      sink.reserve_one();
      local_.tick(sender);
      result.status = offer_status::delivered;
      ++stats_.delivered;
      ++result.delivered_count;
      drain_pending_ = true;  // cleared by deliver_held unless a callback throws
      sink(delivered{std::move(sender), std::move(clock), std::move(message)});
      result.delivered_count += deliver_held(sink);
      return;
    }
    hold(std::move(sender), counter, std::move(clock), std::move(message), result);
  }

  // Delivers, in causal order, the deliveries kept from a batch offer that threw, then
  // the held messages a throwing callback left deliverable. Returns how many.
  template <class Sink>
  std::size_t hand_out_pending(Sink& sink) {
    std::size_t count = hand_out_undelivered(sink);
    if (drain_pending_) count += deliver_held(sink);
    return count;
  }

  // Keeps the deliveries of a batch offer that threw for the next call. No throw.
  void keep_undelivered(std::vector<delivered>&& deliveries) noexcept {
    INTERLOCK_ASSERT(undelivered_.empty(), "causal_buffer: undelivered messages overwritten");
    undelivered_ = std::move(deliveries);
  }

  template <class Sink>
  std::size_t hand_out_undelivered(Sink& sink) {
    if (undelivered_.empty()) return 0;
    std::vector<delivered> pending = std::move(undelivered_);
    undelivered_.clear();
    const std::size_t count = pending.size();
    if constexpr (std::is_same_v<Sink, batch_sink>) {
      INTERLOCK_ASSERT(sink.out.empty(), "causal_buffer: undelivered messages come first");
      sink.out = std::move(pending);  // no throw: the batch takes the whole vector
    } else {
      std::size_t next = 0;
      try {
        for (; next < count; ++next) sink(std::move(pending[next]));
      } catch (...) {
        // The callback threw on pending[next]: it counts as handed out, like any
        // delivery; keep the rest (erasing moves elements, it does not allocate).
        pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(next + 1));
        undelivered_ = std::move(pending);
        throw;
      }
    }
    return count;
  }

  // Holds a message that is not deliverable yet, evicting the oldest held messages
  // first when the buffer is full and the policy says so.
  void hold(NodeId&& sender, counter_type counter, clock_type&& clock, Message&& message,
            offer_result& result) {
    const std::size_t bytes = options_.size_of(message);
    const std::optional<std::size_t> evictions =
        (options_.max_entries == 0 || bytes > options_.max_bytes) ? std::nullopt
                                                                  : evictions_to_fit(bytes);
    if (!evictions) {
      ++stats_.rejected;
      result.status = offer_status::rejected;
      return;
    }
    // Do all the work that can throw (allocation, the user's clock) before evicting, so
    // that a throw leaves the buffer as before the call; evicting does not throw.
    result.evicted.reserve(result.evicted.size() + *evictions);
    const time_point arrived = options_.now();  // the user's clock may throw: before any move
    insert_held(sender, counter,
                held_item{std::move(clock), std::move(message), next_sequence_, bytes}, arrived);
    ++next_sequence_;
    for (std::size_t k = 0; k < *evictions; ++k) {
      result.evicted.push_back(take_oldest());  // never the new message: it is the newest
      ++stats_.evicted;
    }
    result.status = offer_status::held;
  }

  // How many of the oldest held messages must be evicted so that one more message of
  // `bytes` fits; empty when it cannot fit (reject_new, or not even with all evicted).
  // Changes nothing.
  std::optional<std::size_t> evictions_to_fit(std::size_t bytes) const {
    std::size_t count = held_count_;
    std::size_t total = held_bytes_;
    std::size_t evictions = 0;
    auto oldest = arrival_.begin();
    // total <= max_bytes holds (and bytes <= max_bytes, checked by the caller), so the
    // subtraction cannot wrap where total + bytes could.
    while (count + 1 > options_.max_entries || bytes > options_.max_bytes - total) {
      if (options_.when_full == overflow_policy::reject_new || oldest == arrival_.end()) {
        return std::nullopt;
      }
      total -= oldest->second.bytes;
      --count;
      ++evictions;
      ++oldest;
    }
    return evictions;
  }

  // Adds `item` to the held messages. On a throw (allocation, copying the sender id)
  // the buffer is unchanged.
  void insert_held(const NodeId& sender, counter_type counter, held_item&& item,
                   time_point arrived) {
    const std::uint64_t sequence = item.sequence;
    const std::size_t bytes = item.bytes;
    auto& queue = held_[sender];
    try {
      arrival_.emplace(sequence, arrival_record{sender, counter, arrived, bytes});
      queue.emplace(counter, std::move(item));
    } catch (...) {
      arrival_.erase(sequence);
      if (queue.empty()) held_.erase(sender);
      throw;
    }
    ++held_count_;
    held_bytes_ += bytes;
  }

  // Delivers every held message that is deliverable, in causal order.
  template <class Sink>
  std::size_t deliver_held(Sink& sink) {
    drain_pending_ = true;  // stays set if anything below throws: the next offer drains
    std::size_t count = 0;
    bool progress = true;
    while (progress && held_count_ != 0) {
      progress = false;
      for (auto queue = held_.begin(); queue != held_.end();) {
        const counter_type next = local_.get(queue->first) + 1;
        const auto item = queue->second.find(next);
        if (item == queue->second.end() || !others_delivered(item->second.clock, queue->first)) {
          ++queue;
          continue;
        }
        const auto following = std::next(queue);
        envelope out = take_for_delivery(sink, queue, item);  // may erase *queue
        ++count;
        progress = true;
        sink(std::move(out));
        queue = following;
      }
    }
    drain_pending_ = false;
    return count;
  }

  // Takes the held message `item` of `queue` out, counted as delivered. Prepares
  // everything that can throw (copying the sender id, making room in the sink, ticking
  // the local clock) before taking the message, so that a throw leaves it held.
  template <class Sink>
  envelope take_for_delivery(Sink& sink, typename held_map::iterator queue,
                             typename held_queue::iterator item) {
    NodeId sender = queue->first;
    sink.reserve_one();
    local_.tick(sender);
    ++stats_.delivered;
    return take(queue, item, std::move(sender));
  }

  // True when every entry of `clock` other than the sender's is already delivered.
  bool others_delivered(const clock_type& clock, const NodeId& sender) const noexcept {
    const auto mine = local_.entries();
    auto it = mine.begin();
    for (const auto& e : clock.entries()) {
      if (e.node == sender) continue;
      while (it != mine.end() && it->node < e.node) ++it;
      if (it == mine.end() || !(it->node == e.node) || it->counter < e.counter) return false;
    }
    return true;
  }

  bool is_held(const NodeId& sender, counter_type counter) const {
    const auto queue = held_.find(sender);
    return queue != held_.end() && queue->second.contains(counter);
  }

  // Removes the held message `item` of `queue` and returns it with `sender`. Only
  // moves and erases: no throw (given non-throwing moves).
  envelope take(typename held_map::iterator queue, typename held_queue::iterator item,
                NodeId&& sender) {
    envelope out{std::move(sender), std::move(item->second.clock), std::move(item->second.message)};
    arrival_.erase(item->second.sequence);
    held_bytes_ -= item->second.bytes;
    --held_count_;
    queue->second.erase(item);
    if (queue->second.empty()) held_.erase(queue);
    return out;
  }

  // Removes the longest-held message and returns it. No throw: the sender id is moved
  // out of its arrival record, which take() erases.
  envelope take_oldest() {
    arrival_record& oldest = arrival_.begin()->second;
    const auto queue = held_.find(oldest.sender);
    INTERLOCK_ASSERT(queue != held_.end(), "causal_buffer: held message missing");
    const auto item = queue->second.find(oldest.counter);
    INTERLOCK_ASSERT(item != queue->second.end(), "causal_buffer: held message missing");
    return take(queue, item, std::move(oldest.sender));
  }

  void expire_locked(std::vector<envelope>& out) {
    if (!options_.time_to_live || arrival_.empty()) return;
    const std::size_t count = expired_count(options_.now());
    out.reserve(out.size() + count);  // may throw before any message is taken
    for (std::size_t k = 0; k < count; ++k) {
      out.push_back(take_oldest());
      ++stats_.expired;
    }
  }

  // How many of the oldest held messages have outlived the time to live at `now`.
  std::size_t expired_count(time_point now) const {
    std::size_t count = 0;
    for (const auto& [sequence, record] : arrival_) {
      if (now - record.arrived < *options_.time_to_live) break;
      ++count;
    }
    return count;
  }

  mutable std::mutex mutex_;
  clock_type local_;
  options options_;
  held_map held_;                                    // sender -> counter -> item
  std::map<std::uint64_t, arrival_record> arrival_;  // sequence -> record
  std::uint64_t next_sequence_ = 0;
  bool drain_pending_ = false;  // a callback threw: held messages may be deliverable
  // Deliveries a batch offer collected before it threw: handed out first by the next call.
  std::vector<delivered> undelivered_;
  std::size_t held_count_ = 0;
  std::size_t held_bytes_ = 0;
  statistics stats_;
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_CAUSAL_BUFFER_HPP
