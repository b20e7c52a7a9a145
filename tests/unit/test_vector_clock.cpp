// vector_clock and atomic_vector_clock: algebra of merge and compare (property tests),
// string ids, inline storage, encodings and hostile input, the pruning rule, and the
// thread-safe clock under 8 threads.
#include <interlock/vector_clock.hpp>

#include <catch2/catch.hpp>

#include "support/fragile_id.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <limits>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using interlock::clock_decode_error;
using interlock::clock_order;
using clock64 = interlock::vector_clock<>;
using string_clock = interlock::vector_clock<std::string>;

template <class NodeId>
NodeId make_node(std::uint64_t n) {
  if constexpr (std::is_same_v<NodeId, std::string>) {
    return "node-" + std::to_string(n);
  } else {
    return static_cast<NodeId>(n);
  }
}

// A random clock over `nodes` nodes with small counters, so that ordered pairs and
// equal entries are common.
template <class NodeId>
interlock::vector_clock<NodeId> random_clock(std::mt19937_64& random, std::uint64_t nodes,
                                             std::uint64_t max_counter) {
  interlock::vector_clock<NodeId> clock;
  const std::uint64_t count = random() % (nodes + 1);
  for (std::uint64_t k = 0; k < count; ++k) {
    const auto node = make_node<NodeId>(random() % nodes);
    const std::uint64_t ticks = 1 + random() % max_counter;
    for (std::uint64_t t = 0; t < ticks; ++t) clock.tick(node);
  }
  return clock;
}

// A clock that descends `base`: more ticks on some nodes.
template <class NodeId>
interlock::vector_clock<NodeId> descendant(std::mt19937_64& random,
                                           interlock::vector_clock<NodeId> base,
                                           std::uint64_t nodes) {
  const std::uint64_t count = random() % 3;
  for (std::uint64_t k = 0; k < count; ++k) base.tick(make_node<NodeId>(random() % nodes));
  return base;
}

template <class NodeId>
interlock::vector_clock<NodeId> merged(interlock::vector_clock<NodeId> a,
                                       const interlock::vector_clock<NodeId>& b) {
  a.merge(b);
  return a;
}

clock_order mirror(clock_order order) {
  switch (order) {
    case clock_order::before:
      return clock_order::after;
    case clock_order::after:
      return clock_order::before;
    default:
      return order;
  }
}

template <class NodeId>
void check_algebra(std::uint64_t seed, std::uint64_t nodes) {
  std::mt19937_64 random(seed);
  for (int round = 0; round < 2000; ++round) {
    auto a = random_clock<NodeId>(random, nodes, 4);
    auto b = (round % 3 == 0) ? descendant<NodeId>(random, a, nodes)
                              : random_clock<NodeId>(random, nodes, 4);
    auto c = random_clock<NodeId>(random, nodes, 4);
    INFO("round " << round << " a=" << a << " b=" << b << " c=" << c);
    REQUIRE(merged(a, b) == merged(b, a));                        // commutative
    REQUIRE(merged(merged(a, b), c) == merged(a, merged(b, c)));  // associative
    REQUIRE(merged(a, a) == a);                                   // idempotent
    REQUIRE(merged(a, b).descends(a));
    REQUIRE(merged(a, b).descends(b));

    // compare agrees with merge: a <= b exactly when merging a into b changes nothing.
    const clock_order order = a.compare(b);
    const bool a_le_b = merged(a, b) == b;
    const bool b_le_a = merged(a, b) == a;
    if (a == b) {
      REQUIRE(order == clock_order::equal);
    } else if (a_le_b) {
      REQUIRE(order == clock_order::before);
      REQUIRE(a.happens_before(b));
    } else if (b_le_a) {
      REQUIRE(order == clock_order::after);
      REQUIRE(a.descends(b));
    } else {
      REQUIRE(order == clock_order::concurrent);
      REQUIRE(a.concurrent_with(b));
    }
    REQUIRE(b.compare(a) == mirror(order));
    REQUIRE(a.is_inline() == (a.size() <= clock64::inline_capacity));
  }
}

