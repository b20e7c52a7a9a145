// interlock/vector_clock.hpp: vector clocks (a value type and a thread-safe clock for
// one node).
//
// Design note. A `vector_clock<NodeId>` maps node ids to event counters. Comparing two
// clocks says whether one event happened before the other or whether they are
// concurrent (neither saw the other): the tool for detecting conflicting replica
// updates and for causal delivery (see causal_buffer.hpp). Node ids are any totally
// ordered regular type; the encodings support integral ids of at most 64 bits and
// std::string ids.
//
// Representation: the entries are kept sorted by node id in a small vector whose first
// `inline_capacity` (8) entries live inside the object, so a clock of up to 8 nodes
// makes no heap allocation of its own (a std::string id longer than the library's
// small-string buffer still allocates its characters). Larger clocks spill to the heap.
// Because both sides are sorted, compare and merge are one linear merge pass. Counters
// are never 0: a missing entry means 0. Counters (and the pruned bound) never exceed
// `max_counter` (2^64 - 2): tick() throws clock_overflow_error instead of wrapping, and
// the decoders reject larger values, so a peer cannot make a clock wrap to 0.
//
// Pruning, and why it must not invent concurrency. A clock grows with every node that
// ever wrote; long-lived systems bound it (Riak prunes object clocks beyond a size or
// age). Naive pruning drops entries, and a clock that lost entries looks *concurrent*
// with the ancestors whose entries it dropped: Riak then keeps both versions as
// "siblings", every later write descends from neither, and siblings multiply (the
// sibling explosion). The rule here:
//
//   * prune(max_entries) drops the entries with the smallest counters (ties: smaller
//     node id first) and remembers `pruned_bound()`: the largest counter it ever
//     dropped. The flag and bound are part of the value (==, both encodings), and
//     merge takes the larger bound.
//   * A pruned clock stands for every true clock T with, for every node n,
//     get(n) <= T[n] <= max(get(n), pruned_bound()): stored counters are lower bounds,
//     and what may be missing is at most the bound. tick(n) on a pruned clock moves n
//     to max(get(n), pruned_bound()) + 1, so a counter is never reused after pruning.
//   * compare() asks which orders the bounds allow: "this <= other" is possible when
//     every stored counter here is <= the other side's upper bound, "this >= other"
//     symmetrically. Both possible: `equal` (the clocks differ only below a bound, so
//     they are indistinguishable); one: `before` or `after`; neither: `concurrent`.
//     For unpruned clocks (bound 0) this is the exact pointwise comparison.
//
// Guarantee: if the true histories are ordered or equal, compare() never reports
// `concurrent`, and a pruned clock that truly descends another is reported `after` or
// `equal` (descends() is true), so a stale write is never taken for a newer one. The
// price is the opposite error: clocks that differ only at or below the bound compare
// `equal`, and two truly concurrent clocks may be reported ordered (one update may
// then supersede a concurrent one). Unpruned clocks compare exactly. Use pruning only
// where that trade-off is acceptable, and keep causal_buffer clocks unpruned (it
// rejects pruned ones).
//
// When not to use it: to order events totally (use lamport_clock or hybrid_clock);
// with an unbounded, churning set of writers (use forget() for departed members, or
// pruning with the trade-off above).
//
// Encodings. Binary: a flags byte (bit 0: pruned; other bits 0), the bound as a varint
// when pruned, the entry count as a varint, then per entry the node id (unsigned:
// varint; signed: zigzag varint; std::string: varint length + bytes) and the counter
// (varint), in strictly increasing node order. Text: `{a:3,b:1}`, with a `~N` suffix
// when pruned with bound N (`{a:3}~2`); string ids use [A-Za-z0-9_.-] and %XX escapes
// for any other byte (uppercase hex), integer ids are decimal; no whitespace. Decoding
// is strict and never trusts the input: see clock_decode_error. It is also canonical:
// each clock has exactly one binary and one text form that decode (no overlong
// varints, leading zeros, "-0" or needless escapes), so encodings can be compared,
// hashed or signed as they are. Counters and the bound must not
// exceed `max_counter` (2^64 - 2). At most `max_entries` (65536)
// entries and `max_node_id_length` (1024) bytes per string id are accepted, and a
// declared count is checked against the bytes left before anything is allocated.
//
// Thread-safety: vector_clock is a value type (like std::vector): concurrent const
// calls are safe, anything else needs external synchronization. atomic_vector_clock
// below is the thread-safe clock of one node.
#ifndef INTERLOCK_VECTOR_CLOCK_HPP
#define INTERLOCK_VECTOR_CLOCK_HPP

#include <interlock/config.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <mutex>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN

/// The causal relation of two clocks (or of the events they stamp).
enum class clock_order {
  before,     ///< this happened before the other (this < other)
  after,      ///< the other happened before this (this > other)
  equal,      ///< same history
  concurrent  ///< neither saw the other
};

/// Why decoding a clock failed.
enum class clock_decode_error {
  truncated,             ///< the input ends inside a field
  varint_overflow,       ///< a varint longer than 10 bytes or above 2^64 - 1
  bad_flags,             ///< unknown flag bits in the binary header
  too_many_entries,      ///< more than max_entries entries
  count_exceeds_input,   ///< the declared entry count cannot fit in the bytes left
  node_id_too_long,      ///< a string id longer than max_node_id_length
  node_id_out_of_range,  ///< an integer id that does not fit NodeId
  zero_counter,          ///< a counter of 0 (absent entries are not encoded)
  zero_prune_bound,      ///< the pruned flag with a bound of 0
  duplicate_node,        ///< the same node twice
  unsorted_nodes,        ///< nodes not in increasing order
  trailing_bytes,        ///< bytes after the last entry
  bad_syntax,            ///< text that does not follow the grammar
  counter_out_of_range,  ///< a counter or pruned bound above max_counter (2^64 - 2)
  non_canonical          ///< a value in a longer form than the encoder writes: an overlong
                         ///< varint, a number with leading zeros or "-0", an escape of a
                         ///< plain character or one in lowercase hex
};