std::vector<std::byte> bytes(std::initializer_list<unsigned> values) {
  std::vector<std::byte> out;
  for (unsigned v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

template <class Clock>
clock_decode_error binary_error(const std::vector<std::byte>& input) {
  const auto result = Clock::decode_binary(input);
  REQUIRE_FALSE(result.has_value());
  return result.error();
}

template <class Clock>
clock_decode_error text_error(std::string_view input) {
  const auto result = Clock::decode_text(input);
  REQUIRE_FALSE(result.has_value());
  return result.error();
}

// The clock without its pruning information: what naive pruning would compare.
clock64 strip(const clock64& clock) {
  clock64 out;
  for (const auto& e : clock.entries()) out.merge(clock64{{e.node, e.counter}});
  return out;
}

using interlock_test::copy_failure_after;
using interlock_test::fragile_id;
using interlock_test::injected_failure;

using fragile_clock = interlock::vector_clock<fragile_id>;

// Entries sorted by strictly increasing node, none with a counter of 0.
bool is_valid(const fragile_clock& clock) {
  const auto entries = clock.entries();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].counter == 0) return false;
    if (i > 0 && !(entries[i - 1].node < entries[i].node)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("vector_clock tick, get, nodes, forget", "[vector_clock]") {
  clock64 clock;
  CHECK(clock.empty());
  CHECK(clock.get(7) == 0);
  CHECK(clock.tick(7) == 1);
  CHECK(clock.tick(7) == 2);
  CHECK(clock.tick(3) == 1);
  CHECK(clock.get(7) == 2);
  CHECK(clock.get(3) == 1);
  CHECK(clock.nodes() == std::vector<std::uint64_t>{3, 7});
  CHECK(clock.to_string() == "{3:1,7:2}");
  CHECK(clock.forget(3));
  CHECK_FALSE(clock.forget(3));
  CHECK(clock.nodes() == std::vector<std::uint64_t>{7});
  CHECK_FALSE(clock.is_pruned());

  const clock64 listed{{5, 2}, {1, 4}, {5, 1}, {9, 0}};
  CHECK(listed.to_string() == "{1:4,5:2}");
}

TEST_CASE("vector_clock compare: the four orders", "[vector_clock]") {
  const clock64 a{{1, 1}, {2, 1}};
  const clock64 b{{1, 2}, {2, 1}};
  const clock64 c{{1, 1}, {2, 2}};
  CHECK(a.compare(b) == clock_order::before);
  CHECK(b.compare(a) == clock_order::after);
  CHECK(a.compare(a) == clock_order::equal);
  CHECK(b.compare(c) == clock_order::concurrent);
  CHECK(b.concurrent_with(c));
  CHECK(a.happens_before(b));
  CHECK(b.descends(a));
  CHECK(b.descends(b));
  CHECK_FALSE(a.descends(b));
  CHECK(clock64{}.compare(a) == clock_order::before);
}

TEST_CASE("vector_clock merge and compare are consistent (uint64 ids)",
          "[vector_clock][property]") {
  check_algebra<std::uint64_t>(1, 6);
  check_algebra<std::uint64_t>(2, 20);  // clocks past the inline capacity
}

TEST_CASE("vector_clock merge and compare are consistent (string ids)",
          "[vector_clock][property]") {
  check_algebra<std::string>(3, 6);
  check_algebra<std::string>(4, 20);
}

TEST_CASE("vector_clock with string ids", "[vector_clock]") {
  string_clock alice;
  alice.tick("alice");
  alice.tick("alice");
  string_clock bob;
  bob.tick("bob");
  CHECK(alice.concurrent_with(bob));
  bob.merge(alice);
  bob.tick("bob");
  CHECK(alice.happens_before(bob));
  CHECK(bob.to_string() == "{alice:2,bob:2}");
  const std::string long_id(100, 'x');  // beyond any small-string buffer
  bob.tick(long_id);
  CHECK(bob.get(long_id) == 1);
  const auto decoded = string_clock::decode_binary(bob.encode_binary());
  REQUIRE(decoded.has_value());
  CHECK(*decoded == bob);
}

TEST_CASE("vector_clock keeps up to 8 nodes inline", "[vector_clock]") {
  clock64 clock;
  for (std::uint64_t n = 0; n < 8; ++n) {
    clock.tick(n * 10);
    CHECK(clock.is_inline());
  }
  const clock64 copy = clock;
  CHECK(copy.is_inline());
  clock.tick(5);  // the ninth node spills to the heap
  CHECK_FALSE(clock.is_inline());
  CHECK(clock.size() == 9);
  CHECK(clock.get(5) == 1);
  CHECK(clock.get(70) == 1);
  clock.forget(5);  // back to 8: inline again, heap block freed
  CHECK(clock.is_inline());
  CHECK(clock == copy);

  // merge that grows past the capacity, then a move leaves the source empty and valid.
  clock64 other;
  for (std::uint64_t n = 0; n < 8; ++n) other.tick(n * 10 + 1);
  clock.merge(other);
  CHECK(clock.size() == 16);
  CHECK_FALSE(clock.is_inline());
  clock64 moved = std::move(clock);
  CHECK(moved.size() == 16);
  CHECK(clock.empty());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  CHECK(clock.is_inline());
  clock.tick(1);
  CHECK(clock.get(1) == 1);

  string_clock names;
  for (int n = 0; n < 8; ++n) names.tick("n" + std::to_string(n));
  CHECK(names.is_inline());
}

TEST_CASE("vector_clock binary and text round trips", "[vector_clock][encoding]") {
  std::mt19937_64 random(11);
  for (int round = 0; round < 500; ++round) {
    auto clock = random_clock<std::uint64_t>(random, 30, 1000);
    if (round % 4 == 0) clock.prune(3);
    const auto binary = clock64::decode_binary(clock.encode_binary());
    REQUIRE(binary.has_value());
    REQUIRE(*binary == clock);
    const auto text = clock64::decode_text(clock.to_string());
    REQUIRE(text.has_value());
    REQUIRE(*text == clock);
  }
  string_clock odd{{"", 1}, {"a b", 2}, {"%", 3}, {std::string("\0\xff", 2), 4}, {"x.y-z_0", 5}};
  odd.prune(4);
  const std::string text = odd.to_string();
  CHECK(text == "{%00%FF:4,%25:3,a%20b:2,x.y-z_0:5}~1");
  const auto from_text = string_clock::decode_text(text);
  REQUIRE(from_text.has_value());
  CHECK(*from_text == odd);
  const auto from_binary = string_clock::decode_binary(odd.encode_binary());
  REQUIRE(from_binary.has_value());
  CHECK(*from_binary == odd);

  using signed_clock = interlock::vector_clock<std::int32_t>;
  const signed_clock negative{{-5, 1}, {0, 2}, {2147483647, 3}, {-2147483647 - 1, 4}};
  const auto round_trip = signed_clock::decode_binary(negative.encode_binary());
  REQUIRE(round_trip.has_value());
  CHECK(*round_trip == negative);
  CHECK(negative.to_string() == "{-2147483648:4,-5:1,0:2,2147483647:3}");
  CHECK(*signed_clock::decode_text(negative.to_string()) == negative);

  CHECK(clock64{}.encode_binary() == bytes({0x00, 0x00}));
  CHECK(clock64{{1, 300}}.encode_binary() == bytes({0x00, 0x01, 0x01, 0xAC, 0x02}));
}

TEST_CASE("vector_clock binary decoding rejects hostile input", "[vector_clock][encoding]") {
  using E = clock_decode_error;
  CHECK(binary_error<clock64>({}) == E::truncated);
  CHECK(binary_error<clock64>(bytes({0x00})) == E::truncated);
  CHECK(binary_error<clock64>(bytes({0x02, 0x00})) == E::bad_flags);
  CHECK(binary_error<clock64>(bytes({0x01, 0x00, 0x00})) == E::zero_prune_bound);
  CHECK(binary_error<clock64>(bytes({0x01})) == E::truncated);
  CHECK(binary_error<clock64>(bytes({0x00, 0x81, 0x80, 0x04})) == E::too_many_entries);
  CHECK(binary_error<clock64>(bytes({0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                     0x01})) == E::too_many_entries);  // 2^64 - 1 entries
  CHECK(binary_error<clock64>(bytes({0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                     0x02})) == E::varint_overflow);
  CHECK(binary_error<clock64>(bytes({0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x00})) == E::varint_overflow);
  CHECK(binary_error<clock64>(bytes({0x00, 0x05, 0x01, 0x01})) == E::count_exceeds_input);
  CHECK(binary_error<clock64>(bytes({0x00, 0x01, 0x85, 0x01})) == E::truncated);
  CHECK(binary_error<clock64>(bytes({0x00, 0x01, 0x05, 0x00})) == E::zero_counter);
  CHECK(binary_error<clock64>(bytes({0x00, 0x02, 0x05, 0x01, 0x05, 0x02})) == E::duplicate_node);
  CHECK(binary_error<clock64>(bytes({0x00, 0x02, 0x06, 0x01, 0x05, 0x02})) == E::unsorted_nodes);
  CHECK(binary_error<clock64>(bytes({0x00, 0x01, 0x05, 0x01, 0x00})) == E::trailing_bytes);
  CHECK(binary_error<interlock::vector_clock<std::uint8_t>>(
            bytes({0x00, 0x01, 0xAC, 0x02, 0x01})) == E::node_id_out_of_range);
  CHECK(binary_error<interlock::vector_clock<std::int8_t>>(bytes({0x00, 0x01, 0x80, 0x02, 0x01})) ==
        E::node_id_out_of_range);  // zigzag 256 = 128

  // string ids: a length beyond the cap, a length beyond the input
  auto long_id = bytes({0x00, 0x01, 0x81, 0x08});
  long_id.resize(long_id.size() + 1100, std::byte{'a'});
  CHECK(binary_error<string_clock>(long_id) == E::node_id_too_long);
  CHECK(binary_error<string_clock>(bytes({0x00, 0x01, 0x05, 'a', 'b'})) == E::truncated);
  CHECK(binary_error<string_clock>(bytes({0x00, 0x02, 0x01, 'b', 0x01, 0x01, 'a', 0x01})) ==
        E::unsorted_nodes);
  // the largest accepted count still decodes
  std::vector<std::byte> many = bytes({0x00, 0x80, 0x80, 0x04});  // 65536
  for (std::uint64_t n = 0; n < 65536; ++n) {
    interlock::detail::put_varint(many, n);
    many.push_back(std::byte{1});
  }
  const auto big = clock64::decode_binary(many);
  REQUIRE(big.has_value());
  CHECK(big->size() == 65536);
}

TEST_CASE("vector_clock text decoding rejects hostile input", "[vector_clock][encoding]") {
  using E = clock_decode_error;
  CHECK(text_error<string_clock>("") == E::bad_syntax);
  CHECK(text_error<string_clock>("{") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a:1") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a:1,}") == E::bad_syntax);
  CHECK(text_error<string_clock>(" {a:1}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a :1}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a:}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a:+1}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{%zz:1}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{%4:1}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a:99999999999999999999999}") == E::bad_syntax);
  CHECK(text_error<string_clock>("{a:0}") == E::zero_counter);
  CHECK(text_error<string_clock>("{b:1,a:1}") == E::unsorted_nodes);
  CHECK(text_error<string_clock>("{a:1,a:2}") == E::duplicate_node);
  CHECK(text_error<string_clock>("{a:1}x") == E::trailing_bytes);
  CHECK(text_error<string_clock>("{a:1}~0") == E::zero_prune_bound);
  CHECK(text_error<string_clock>("{a:1}~") == E::bad_syntax);
  CHECK(text_error<string_clock>("{" + std::string(1025, 'a') + ":1}") == E::node_id_too_long);
  CHECK(text_error<clock64>("{99999999999999999999999:1}") == E::node_id_out_of_range);
  CHECK(text_error<clock64>("{-1:1}") == E::bad_syntax);
  CHECK(text_error<clock64>("{a:1}") == E::bad_syntax);
  CHECK(text_error<interlock::vector_clock<std::uint8_t>>("{256:1}") == E::node_id_out_of_range);
  std::string many = "{";
  for (int n = 0; n <= 65536; ++n) many += std::to_string(n) + ":1,";
  many.back() = '}';
  CHECK(text_error<clock64>(many) == E::too_many_entries);

  const auto ok = string_clock::decode_text("{a:3,b:1}~2");
  REQUIRE(ok.has_value());
  CHECK(ok->get("a") == 3);
  CHECK(ok->pruned_bound() == 2);
  CHECK(string_clock::decode_text("{}").has_value());
  CHECK(interlock::to_string(E::trailing_bytes) == std::string("trailing bytes"));
}

TEST_CASE("vector_clock decoding is canonical: only the encoder's own form decodes",
          "[vector_clock][encoding]") {
  using E = clock_decode_error;
  // Overlong varints: the count, an id and a counter written with a needless 0x80 byte.
  CHECK(binary_error<clock64>(bytes({0x00, 0x81, 0x00, 0x05, 0x01})) == E::non_canonical);
  CHECK(binary_error<clock64>(bytes({0x00, 0x01, 0x85, 0x00, 0x01})) == E::non_canonical);
  CHECK(binary_error<clock64>(bytes({0x00, 0x01, 0x05, 0x81, 0x80, 0x00})) == E::non_canonical);
  CHECK(binary_error<clock64>(bytes({0x01, 0x82, 0x00, 0x00})) == E::non_canonical);  // bound
  // Text: leading zeros and negative zero in counters, bounds and integer ids.
  CHECK(text_error<string_clock>("{a:01}") == E::non_canonical);
  CHECK(text_error<string_clock>("{a:00}") == E::non_canonical);
  CHECK(text_error<string_clock>("{a:1}~02") == E::non_canonical);
  using signed_clock = interlock::vector_clock<std::int64_t>;
  CHECK(text_error<clock64>("{007:1}") == E::non_canonical);
  CHECK(text_error<signed_clock>("{-0:1}") == E::non_canonical);
  CHECK(text_error<signed_clock>("{-05:1}") == E::non_canonical);
  // Text: escapes of plain characters, and lowercase hex.
  CHECK(text_error<string_clock>("{%61:1}") == E::non_canonical);
  CHECK(text_error<string_clock>("{%2d:1}") == E::non_canonical);
  CHECK(text_error<string_clock>("{%fF:1}") == E::non_canonical);
  CHECK(text_error<string_clock>("{%g0:1}") == E::bad_syntax);
  // The canonical forms of the same values decode, and zeros that are the whole number
  // are still what they were (an id of 0; a counter of 0 is rejected as zero_counter).
  CHECK(string_clock::decode_text("{%20:1,a:1}").has_value());
  CHECK(clock64::decode_binary(bytes({0x00, 0x01, 0x00, 0x01})).has_value());
  CHECK(signed_clock::decode_text("{-5:1,0:2}").has_value());
  CHECK(text_error<string_clock>("{a:0}") == E::zero_counter);
  CHECK(interlock::to_string(E::non_canonical) == std::string("non-canonical encoding"));

  // Every accepted input is the encoding of what it decodes to.
  std::mt19937_64 random(5);
  for (int round = 0; round < 200; ++round) {
    auto clock = random_clock<std::uint64_t>(random, 20, 1u << 20);
    if (round % 3 == 0) clock.prune(4);
    const auto binary = clock.encode_binary();
    const auto text = clock.to_string();
    CHECK(clock64::decode_binary(binary)->encode_binary() == binary);
    CHECK(clock64::decode_text(text)->to_string() == text);
  }
}

TEST_CASE("vector_clock prune drops the smallest counters and remembers the bound",
          "[vector_clock][prune]") {
  string_clock clock{{"a", 5}, {"b", 1}, {"c", 3}, {"d", 1}};
  CHECK(clock.prune(4) == 0);
  CHECK_FALSE(clock.is_pruned());
  CHECK(clock.prune(2) == 2);
  CHECK(clock.is_pruned());
  CHECK(clock.pruned_bound() == 1);
  CHECK(clock.to_string() == "{a:5,c:3}~1");
  // a pruned clock is a different value, and the flag survives both encodings
  CHECK(clock != (string_clock{{"a", 5}, {"c", 3}}));
  CHECK(string_clock::decode_binary(clock.encode_binary())->pruned_bound() == 1);
  // ticking a dropped node continues past the bound: counters are never reused
  CHECK(clock.tick("b") == 2);
  CHECK(clock.tick("e") == 2);
  CHECK(clock.prune(0) == 4);
  CHECK(clock.empty());
  CHECK(clock.pruned_bound() == 5);
  // merge carries the larger bound
  string_clock plain{{"x", 1}};
  plain.merge(clock);
  CHECK(plain.pruned_bound() == 5);

  // the ancestor of a pruned clock is not reported concurrent with it
  const string_clock ancestor{{"a", 2}, {"b", 1}, {"c", 3}};
  string_clock current{{"a", 4}, {"b", 1}, {"c", 3}, {"d", 7}};
  CHECK(current.compare(ancestor) == clock_order::after);
  current.prune(2);  // keeps d:7, a:4; drops b:1, c:3 (bound 3)
  CHECK(current.to_string() == "{a:4,d:7}~3");
  CHECK(current.compare(ancestor) == clock_order::after);
  CHECK(ancestor.compare(current) == clock_order::before);
  CHECK(strip(clock64{}).compare(clock64{}) == clock_order::equal);
  // naive pruning (the bound forgotten) would have called them concurrent
  string_clock naive{{"a", 4}, {"d", 7}};
  CHECK(naive.compare(ancestor) == clock_order::concurrent);
  // truly concurrent clocks that differ above the bound stay concurrent
  const string_clock other{{"a", 1}, {"e", 9}};
  CHECK(current.compare(other) == clock_order::concurrent);
}

TEST_CASE("pruning never reports concurrent where the truth is ordered (random histories)",
          "[vector_clock][prune][property]") {
  // Every node keeps its true clock (never pruned) and a pruned shadow that undergoes
  // the same events and random pruning. Events are named by the shadow's tick, so both
  // clocks describe the same history.
  constexpr std::uint64_t nodes = 12;
  std::uint64_t ordered_checks = 0;
  std::uint64_t naive_would_fail = 0;
  for (std::uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 random(seed);
    std::vector<clock64> truth(nodes), shadow(nodes);
    struct snapshot {
      clock64 truth, shadow;
    };
    std::vector<snapshot> history;
    auto local_event = [&](std::uint64_t i) {
      const std::uint64_t counter = shadow[i].tick(i);
      REQUIRE(counter > truth[i].get(i));
      truth[i].merge(clock64{{i, counter}});
    };
    for (int step = 0; step < 1500; ++step) {
      const std::uint64_t i = random() % nodes;
      const auto action = random() % 10;
      if (action < 3) {
        local_event(i);
      } else if (action < 8) {
        const std::uint64_t from = random() % nodes;
        truth[i].merge(truth[from]);
        shadow[i].merge(shadow[from]);
        local_event(i);
      } else {
        shadow[i].prune(2 + random() % 5);
      }
      // invariant: stored <= truth <= max(stored, bound)
      for (const auto& e : truth[i].entries()) {
        const auto stored = shadow[i].get(e.node);
        REQUIRE(stored <= e.counter);
        REQUIRE(e.counter <= std::max(stored, shadow[i].pruned_bound()));
      }
      history.push_back({truth[i], shadow[i]});
    }
    for (int check = 0; check < 20000; ++check) {
      const auto& x = history[random() % history.size()];
      const auto& y = history[random() % history.size()];
      const clock_order real = x.truth.compare(y.truth);
      if (real == clock_order::concurrent) continue;
      ++ordered_checks;
      INFO("x=" << x.shadow << " y=" << y.shadow << " truth x=" << x.truth << " y=" << y.truth);
      REQUIRE(x.shadow.compare(y.shadow) != clock_order::concurrent);
      REQUIRE(x.shadow.compare(y.truth) != clock_order::concurrent);
      REQUIRE(x.truth.compare(y.shadow) != clock_order::concurrent);
      if (real == clock_order::after) REQUIRE(x.shadow.descends(y.truth));
      if (real == clock_order::before) REQUIRE(y.truth.descends(x.shadow));
      if (strip(x.shadow).compare(strip(y.shadow)) == clock_order::concurrent) ++naive_would_fail;
    }
  }
  CHECK(ordered_checks > 10000);
  CHECK(naive_would_fail > 100);  // the test exercises what naive pruning gets wrong
}

TEST_CASE("atomic_vector_clock: 8 threads tick, every clock distinct and ordered",
          "[vector_clock][atomic][stress]") {
  constexpr int threads = 8;
  constexpr int ticks = 10000;
  interlock::atomic_vector_clock<std::string> clock("self");
  std::vector<std::vector<std::pair<std::uint64_t, std::uint64_t>>> seen(threads);  // self, peer
  std::atomic<int> not_ordered{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      string_clock previous;
      seen[static_cast<std::size_t>(t)].reserve(ticks);
      for (int k = 0; k < ticks; ++k) {
        string_clock now = (k % 100 == 0) ? clock.receive(string_clock{{"peer", 1}}) : clock.tick();
        if (!previous.happens_before(now)) not_ordered.fetch_add(1, std::memory_order_relaxed);
        seen[static_cast<std::size_t>(t)].emplace_back(now.get("self"), now.get("peer"));
        previous = std::move(now);
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK(not_ordered.load() == 0);
  std::set<std::pair<std::uint64_t, std::uint64_t>> all;
  for (const auto& list : seen) all.insert(list.begin(), list.end());
  CHECK(all.size() == static_cast<std::size_t>(threads * ticks));  // every clock distinct
  CHECK(all.begin()->first == 1);
  CHECK(all.rbegin()->first == static_cast<std::uint64_t>(threads * ticks));
  // totally ordered: in own-counter order, each clock happens before the next
  int unordered_pairs = 0;
  for (auto it = all.begin(), next = std::next(all.begin()); next != all.end(); ++it, ++next) {
    const string_clock a{{"self", it->first}, {"peer", it->second}};
    const string_clock b{{"self", next->first}, {"peer", next->second}};
    if (!a.happens_before(b)) ++unordered_pairs;
  }
  CHECK(unordered_pairs == 0);
  CHECK(clock.own_counter() == static_cast<std::uint64_t>(threads * ticks));
  CHECK(clock.snapshot().get("peer") == 1);
}

TEST_CASE("vector_clock: assigning a small clock over a large one makes it inline again",
          "[vector_clock]") {
  interlock::vector_clock<std::uint64_t> big;
  interlock::vector_clock<std::uint64_t> small;
  for (std::uint64_t n = 0; n < 9; ++n) big.tick(n);
  small.tick(1);
  REQUIRE_FALSE(big.is_inline());
  big = small;
  CHECK(big.size() == 1);
  CHECK(big.is_inline());
  CHECK(big == small);
  interlock::vector_clock<std::uint64_t> large;
  for (std::uint64_t n = 0; n < 12; ++n) large.tick(n);
  large = std::move(small);
  CHECK(large.is_inline());
  CHECK(large.get(1) == 1);
}

TEST_CASE(
    "vector_clock merge: a throw while copying ids leaves a valid clock that descends "
    "the original",
    "[vector_clock][exceptions]") {
  const fragile_clock original{{"b", 1}, {"d", 1}};
  const fragile_clock other{{"a", 5}, {"c", 5}, {"d", 3}, {"e", 5}};
  const fragile_clock expected{{"a", 5}, {"b", 1}, {"c", 5}, {"d", 3}, {"e", 5}};
  int throws = 0;
  for (int copies = 0;; ++copies) {
    REQUIRE(copies < 100);
    fragile_clock clock = original;
    try {
      const copy_failure_after failure(copies);
      clock.merge(other);
    } catch (const injected_failure&) {
      ++throws;
      INFO("failed at copy " << copies << ": " << clock.size() << " entries");
      REQUIRE(is_valid(clock));
      REQUIRE(clock.descends(original));
      REQUIRE(expected.descends(clock));
      continue;
    }
    CHECK(clock == expected);
    break;
  }
  CHECK(throws > 0);
}

TEST_CASE(
    "atomic_vector_clock receive: a failed receipt leaves the clock unchanged, so the next "
    "event does not claim the message",
    "[vector_clock][exceptions]") {
  const fragile_clock start{{"a", 1}, {"b", 1}};
  const fragile_clock message{{"b", 5}, {"c", 1}};
  int throws = 0;
  for (int copies = 0;; ++copies) {
    REQUIRE(copies < 100);
    interlock::atomic_vector_clock<fragile_id> me(fragile_id("a"), start);
    try {
      const copy_failure_after failure(copies);
      (void)me.receive(message);
    } catch (const injected_failure&) {
      ++throws;
      INFO("failed at copy " << copies);
      REQUIRE(me.snapshot() == start);
      REQUIRE_FALSE(me.tick().descends(fragile_clock{{"b", 5}}));  // b:5 was never taken in
      continue;
    }
    CHECK(me.snapshot() == fragile_clock{{"a", 2}, {"b", 5}, {"c", 1}});
    break;
  }
  CHECK(throws > 0);
}

TEST_CASE("vector_clock copy assignment: a throw while copying ids leaves the target unchanged",
          "[vector_clock][exceptions]") {
  fragile_clock large;  // spilled to the heap
  for (const char* node : {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}) large.tick(node);
  const std::vector<std::pair<fragile_clock, fragile_clock>> cases{
      {fragile_clock{{"x1", 7}, {"x2", 7}, {"x3", 7}},
       fragile_clock{{"a1", 1}, {"a2", 1}, {"a3", 1}, {"a4", 1}}},  // inline over inline
      {fragile_clock{{"q", 3}, {"r", 3}}, large},                   // heap over inline
      {large, fragile_clock{{"q", 3}, {"r", 3}}},                   // inline over heap
  };
  for (const auto& [before, source] : cases) {
    int throws = 0;
    for (int copies = 0;; ++copies) {
      REQUIRE(copies < 100);
      fragile_clock target = before;
      try {
        const copy_failure_after failure(copies);
        target = source;
      } catch (const injected_failure&) {
        ++throws;
        INFO("failed at copy " << copies);
        REQUIRE(target == before);
        REQUIRE(target.is_inline() == before.is_inline());
        continue;
      }
      CHECK(target == source);
      CHECK(target.is_inline() == (source.size() <= fragile_clock::inline_capacity));
      break;
    }
    CHECK(throws > 0);
  }
}

TEST_CASE("vector_clock counters never wrap: decoders reject 2^64 - 1, tick throws instead",
          "[vector_clock][encoding]") {
  using E = clock_decode_error;
  constexpr std::uint64_t largest = std::numeric_limits<std::uint64_t>::max() - 1;
  STATIC_REQUIRE(string_clock::max_counter == largest);

  // A peer's counter or bound of 2^64 - 1 is refused by both decoders.
  CHECK(text_error<string_clock>("{me:18446744073709551615}") == E::counter_out_of_range);
  CHECK(text_error<string_clock>("{}~18446744073709551615") == E::counter_out_of_range);
  const auto all_ones = [] {  // the varint of 2^64 - 1
    return bytes({0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01});
  };
  auto counter = bytes({0x00, 0x01, 0x05});
  for (std::byte b : all_ones()) counter.push_back(b);
  CHECK(binary_error<clock64>(counter) == E::counter_out_of_range);
  auto bound = bytes({0x01});
  for (std::byte b : all_ones()) bound.push_back(b);
  bound.push_back(std::byte{0x00});
  CHECK(binary_error<clock64>(bound) == E::counter_out_of_range);

  // max_counter itself decodes and round-trips, but cannot be ticked past.
  auto at_max = string_clock::decode_text("{me:18446744073709551614}");
  REQUIRE(at_max.has_value());
  CHECK(at_max->get("me") == largest);
  CHECK(string_clock::decode_binary(at_max->encode_binary()).has_value());
  string_clock clock = *at_max;
  CHECK_THROWS_AS(clock.tick("me"), std::overflow_error);
  CHECK_THROWS_AS(clock.tick("me"), interlock::clock_overflow_error);
  CHECK(clock == *at_max);

  // A bound at max_counter: a new node cannot be ticked either (it would start past it).
  auto pruned = string_clock::decode_text("{}~18446744073709551614");
  REQUIRE(pruned.has_value());
  string_clock bounded = *pruned;
  CHECK_THROWS_AS(bounded.tick("me"), std::overflow_error);
  CHECK(bounded == *pruned);

  // receive() refuses before merging, so the node's clock stays as it was.
  interlock::atomic_vector_clock<std::string> me("me", string_clock{{"me", 2}});
  CHECK_THROWS_AS(me.receive(*at_max), std::overflow_error);
  CHECK_THROWS_AS(me.receive(*pruned), std::overflow_error);
  CHECK(me.snapshot() == string_clock{{"me", 2}});
  CHECK(me.receive(string_clock{{"peer", largest}}).get("me") == 3);
}

// GNU 128-bit integers pass std::integral under -std=gnu++20; the encodings carry ids as
// 64-bit varints, so such ids must not be encodable (they would be cut to 64 bits).
__extension__ typedef unsigned __int128 uint128_id;

template <class Clock>
constexpr bool has_encode_binary = requires(const Clock& clock) {
  clock.encode_binary();
};

TEST_CASE("vector_clock: ids wider than 64 bits are not encodable", "[vector_clock][encoding]") {
  using wide_clock = interlock::vector_clock<uint128_id>;
  CHECK_FALSE(has_encode_binary<wide_clock>);
  CHECK(has_encode_binary<clock64>);
  CHECK_FALSE(interlock::detail::encodable_node_id<uint128_id>);
  CHECK(interlock::detail::encodable_node_id<std::uint64_t>);
  CHECK(interlock::detail::encodable_node_id<std::int64_t>);

  // The clock itself still works with such ids.
  wide_clock a{{uint128_id{1}, 1}};
  wide_clock b{{(uint128_id{1} << 64) | 1, 1}};
  CHECK(a.concurrent_with(b));
  a.merge(b);
  CHECK(a.size() == 2);
}

TEST_CASE("vector_clock: character types are not encodable ids (no to_chars for them)",
          "[vector_clock][encoding]") {
  CHECK_FALSE(interlock::detail::encodable_node_id<wchar_t>);
  CHECK_FALSE(interlock::detail::encodable_node_id<char8_t>);
  CHECK_FALSE(interlock::detail::encodable_node_id<char16_t>);
  CHECK_FALSE(interlock::detail::encodable_node_id<char32_t>);
  CHECK(interlock::detail::encodable_node_id<char>);
  CHECK_FALSE(has_encode_binary<interlock::vector_clock<char32_t>>);
}