/// A short English description of `error`, e.g. "truncated input".
[[nodiscard]] constexpr const char* to_string(clock_decode_error error) noexcept {
  switch (error) {
    case clock_decode_error::truncated:
      return "truncated input";
    case clock_decode_error::varint_overflow:
      return "varint overflow";
    case clock_decode_error::bad_flags:
      return "unknown flag bits";
    case clock_decode_error::too_many_entries:
      return "too many entries";
    case clock_decode_error::count_exceeds_input:
      return "entry count exceeds the input";
    case clock_decode_error::node_id_too_long:
      return "node id too long";
    case clock_decode_error::node_id_out_of_range:
      return "node id out of range";
    case clock_decode_error::zero_counter:
      return "zero counter";
    case clock_decode_error::zero_prune_bound:
      return "pruned flag with a zero bound";
    case clock_decode_error::duplicate_node:
      return "duplicate node";
    case clock_decode_error::unsorted_nodes:
      return "unsorted nodes";
    case clock_decode_error::trailing_bytes:
      return "trailing bytes";
    case clock_decode_error::bad_syntax:
      return "bad syntax";
    case clock_decode_error::counter_out_of_range:
      return "counter out of range";
    case clock_decode_error::non_canonical:
      return "non-canonical encoding";
  }
  return "unknown error";
}

/// Thrown by vector_clock::tick (and atomic_vector_clock's tick and receive) when a
/// counter would pass vector_clock::max_counter (2^64 - 2). The clock is left unchanged.
class clock_overflow_error : public std::overflow_error {
 public:
  using std::overflow_error::overflow_error;
};

/// The result of decoding: a value or a clock_decode_error (an expected-like type).
template <class T>
class decode_result {
 public:
  decode_result(T value) : value_(std::move(value)) {}  // NOLINT: implicit like expected
  decode_result(clock_decode_error error) noexcept : error_(error) {}  // NOLINT

  [[nodiscard]] bool has_value() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return has_value(); }
  /// The value. Precondition: has_value().
  [[nodiscard]] T& value() & noexcept {
    INTERLOCK_ASSERT(has_value(), "decode_result::value() on an error");
    return *value_;
  }
  [[nodiscard]] const T& value() const& noexcept {
    INTERLOCK_ASSERT(has_value(), "decode_result::value() on an error");
    return *value_;
  }
  [[nodiscard]] T&& value() && noexcept {
    INTERLOCK_ASSERT(has_value(), "decode_result::value() on an error");
    return std::move(*value_);
  }
  T& operator*() & noexcept { return value(); }
  const T& operator*() const& noexcept { return value(); }
  T* operator->() noexcept { return &value(); }
  const T* operator->() const noexcept { return &value(); }
  /// The error. Precondition: !has_value().
  [[nodiscard]] clock_decode_error error() const noexcept {
    INTERLOCK_ASSERT(!has_value(), "decode_result::error() on a value");
    return error_;
  }

 private:
  std::optional<T> value_;
  clock_decode_error error_ = clock_decode_error::bad_syntax;
};

namespace detail {

/// What a vector clock needs of a node id.
template <class T>
concept clock_node_id = std::totally_ordered<T> && std::semiregular<T>;

/// Node ids the binary and text encodings support: std::string and integers of at most
/// 64 bits (the encodings carry ids as 64-bit varints; a wider id, such as GNU
/// __int128, would be cut).
template <class T>
concept encodable_node_id = std::same_as<T, std::string> ||
    (std::integral<T> && !std::same_as<T, bool> && sizeof(T) <= sizeof(std::uint64_t) &&
     !std::same_as<T, wchar_t> && !std::same_as<T, char8_t> && !std::same_as<T, char16_t> &&
     !std::same_as<T, char32_t>);  // no std::to_chars / from_chars for these

inline void put_varint(std::vector<std::byte>& out, std::uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<std::byte>((value & 0x7FU) | 0x80U));
    value >>= 7;
  }
  out.push_back(static_cast<std::byte>(value));
}

/// Reads a LEB128 varint from the front of `in` and advances it. Rejects an overlong
/// one (a last byte of 0 after the first), which put_varint never writes.
inline std::optional<clock_decode_error> get_varint(std::span<const std::byte>& in,
                                                    std::uint64_t& value) noexcept {
  value = 0;
  for (unsigned i = 0; i < 10; ++i) {
    if (i >= in.size()) return clock_decode_error::truncated;
    const auto byte = std::to_integer<std::uint64_t>(in[i]);
    if (i == 9 && byte > 1) return clock_decode_error::varint_overflow;
    value |= (byte & 0x7FU) << (7 * i);
    if ((byte & 0x80U) == 0) {
      if (i > 0 && byte == 0) return clock_decode_error::non_canonical;
      in = in.subspan(i + 1);
      return std::nullopt;
    }
  }
  return clock_decode_error::varint_overflow;
}

/// No cached order key (node ids that compare cheaply on their own).
struct no_order_key {
  friend constexpr bool operator==(no_order_key, no_order_key) noexcept = default;
};

/// The order key cached beside a std::string node id: its first 8 bytes, big-endian
/// and zero-padded, so comparing keys orders ids like std::string's operator< whenever
/// the keys differ, and ids of at most 8 bytes with equal keys differ only in length.
/// Compare and merge then rarely touch the characters.
template <class NodeId>
struct order_key {
  using type = no_order_key;
  static constexpr type make(const NodeId&) noexcept { return {}; }
};
template <>
struct order_key<std::string> {
  using type = std::uint64_t;
  static type make(const std::string& node) noexcept {
    std::uint64_t key = 0;
    const std::size_t n = node.size() < 8 ? node.size() : 8;
    for (std::size_t i = 0; i < n; ++i) key = (key << 8) | static_cast<unsigned char>(node[i]);
    return n == 0 ? 0 : key << (8 * (8 - n));
  }
};

inline bool is_plain_id_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

/// The value of an uppercase hex digit (what the encoder writes); -1 for anything else.
inline int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

inline bool is_lowercase_hex(char c) noexcept { return c >= 'a' && c <= 'f'; }

/// True when the decimal number at text[pos] has a leading zero ("01") or is a
/// negative zero ("-0", "-00"): forms std::to_chars never writes.
inline bool non_canonical_decimal(std::string_view text, std::size_t pos) noexcept {
  if (pos < text.size() && text[pos] == '-') {
    return pos + 1 < text.size() && text[pos + 1] == '0';
  }
  return pos + 1 < text.size() && text[pos] == '0' && text[pos + 1] >= '0' && text[pos + 1] <= '9';
}

}  // namespace detail

/// A vector clock: a value mapping node ids to event counters. See the design note
/// at the top of this header for the pruning rule and the encodings.
///
/// Thread-safety: a value type; concurrent const calls are safe.
template <class NodeId = std::uint64_t>
requires detail::clock_node_id<NodeId>
class vector_clock {
 public:
  using node_type = NodeId;
  using counter_type = std::uint64_t;

  using key_type = typename detail::order_key<NodeId>::type;

  /// One node's counter. `key` is maintained by the clock (an order-preserving prefix
  /// of a std::string id, empty otherwise); leave it value-initialized.
  struct entry {
    NodeId node{};
    counter_type counter = 0;
    [[no_unique_address]] key_type key{};
    friend bool operator==(const entry&, const entry&) = default;
  };

  /// Entries stored inside the object before spilling to the heap.
  static constexpr std::size_t inline_capacity = 8;
  /// The most entries a decoder accepts.
  static constexpr std::size_t max_entries = 65536;
  /// The longest std::string node id (in bytes) a decoder accepts.
  static constexpr std::size_t max_node_id_length = 1024;
  /// The largest counter (and pruned bound): 2^64 - 2. tick() throws
  /// clock_overflow_error rather than pass it; the decoders reject larger values.
  static constexpr counter_type max_counter = std::numeric_limits<counter_type>::max() - 1;

  vector_clock() noexcept(std::is_nothrow_default_constructible_v<NodeId>) = default;

  /// A clock with the given entries (any order; a repeated node keeps the larger
  /// counter; counters of 0 are dropped). Precondition: counters are at most
  /// max_counter. Complexity: O(n log n).
  vector_clock(std::initializer_list<entry> entries) {
    std::vector<entry> sorted(entries.begin(), entries.end());
    adopt_unsorted(std::move(sorted));
  }

  vector_clock(const vector_clock&) = default;
  /// Copies `other`. A clock that goes back to 8 or fewer entries releases its heap
  /// block (the "inline" invariant: an inline clock holds no heap block). Throws what
  /// copying the ids throws, leaving this clock unchanged (strong guarantee).
  vector_clock& operator=(const vector_clock& other) {
    // Copy first, while a throw cannot touch *this, then move the copy in (no throw for
    // ids with a non-throwing move, as std::string).
    if (this != &other) *this = vector_clock(other);
    return *this;
  }
  vector_clock(vector_clock&& other) noexcept(std::is_nothrow_move_constructible_v<NodeId>)
      : inline_(std::move(other.inline_)),
        heap_(std::move(other.heap_)),
        size_(std::exchange(other.size_, 0)),
        pruned_bound_(std::exchange(other.pruned_bound_, 0)) {
    other.heap_.clear();
  }
  vector_clock& operator=(vector_clock&& other) noexcept(
      std::is_nothrow_move_assignable_v<NodeId>) {
    if (this != &other) {
      inline_ = std::move(other.inline_);
      heap_ = std::move(other.heap_);
      if (heap_.empty()) release_heap();
      other.release_heap();
      size_ = std::exchange(other.size_, 0);
      pruned_bound_ = std::exchange(other.pruned_bound_, 0);
    }
    return *this;
  }
  ~vector_clock() = default;

 private:
  void release_heap() noexcept { std::vector<entry>().swap(heap_); }

 public:
  // ---- queries --------------------------------------------------------------

  /// The counter of `node` (0 when absent). Complexity: O(log n).
  [[nodiscard]] counter_type get(const NodeId& node) const noexcept {
    const entry* const first = data();
    const key_type key = detail::order_key<NodeId>::make(node);
    const entry* const it = find_slot(first, key, node);
    return (it != first + size_ && order(*it, key, node) == 0) ? it->counter : 0;
  }
  /// The number of nodes with a non-zero counter.
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  /// The entries, sorted by node id.
  [[nodiscard]] std::span<const entry> entries() const noexcept { return {data(), size_}; }
  [[nodiscard]] const entry* begin() const noexcept { return data(); }
  [[nodiscard]] const entry* end() const noexcept { return data() + size_; }
  /// The node ids, sorted. Allocates the returned vector. Complexity: O(n).
  [[nodiscard]] std::vector<NodeId> nodes() const {
    std::vector<NodeId> out;
    out.reserve(size_);
    for (const entry& e : entries()) out.push_back(e.node);
    return out;
  }
  /// True while the entries live inside the object (no heap block is held).
  [[nodiscard]] bool is_inline() const noexcept { return heap_.capacity() == 0; }
  /// True when prune() dropped entries from this clock or from one merged into it.
  [[nodiscard]] bool is_pruned() const noexcept { return pruned_bound_ != 0; }
  /// The largest counter pruning dropped (0 when not pruned).
  [[nodiscard]] counter_type pruned_bound() const noexcept { return pruned_bound_; }

  // ---- updates --------------------------------------------------------------

  /// Records an event at `node`: its counter grows by one (from
  /// max(get(node), pruned_bound()) on a pruned clock, so counters are never reused)
  /// and the new counter is returned. Complexity: O(log n), O(n) when `node` is new.
  /// Throws clock_overflow_error when the new counter would exceed max_counter, and
  /// what allocation or copying `node` throws (when `node` is new); on any throw the
  /// clock is unchanged.
  counter_type tick(const NodeId& node) {
    entry* first = data();
    const key_type key = detail::order_key<NodeId>::make(node);
    entry* const it = find_slot(first, key, node);
    if (it != first + size_ && order(*it, key, node) == 0) {
      it->counter = next_counter(it->counter);
      return it->counter;
    }
    const auto index = static_cast<std::size_t>(it - first);
    const counter_type counter = next_counter(0);
    insert_at(index, entry{node, counter, key});
    return counter;
  }

  /// Pointwise maximum with `other` (and the larger pruned bound).
  /// Complexity: O(n + m); one pass and no allocation when `other` has no node missing
  /// here. Throws only what allocation and copying ids throw (when nodes are added);
  /// on a throw this clock holds its old nodes with some counters already raised (a
  /// valid clock that descends the original). For all or nothing, merge into a copy
  /// and move it back, as atomic_vector_clock::receive does (a strong merge here would
  /// cost a second pass on every call: measured 1.5x-2x slower at 4-64 nodes).
  vector_clock& merge(const vector_clock& other) {
    if (this == &other) return *this;
    // Copy the missing entries before the size changes: a throw here leaves a valid
    // clock. What follows only moves entries (no throw for ids with a non-throwing move).
    if (const std::size_t added = raise_shared_count_missing(other); added != 0) {
      insert_sorted_disjoint(copy_missing(other, added));
    }
    pruned_bound_ = std::max(pruned_bound_, other.pruned_bound_);
    return *this;
  }

  /// Removes `node` (a member that left for good; every clock should forget it).
  /// Does not mark the clock pruned. Returns whether the node was present.
  /// Complexity: O(n).
  bool forget(const NodeId& node) {
    entry* first = data();
    const key_type key = detail::order_key<NodeId>::make(node);
    entry* const it = find_slot(first, key, node);
    if (it == first + size_ || order(*it, key, node) != 0) return false;
    std::move(it + 1, first + size_, it);
    resize(size_ - 1);
    return true;
  }

  /// Keeps at most `max_size` entries: drops those with the smallest counters (ties:
  /// the smaller node id first) and raises pruned_bound() to the largest counter
  /// dropped. Returns the number of entries dropped (0: the clock is unchanged).
  /// Complexity: O(n log n). Throws only what allocation throws.
  std::size_t prune(std::size_t max_size) {
    if (size_ <= max_size) return 0;
    const std::size_t drop = size_ - max_size;
    std::vector<std::size_t> by_counter(size_);
    for (std::size_t i = 0; i < size_; ++i) by_counter[i] = i;
    const entry* all = data();
    std::sort(by_counter.begin(), by_counter.end(), [all](std::size_t x, std::size_t y) {
      return all[x].counter != all[y].counter ? all[x].counter < all[y].counter
                                              : order(all[x], all[y]) < 0;
    });
    std::vector<bool> dropped(size_, false);
    counter_type bound = pruned_bound_;
    for (std::size_t k = 0; k < drop; ++k) {
      dropped[by_counter[k]] = true;
      bound = std::max(bound, all[by_counter[k]].counter);
    }
    entry* a = data();
    std::size_t out = 0;
    for (std::size_t i = 0; i < size_; ++i) {
      if (!dropped[i]) {
        if (out != i) a[out] = std::move(a[i]);
        ++out;
      }
    }
    resize(out);
    pruned_bound_ = bound;
    return drop;
  }

  // ---- comparison -----------------------------------------------------------

  /// The causal relation of this clock to `other` (exact for unpruned clocks; see
  /// the pruning rule in the design note). Complexity: O(n + m), no allocation.
  [[nodiscard]] clock_order compare(const vector_clock& other) const noexcept {
    const entry* a = data();
    const entry* b = other.data();
    const counter_type bound_a = pruned_bound_;
    const counter_type bound_b = other.pruned_bound_;
    bool less = false;      // some stored counter here < there
    bool greater = false;   // some stored counter here > there
    bool can_be_le = true;  // every counter here <= the other's upper bound
    bool can_be_ge = true;  // every counter there <= this side's upper bound
    auto visit = [&](counter_type x, counter_type y) {
      if (x < y) {
        less = true;
        if (std::max(x, bound_a) < y) can_be_ge = false;
      } else if (y < x) {
        greater = true;
        if (std::max(y, bound_b) < x) can_be_le = false;
      }
    };
    std::size_t i = 0, j = 0;
    while (i < size_ && j < other.size_) {
      const int o = order(a[i], b[j]);
      if (o < 0) {
        visit(a[i++].counter, 0);
      } else if (o > 0) {
        visit(0, b[j++].counter);
      } else {
        visit(a[i++].counter, b[j++].counter);
      }
    }
    for (; i < size_; ++i) visit(a[i].counter, 0);
    for (; j < other.size_; ++j) visit(0, b[j].counter);
    if (!less && !greater) return clock_order::equal;
    if (can_be_le && can_be_ge) return clock_order::equal;  // differ only below a bound
    if (can_be_le) return clock_order::before;
    if (can_be_ge) return clock_order::after;
    return clock_order::concurrent;
  }
  /// compare(other) == before.
  [[nodiscard]] bool happens_before(const vector_clock& other) const noexcept {
    return compare(other) == clock_order::before;
  }
  /// compare(other) == concurrent.
  [[nodiscard]] bool concurrent_with(const vector_clock& other) const noexcept {
    return compare(other) == clock_order::concurrent;
  }
  /// compare(other) is after or equal: this clock has seen everything `other` has.
  [[nodiscard]] bool descends(const vector_clock& other) const noexcept {
    const clock_order order = compare(other);
    return order == clock_order::after || order == clock_order::equal;
  }

  /// Value equality: the same entries and the same pruned bound.
  friend bool operator==(const vector_clock& a, const vector_clock& b) noexcept {
    return a.pruned_bound_ == b.pruned_bound_ && std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

  // ---- encodings ------------------------------------------------------------

  /// Appends the binary encoding to `out`. Complexity: O(encoded size).
  void encode_binary(std::vector<std::byte>& out) const requires detail::encodable_node_id<NodeId> {
    out.push_back(static_cast<std::byte>(is_pruned() ? 1 : 0));
    if (is_pruned()) detail::put_varint(out, pruned_bound_);
    detail::put_varint(out, size_);
    for (const entry& e : entries()) {
      if constexpr (std::same_as<NodeId, std::string>) {
        detail::put_varint(out, e.node.size());
        for (char c : e.node) out.push_back(static_cast<std::byte>(c));
      } else if constexpr (std::signed_integral<NodeId>) {
        const auto v = static_cast<std::int64_t>(e.node);
        detail::put_varint(
            out, (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
      } else {
        detail::put_varint(out, static_cast<std::uint64_t>(e.node));
      }
      detail::put_varint(out, e.counter);
    }
  }
  /// The binary encoding. Allocates the returned vector.
  [[nodiscard]] std::vector<std::byte> encode_binary()
      const requires detail::encodable_node_id<NodeId> {
    std::vector<std::byte> out;
    out.reserve(2 + size_ * 4);
    encode_binary(out);
    return out;
  }

  /// Decodes a binary encoding that must span all of `in`. Never reads outside `in`,
  /// allocates at most in proportion to in.size(). Returns the clock_decode_error of
  /// the first problem found (truncated, varint_overflow, bad_flags, too_many_entries,
  /// count_exceeds_input, node_id_too_long, node_id_out_of_range, zero_counter,
  /// zero_prune_bound, counter_out_of_range, duplicate_node, unsorted_nodes,
  /// trailing_bytes).
  /// Complexity: O(in.size()).
  [[nodiscard]] static decode_result<vector_clock> decode_binary(
      std::span<const std::byte> in) requires detail::encodable_node_id<NodeId> {
    if (in.empty()) return clock_decode_error::truncated;
    const auto flags = std::to_integer<unsigned>(in[0]);
    in = in.subspan(1);
    if ((flags & ~1U) != 0) return clock_decode_error::bad_flags;
    counter_type bound = 0;
    if ((flags & 1U) != 0) {
      if (auto e = detail::get_varint(in, bound)) return *e;
      if (bound == 0) return clock_decode_error::zero_prune_bound;
      if (bound > max_counter) return clock_decode_error::counter_out_of_range;
    }
    std::uint64_t count = 0;
    if (auto e = detail::get_varint(in, count)) return *e;
    if (count > max_entries) return clock_decode_error::too_many_entries;
    if (count > in.size() / 2) return clock_decode_error::count_exceeds_input;  // >= 2 bytes each
    std::vector<entry> list;
    list.reserve(static_cast<std::size_t>(count));
    for (std::uint64_t k = 0; k < count; ++k) {
      entry e{};
      std::uint64_t raw = 0;
      if (auto err = detail::get_varint(in, raw)) return *err;
      if constexpr (std::same_as<NodeId, std::string>) {
        if (raw > max_node_id_length) return clock_decode_error::node_id_too_long;
        if (raw > in.size()) return clock_decode_error::truncated;
        e.node.resize(static_cast<std::size_t>(raw));
        for (std::size_t c = 0; c < e.node.size(); ++c) {
          e.node[c] = static_cast<char>(std::to_integer<unsigned char>(in[c]));
        }
        in = in.subspan(static_cast<std::size_t>(raw));
      } else if constexpr (std::signed_integral<NodeId>) {
        const auto v = static_cast<std::int64_t>(raw >> 1) ^ -static_cast<std::int64_t>(raw & 1U);
        if (v < static_cast<std::int64_t>(std::numeric_limits<NodeId>::min()) ||
            v > static_cast<std::int64_t>(std::numeric_limits<NodeId>::max())) {
          return clock_decode_error::node_id_out_of_range;
        }
        e.node = static_cast<NodeId>(v);
      } else {
        if (raw > static_cast<std::uint64_t>(std::numeric_limits<NodeId>::max())) {
          return clock_decode_error::node_id_out_of_range;
        }
        e.node = static_cast<NodeId>(raw);
      }
      if (auto err = detail::get_varint(in, e.counter)) return *err;
      if (e.counter > max_counter) return clock_decode_error::counter_out_of_range;
      if (auto err = append_checked(list, std::move(e))) return *err;
    }
    if (!in.empty()) return clock_decode_error::trailing_bytes;
    vector_clock clock;
    clock.adopt_sorted(std::move(list));
    clock.pruned_bound_ = bound;
    return clock;
  }

  /// Appends the text form (`{a:3,b:1}`, `~N` suffix when pruned) to `out`.
  void encode_text(std::string& out) const requires detail::encodable_node_id<NodeId> {
    out.push_back('{');
    bool first = true;
    for (const entry& e : entries()) {
      if (!first) out.push_back(',');
      first = false;
      if constexpr (std::same_as<NodeId, std::string>) {
        constexpr std::string_view hex = "0123456789ABCDEF";
        for (char c : e.node) {
          if (detail::is_plain_id_char(c)) {
            out.push_back(c);
          } else {
            const auto byte = static_cast<unsigned char>(c);
            out.push_back('%');
            out.push_back(hex[byte >> 4]);
            out.push_back(hex[byte & 0xFU]);
          }
        }
      } else {
        append_number(out, e.node);
      }
      out.push_back(':');
      append_number(out, e.counter);
    }
    out.push_back('}');
    if (is_pruned()) {
      out.push_back('~');
      append_number(out, pruned_bound_);
    }
  }
  /// The text form. Allocates the returned string.
  [[nodiscard]] std::string to_string() const requires detail::encodable_node_id<NodeId> {
    std::string out;
    encode_text(out);
    return out;
  }

  /// Parses the text form, which must span all of `text`. Returns bad_syntax for text
  /// off the grammar (whitespace included), and the same errors as decode_binary for
  /// bad values (zero counters, duplicate or unsorted nodes, too many entries, long or
  /// out-of-range ids, counters or a bound of 2^64 - 1: counter_out_of_range; a number
  /// above 2^64 - 1 is node_id_out_of_range or bad_syntax).
  /// Complexity: O(text.size()).
  [[nodiscard]] static decode_result<vector_clock> decode_text(
      std::string_view text) requires detail::encodable_node_id<NodeId> {
    std::size_t pos = 0;
    if (text.empty() || text[0] != '{') return clock_decode_error::bad_syntax;
    ++pos;
    std::vector<entry> list;
    if (pos < text.size() && text[pos] == '}') {
      ++pos;
    } else {
      while (true) {
        entry e{};
        if constexpr (std::same_as<NodeId, std::string>) {
          while (pos < text.size() && text[pos] != ':') {
            char c = text[pos];
            if (c == '%') {
              if (text.size() - pos < 3) return clock_decode_error::bad_syntax;
              const int high = detail::hex_digit(text[pos + 1]);
              const int low = detail::hex_digit(text[pos + 2]);
              if (high < 0 || low < 0) {
                const bool lowercase = (high >= 0 || detail::is_lowercase_hex(text[pos + 1])) &&
                                       (low >= 0 || detail::is_lowercase_hex(text[pos + 2]));
                return lowercase ? clock_decode_error::non_canonical
                                 : clock_decode_error::bad_syntax;
              }
              c = static_cast<char>(static_cast<unsigned char>(high * 16 + low));
              if (detail::is_plain_id_char(c)) return clock_decode_error::non_canonical;
              pos += 3;
            } else if (detail::is_plain_id_char(c)) {
              ++pos;
            } else {
              return clock_decode_error::bad_syntax;
            }
            if (e.node.size() == max_node_id_length) return clock_decode_error::node_id_too_long;
            e.node.push_back(c);
          }
        } else {
          if (detail::non_canonical_decimal(text, pos)) return clock_decode_error::non_canonical;
          const auto [ptr, ec] =
              std::from_chars(text.data() + pos, text.data() + text.size(), e.node);
          if (ec == std::errc::result_out_of_range) return clock_decode_error::node_id_out_of_range;
          if (ec != std::errc{}) return clock_decode_error::bad_syntax;
          pos = static_cast<std::size_t>(ptr - text.data());
        }
        if (pos >= text.size() || text[pos] != ':') return clock_decode_error::bad_syntax;
        ++pos;
        if (auto err = parse_counter(text, pos, e.counter)) return *err;
        if (list.size() == max_entries) return clock_decode_error::too_many_entries;
        if (auto err = append_checked(list, std::move(e))) return *err;
        if (pos >= text.size()) return clock_decode_error::bad_syntax;
        if (text[pos] == '}') {
          ++pos;
          break;
        }
        if (text[pos] != ',') return clock_decode_error::bad_syntax;
        ++pos;
      }
    }
    counter_type bound = 0;
    if (pos < text.size() && text[pos] == '~') {
      ++pos;
      if (auto err = parse_counter(text, pos, bound)) {
        return *err == clock_decode_error::zero_counter ? clock_decode_error::zero_prune_bound
                                                        : *err;
      }
    }
    if (pos != text.size()) return clock_decode_error::trailing_bytes;
    vector_clock clock;
    clock.adopt_sorted(std::move(list));
    clock.pruned_bound_ = bound;
    return clock;
  }

  friend std::ostream& operator<<(
      std::ostream& out, const vector_clock& clock) requires detail::encodable_node_id<NodeId> {
    return out << clock.to_string();
  }

 private:
  // Three-way order of node ids (negative, 0, positive), using the cached keys.
  static int order(const entry& x, const key_type& key, const NodeId& node) noexcept {
    if constexpr (std::same_as<NodeId, std::string>) {
      if (x.key != key) return x.key < key ? -1 : 1;
      if (x.node.size() <= 8 && node.size() <= 8) {
        return x.node.size() < node.size() ? -1 : (x.node.size() > node.size() ? 1 : 0);
      }
      const int c = x.node.compare(node);
      return c < 0 ? -1 : (c > 0 ? 1 : 0);
    } else {
      return x.node < node ? -1 : (node < x.node ? 1 : 0);
    }
  }
  static int order(const entry& x, const entry& y) noexcept { return order(x, y.key, y.node); }

  // The first entry whose node is not less than `node` (binary search).
  template <class Pointer>
  Pointer find_slot(Pointer first, const key_type& key, const NodeId& node) const noexcept {
    std::size_t low = 0, high = size_;
    while (low < high) {
      const std::size_t mid = low + (high - low) / 2;
      if (order(first[mid], key, node) < 0) {
        low = mid + 1;
      } else {
        high = mid;
      }
    }
    return first + low;
  }

  [[nodiscard]] entry* data() noexcept { return heap_.empty() ? inline_.data() : heap_.data(); }
  [[nodiscard]] const entry* data() const noexcept {
    return heap_.empty() ? inline_.data() : heap_.data();
  }

  // Invariant: size_ <= inline_capacity iff the entries are in inline_ (then heap_
  // holds no block); inline_ slots at or past size_ are unused (shrinking resets them
  // to release what their ids hold; growing always writes the new slots).
  void resize(std::size_t n) {
    if (n <= inline_capacity) {
      if (size_ > inline_capacity) {  // move back inline and free the heap block
        std::move(heap_.begin(), heap_.begin() + static_cast<std::ptrdiff_t>(n), inline_.begin());
        std::vector<entry>().swap(heap_);
      } else {
        for (std::size_t i = n; i < size_; ++i) inline_[i] = entry{};
      }
    } else if (size_ <= inline_capacity) {  // spill
      std::vector<entry> block;
      block.reserve(std::max(n, 2 * inline_capacity));
      for (std::size_t i = 0; i < size_; ++i) block.push_back(std::move(inline_[i]));
      block.resize(n);
      heap_ = std::move(block);
      for (std::size_t i = 0; i < size_; ++i) inline_[i] = entry{};
    } else {
      heap_.resize(n);
    }
    size_ = n;
  }

  // The counter that follows `current` in a tick: one past both `current` and the
  // pruned bound. Throws clock_overflow_error rather than pass max_counter.
  [[nodiscard]] counter_type next_counter(counter_type current) const {
    const counter_type base = std::max(current, pruned_bound_);
    if (base >= max_counter) {
      throw clock_overflow_error("interlock::vector_clock: counter would pass max_counter");
    }
    return base + 1;
  }

  // The first pass of merge: raises the counters of nodes shared with `other` in place
  // and counts the nodes of `other` missing here. No throw, no allocation: merging a
  // clock that adds no node stops here.
  std::size_t raise_shared_count_missing(const vector_clock& other) noexcept {
    entry* a = data();
    const entry* b = other.data();
    const std::size_t n = size_;
    const std::size_t m = other.size_;
    std::size_t i = 0, j = 0, missing = 0;
    while (i < n && j < m) {
      const int o = order(a[i], b[j]);
      if (o < 0) {
        ++i;
      } else if (o > 0) {
        ++missing;
        ++j;
      } else {
        if (a[i].counter < b[j].counter) a[i].counter = b[j].counter;
        ++i;
        ++j;
      }
    }
    return missing + (m - j);
  }

  // Copies the `count` entries of `other` whose nodes are missing here, in order. May
  // throw (allocation, copying ids) while this clock is still valid.
  std::vector<entry> copy_missing(const vector_clock& other, std::size_t count) const {
    std::vector<entry> missing;
    missing.reserve(count);
    const entry* a = data();
    const entry* b = other.data();
    for (std::size_t i = 0, j = 0; j < other.size_; ++j) {
      while (i < size_ && order(a[i], b[j]) < 0) ++i;
      if (i == size_ || order(a[i], b[j]) != 0) missing.push_back(b[j]);
    }
    return missing;
  }

  // Adds sorted entries whose nodes are all absent here. Allocation happens in resize,
  // before any entry moves; the merge from the back then only moves entries.
  void insert_sorted_disjoint(std::vector<entry>&& extra) {
    const std::size_t old_size = size_;
    resize(old_size + extra.size());  // may throw (strong); old entries stay in [0, old_size)
    entry* a = data();
    std::size_t i = old_size, j = extra.size(), k = size_;
    while (j > 0) {
      if (i > 0 && order(a[i - 1], extra[j - 1]) > 0) {
        a[--k] = std::move(a[--i]);
      } else {
        a[--k] = std::move(extra[--j]);
      }
    }
  }

  void insert_at(std::size_t index, entry value) {
    resize(size_ + 1);
    entry* a = data();
    std::move_backward(a + index, a + size_ - 1, a + size_);
    a[index] = std::move(value);
  }

  // Takes a sorted, duplicate-free list without zero counters, and sets the keys.
  void adopt_sorted(std::vector<entry>&& list) {
    for (entry& e : list) e.key = detail::order_key<NodeId>::make(e.node);
    if (list.size() <= inline_capacity) {
      std::move(list.begin(), list.end(), inline_.begin());
    } else {
      heap_ = std::move(list);
    }
    size_ = heap_.empty() ? list.size() : heap_.size();
  }

  void adopt_unsorted(std::vector<entry>&& list) {
    std::sort(list.begin(), list.end(), [](const entry& x, const entry& y) {
      return x.node < y.node || (x.node == y.node && x.counter > y.counter);
    });
    std::vector<entry> unique;
    unique.reserve(list.size());
    for (entry& e : list) {
      if (e.counter == 0 || (!unique.empty() && unique.back().node == e.node)) continue;
      unique.push_back(std::move(e));
    }
    adopt_sorted(std::move(unique));
  }

  static std::optional<clock_decode_error> append_checked(std::vector<entry>& list, entry&& e) {
    if (e.counter == 0) return clock_decode_error::zero_counter;
    if (!list.empty()) {
      if (list.back().node == e.node) return clock_decode_error::duplicate_node;
      if (e.node < list.back().node) return clock_decode_error::unsorted_nodes;
    }
    list.push_back(std::move(e));
    return std::nullopt;
  }

  static std::optional<clock_decode_error> parse_counter(std::string_view text, std::size_t& pos,
                                                         counter_type& value) noexcept {
    if (pos >= text.size() || text[pos] < '0' || text[pos] > '9') {
      return clock_decode_error::bad_syntax;
    }
    if (detail::non_canonical_decimal(text, pos)) return clock_decode_error::non_canonical;
    const auto [ptr, ec] = std::from_chars(text.data() + pos, text.data() + text.size(), value);
    if (ec != std::errc{}) return clock_decode_error::bad_syntax;  // out of range
    pos = static_cast<std::size_t>(ptr - text.data());
    if (value == 0) return clock_decode_error::zero_counter;
    if (value > max_counter) return clock_decode_error::counter_out_of_range;
    return std::nullopt;
  }

  template <class Integer>
  static void append_number(std::string& out, Integer value) {
    std::array<char, 24> buffer{};
    const auto [ptr, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
    (void)ec;  // 24 characters hold any 64-bit integer
    out.append(buffer.data(), ptr);
  }

  std::array<entry, inline_capacity> inline_{};
  std::vector<entry> heap_;
  std::size_t size_ = 0;
  counter_type pruned_bound_ = 0;
};

/// The thread-safe vector clock of one node: the node's own events (tick) and the
/// messages it receives (receive) advance it, and each call returns the resulting
/// clock, ready to stamp an event or a message.
///
/// Thread-safety: every member may be called concurrently. Progress: blocking, with
/// a short critical section (one std::mutex around an O(n) clock update and copy).
///
/// Memory ordering: calls are linearizable (the mutex orders them), and everything a
/// thread did before a call that returned clock c is visible to a thread whose later
/// call returned a clock that descends c (the mutex's unlock/lock pair carries it).
template <class NodeId = std::uint64_t>
requires detail::clock_node_id<NodeId>
class atomic_vector_clock {
 public:
  using clock_type = vector_clock<NodeId>;

  /// The clock of node `self`, starting from `start` (an empty clock by default).
  explicit atomic_vector_clock(NodeId self, clock_type start = {})
      : self_(std::move(self)), clock_(std::move(start)) {}
  atomic_vector_clock(const atomic_vector_clock&) = delete;
  atomic_vector_clock& operator=(const atomic_vector_clock&) = delete;

  /// Records a local event and returns the clock after it. Thread-safe; blocking
  /// (short critical section). Complexity: O(n) for the copy. Throws
  /// clock_overflow_error when the own counter would pass max_counter (the clock is
  /// unchanged), otherwise only what allocation throws, leaving the clock unchanged or
  /// ticked.
  clock_type tick() {
    const std::lock_guard lock(mutex_);
    clock_.tick(self_);
    return clock_;
  }

  /// Records the receipt of a message stamped `remote`: merges it, ticks, and returns
  /// the result. Thread-safe; blocking (short critical section). Complexity: O(n + m),
  /// two copies of the clock. Throws clock_overflow_error when the own counter after
  /// the merge would pass max_counter; otherwise only what allocation and copying ids
  /// throw. On any throw the clock is unchanged, so a message whose receipt failed is
  /// not counted as seen (the next event does not claim it).
  clock_type receive(const clock_type& remote) {
    const std::lock_guard lock(mutex_);
    // Built aside and committed by a move: every step that can throw (copying,
    // merging, the tick's overflow check and allocation, the caller's copy) runs
    // before the clock changes.
    clock_type next = clock_;
    next.merge(remote);
    next.tick(self_);
    clock_type stamped = next;
    clock_ = std::move(next);
    return stamped;
  }

  /// A copy of the current clock. Thread-safe; blocking (short critical section).
  /// Complexity: O(n).
  [[nodiscard]] clock_type snapshot() const {
    const std::lock_guard lock(mutex_);
    return clock_;
  }

  /// This node's own counter. Thread-safe; blocking (short critical section).
  [[nodiscard]] std::uint64_t own_counter() const {
    const std::lock_guard lock(mutex_);
    return clock_.get(self_);
  }

  [[nodiscard]] const NodeId& self() const noexcept { return self_; }

 private:
  const NodeId self_;
  mutable std::mutex mutex_;
  clock_type clock_;
};

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_VECTOR_CLOCK_HPP
