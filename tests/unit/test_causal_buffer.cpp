// causal_buffer: delivery order, missing-message reports, duplicates, invalid stamps,
// bounded policies, expiry with a fake clock, a throwing callback, a 5-node simulation
// of 10,000 messages with delays, duplicates and reordering checked against the
// simulation's own happens-before, concurrent offers, and concurrent offers (callback
// and batch forms) of interdependent senders racing expire and deliver_ready.
#include <interlock/causal_buffer.hpp>

#include <catch2/catch.hpp>

#include "support/fragile_id.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using interlock::offer_status;
using interlock::overflow_policy;
using string_clock = interlock::vector_clock<std::string>;
using clock64 = interlock::vector_clock<>;
using text_buffer = interlock::causal_buffer<std::string, std::string>;

// A steady-clock time the test moves by hand.
struct fake_time {
  std::chrono::steady_clock::time_point now{};
  void advance(std::chrono::seconds by) { now += by; }
};

/// A deliver callback that records every message in `seen` and throws on `fail_on`.
auto recording_callback(std::vector<std::string>& seen, std::string fail_on) {
  return [&seen, fail_on = std::move(fail_on)](text_buffer::delivered&& d) {
    seen.push_back(d.message);
    if (d.message == fail_on) throw std::runtime_error("application failed");
  };
}

std::vector<std::string> messages_of(const text_buffer::offer_result& result) {
  std::vector<std::string> out;
  for (const auto& d : result.deliveries) out.push_back(d.message);
  return out;
}

using interlock_test::copy_failure_after;
using interlock_test::fragile_id;
using interlock_test::injected_failure;

using fragile_clock = interlock::vector_clock<fragile_id>;
using fragile_buffer = interlock::causal_buffer<std::string, fragile_id>;

}  // namespace

TEST_CASE("causal_buffer delivers in causal order and reports what is missing", "[causal_buffer]") {
  text_buffer buffer;
  auto r = buffer.offer("b", string_clock{{"b", 3}}, "b3");
  CHECK(r.status == offer_status::held);
  CHECK(r.deliveries.empty());
  REQUIRE(buffer.missing().size() == 1);
  CHECK(buffer.missing()[0].node == "b");
  CHECK(buffer.missing()[0].counter == 1);
  CHECK(buffer.missing()[0].to_string() == "needs message 1 from node b");
  const auto waits = buffer.waiting_for("b", 3);
  REQUIRE(waits.size() == 1);
  CHECK(waits[0].to_string() == "needs message 1 from node b");
  CHECK(buffer.waiting_for("b", 9).empty());

  // a reply from a that saw b1 arrives before b1
  r = buffer.offer("a", string_clock{{"a", 1}, {"b", 1}}, "a1");
  CHECK(r.status == offer_status::held);
  r = buffer.offer("b", string_clock{{"b", 2}}, "b2");
  CHECK(r.status == offer_status::held);
  CHECK(buffer.waiting_for("a", 1) == std::vector<text_buffer::missing_message>{{"b", 1}});

  r = buffer.offer("b", string_clock{{"b", 1}}, "b1");
  CHECK(r.status == offer_status::delivered);
  CHECK(r.delivered_count == 4);
  const auto order = messages_of(r);
  REQUIRE(order.size() == 4);
  CHECK(order[0] == "b1");
  // a1 after b1; b2 before b3
  const auto pos = [&](const char* m) {
    return std::find(order.begin(), order.end(), m) - order.begin();
  };
  CHECK(pos("a1") > pos("b1"));
  CHECK(pos("b2") < pos("b3"));
  CHECK(buffer.missing().empty());
  CHECK(buffer.local() == (string_clock{{"a", 1}, {"b", 3}}));
  const auto s = buffer.stats();
  CHECK(s.delivered == 4);
  CHECK(s.held == 0);

  // a gap per node, also past held messages
  buffer.offer("c", string_clock{{"c", 1}, {"d", 2}}, "c1");
  buffer.offer("c", string_clock{{"c", 3}}, "c3");
  const auto gaps = buffer.missing();
  REQUIRE(gaps.size() == 2);
  CHECK(gaps[0].to_string() == "needs message 2 from node c");
  CHECK(gaps[1].to_string() == "needs message 1 from node d");
}

TEST_CASE("causal_buffer drops duplicates and rejects invalid stamps", "[causal_buffer]") {
  text_buffer buffer;
  CHECK(buffer.offer("a", string_clock{{"a", 1}}, "a1").status == offer_status::delivered);
  CHECK(buffer.offer("a", string_clock{{"a", 1}}, "a1 again").status == offer_status::duplicate);
  CHECK(buffer.offer("a", string_clock{{"a", 3}}, "a3").status == offer_status::held);
  CHECK(buffer.offer("a", string_clock{{"a", 3}}, "a3 again").status == offer_status::duplicate);
  CHECK(buffer.offer("a", string_clock{{"b", 3}}, "no entry for a").status ==
        offer_status::invalid);
  string_clock pruned{{"a", 2}, {"b", 1}};
  pruned.prune(1);
  CHECK(buffer.offer("a", pruned, "pruned").status == offer_status::invalid);
  const auto s = buffer.stats();
  CHECK(s.duplicates == 2);
  CHECK(s.rejected == 2);
  CHECK(s.delivered == 1);
  CHECK(s.held == 1);
}

TEST_CASE("causal_buffer records its own sends", "[causal_buffer]") {
  text_buffer a, b;
  const string_clock first = a.stamp_send("a");
  CHECK(first == (string_clock{{"a", 1}}));
  CHECK(b.offer("a", first, "hello").status == offer_status::delivered);
  const string_clock reply = b.stamp_send("b");
  CHECK(reply == (string_clock{{"a", 1}, {"b", 1}}));
  CHECK(a.offer("b", reply, "hi").status == offer_status::delivered);  // a sent a1 itself
  CHECK(a.offer("a", first, "echo of own message").status == offer_status::duplicate);
}

TEST_CASE("causal_buffer bounded by entries: reject_new and evict_oldest", "[causal_buffer]") {
  SECTION("reject_new") {
    text_buffer::options opts;
    opts.max_entries = 2;
    text_buffer buffer({}, opts);
    CHECK(buffer.offer("a", string_clock{{"a", 2}}, "a2").status == offer_status::held);
    CHECK(buffer.offer("a", string_clock{{"a", 3}}, "a3").status == offer_status::held);
    CHECK(buffer.offer("a", string_clock{{"a", 4}}, "a4").status == offer_status::rejected);
    // a deliverable message needs no room
    const auto r = buffer.offer("a", string_clock{{"a", 1}}, "a1");
    CHECK(r.status == offer_status::delivered);
    CHECK(r.delivered_count == 3);
    CHECK(buffer.stats().rejected == 1);
    CHECK(buffer.missing().empty());
  }
  SECTION("evict_oldest") {
    text_buffer::options opts;
    opts.max_entries = 2;
    opts.when_full = overflow_policy::evict_oldest;
    text_buffer buffer({}, opts);
    buffer.offer("a", string_clock{{"a", 3}}, "a3");
    buffer.offer("b", string_clock{{"b", 2}}, "b2");
    const auto r = buffer.offer("a", string_clock{{"a", 2}}, "a2");
    CHECK(r.status == offer_status::held);
    REQUIRE(r.evicted.size() == 1);
    CHECK(r.evicted[0].message == "a3");
    CHECK(r.evicted[0].sender == "a");
    CHECK(buffer.stats().evicted == 1);
    CHECK(buffer.stats().held == 2);
    // the evicted message leaves a gap until it is offered again
    CHECK(buffer.offer("a", string_clock{{"a", 1}}, "a1").delivered_count == 2);
    CHECK(buffer.local().get("a") == 2);
    CHECK(buffer.offer("a", string_clock{{"a", 3}}, "a3").status == offer_status::delivered);
  }
}

TEST_CASE("causal_buffer bounded by bytes with a size function", "[causal_buffer]") {
  text_buffer::options opts;
  opts.max_bytes = 10;
  opts.when_full = overflow_policy::evict_oldest;
  opts.size_of = [](const std::string& m) { return m.size(); };
  text_buffer buffer({}, opts);
  CHECK(buffer.offer("a", string_clock{{"a", 2}}, "aaaa").status == offer_status::held);
  CHECK(buffer.offer("a", string_clock{{"a", 3}}, "bbbb").status == offer_status::held);
  CHECK(buffer.offer("a", string_clock{{"a", 4}}, "cc").status == offer_status::held);
  CHECK(buffer.stats().held_bytes == 10);
  auto r = buffer.offer("a", string_clock{{"a", 5}}, "ddddd");  // evicts aaaa and bbbb
  CHECK(r.status == offer_status::held);
  REQUIRE(r.evicted.size() == 2);
  CHECK(r.evicted[0].message == "aaaa");
  CHECK(r.evicted[1].message == "bbbb");
  CHECK(buffer.stats().held_bytes == 7);
  r = buffer.offer("a", string_clock{{"a", 6}}, "eeeeeeeeeee");  // 11 bytes never fit
  CHECK(r.status == offer_status::rejected);
  CHECK(r.evicted.empty());
  CHECK(buffer.stats().held == 2);
  CHECK(buffer.stats().rejected == 1);
}

TEST_CASE("causal_buffer expires held messages (fake clock, no sleeping)", "[causal_buffer]") {
  fake_time time;
  text_buffer::options opts;
  opts.time_to_live = std::chrono::seconds(10);
  opts.now = [&time] { return time.now; };
  text_buffer buffer({}, opts);
  buffer.offer("a", string_clock{{"a", 2}}, "a2");
  time.advance(std::chrono::seconds(5));
  buffer.offer("a", string_clock{{"a", 3}}, "a3");
  CHECK(buffer.expire().empty());
  time.advance(std::chrono::seconds(5));  // a2 is 10 s old
  const auto expired = buffer.expire();
  REQUIRE(expired.size() == 1);
  CHECK(expired[0].message == "a2");
  time.advance(std::chrono::seconds(6));  // a3 is 11 s old: expires on the next offer
  const auto r = buffer.offer("b", string_clock{{"b", 2}}, "b2");
  REQUIRE(r.expired.size() == 1);
  CHECK(r.expired[0].message == "a3");
  const auto s = buffer.stats();
  CHECK(s.expired == 2);
  CHECK(s.held == 1);
  CHECK(buffer.missing() == std::vector<text_buffer::missing_message>{{"b", 1}});
}

TEST_CASE("causal_buffer stays consistent when the deliver callback throws", "[causal_buffer]") {
  text_buffer buffer;
  buffer.offer("a", string_clock{{"a", 2}}, "a2");
  buffer.offer("a", string_clock{{"a", 3}}, "a3");
  std::vector<std::string> seen;
  auto throwing = recording_callback(seen, "a2");
  CHECK_THROWS_AS(buffer.offer("a", string_clock{{"a", 1}}, "a1", throwing), std::runtime_error);
  CHECK(seen == std::vector<std::string>{"a1", "a2"});
  // a2 counts as delivered (not handed out again); a3 is still held and deliverable
  CHECK(buffer.local().get("a") == 2);
  CHECK(buffer.stats().delivered == 2);
  CHECK(buffer.stats().held == 1);
  CHECK(buffer.deliver_ready(throwing) == 1);
  CHECK(seen.back() == "a3");
  CHECK(buffer.stats().held == 0);
  CHECK(buffer.local().get("a") == 3);
}

TEST_CASE("causal_buffer: expire() keeps what a throwing callback left deliverable",
          "[causal_buffer]") {
  fake_time time;
  text_buffer::options opts;
  opts.time_to_live = std::chrono::seconds(10);
  opts.now = [&time] { return time.now; };
  text_buffer buffer({}, opts);
  buffer.offer("b", string_clock{{"b", 2}}, "b2");
  std::vector<std::string> seen;
  auto throwing = recording_callback(seen, "b1");
  CHECK_THROWS_AS(buffer.offer("b", string_clock{{"b", 1}}, "b1", throwing), std::runtime_error);
  time.advance(std::chrono::seconds(11));  // b2 is past its time to live, but deliverable
  CHECK(buffer.expire().empty());
  CHECK(buffer.deliver_ready(throwing) == 1);
  CHECK(seen == std::vector<std::string>{"b1", "b2"});
  CHECK(buffer.stats().expired == 0);
  // With nothing left to hand out, expiry works again.
  buffer.offer("b", string_clock{{"b", 4}}, "b4");
  time.advance(std::chrono::seconds(10));
  CHECK(buffer.expire().size() == 1);
}

TEST_CASE("causal_buffer: a byte budget near SIZE_MAX does not wrap", "[causal_buffer]") {
  text_buffer::options opts;
  opts.max_bytes = SIZE_MAX;
  opts.size_of = [](const std::string&) { return SIZE_MAX / 2 + 1; };
  text_buffer buffer({}, opts);
  CHECK(buffer.offer("a", string_clock{{"a", 2}}, "a2").status == offer_status::held);
  // Together the two would need SIZE_MAX + 1 bytes: refused, not admitted by a wrap.
  CHECK(buffer.offer("a", string_clock{{"a", 3}}, "a3").status == offer_status::rejected);
  CHECK(buffer.stats().held == 1);
  CHECK(buffer.stats().held_bytes == SIZE_MAX / 2 + 1);
}

TEST_CASE("causal_buffer: after a throwing callback, the next offer delivers what is ready",
          "[causal_buffer]") {
  text_buffer buffer;
  buffer.offer("b", string_clock{{"b", 2}}, "b2");
  std::vector<std::string> seen;
  auto throwing = recording_callback(seen, "b1");
  CHECK_THROWS_AS(buffer.offer("b", string_clock{{"b", 1}}, "b1", throwing), std::runtime_error);
  // b2 became deliverable but was not handed out. A retransmission of it (a duplicate)
  // still drains it, as does any later offer, so a sender that retransmits cannot stall.
  const auto r = buffer.offer("b", string_clock{{"b", 2}}, "b2", throwing);
  CHECK(r.status == offer_status::duplicate);
  CHECK(r.delivered_count == 1);
  CHECK(seen == std::vector<std::string>{"b1", "b2"});
  CHECK(buffer.stats().held == 0);
  CHECK(buffer.offer("c", string_clock{{"b", 2}, {"c", 1}}, "c1", throwing).status ==
        offer_status::delivered);
  CHECK(buffer.local().get("c") == 1);
}

TEST_CASE("causal_buffer: 5 nodes, 10,000 messages, delays, duplicates, reordering",
          "[causal_buffer][simulation]") {
  constexpr std::uint64_t nodes = 5;
  constexpr std::uint64_t total = 10000;
  std::mt19937_64 random(2024);

  struct sent_message {
    std::uint64_t sender = 0;
    clock64 clock;
    std::vector<std::uint64_t> predecessors;  // ground truth: direct causal predecessors
  };
  struct node_state {
    interlock::causal_buffer<std::uint64_t> buffer;
    std::vector<char> has;                  // per message id: delivered here or sent here
    std::vector<std::uint32_t> deliveries;  // per message id: times delivered here
    std::vector<std::uint64_t> since_last_send;
    bool sent_any = false;
    std::uint64_t last_sent = 0;
  };
  std::vector<sent_message> messages;
  messages.reserve(total);
  std::vector<node_state> state(nodes);
  for (auto& n : state) {
    n.has.assign(total, 0);
    n.deliveries.assign(total, 0);
  }
  std::multimap<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>
      network;  // time -> (to, id)
  std::uint64_t causality_violations = 0;
  std::uint64_t copies_sent = 0;
  std::uint64_t held_on_arrival = 0;

  std::uint64_t now = 0;
  while (messages.size() < total || !network.empty()) {
    if (messages.size() < total && random() % 3 != 0) {
      const std::uint64_t from = random() % nodes;
      auto& n = state[from];
      const std::uint64_t id = messages.size();
      sent_message m{from, n.buffer.stamp_send(from), std::move(n.since_last_send)};
      if (n.sent_any) m.predecessors.push_back(n.last_sent);
      n.since_last_send.clear();
      n.sent_any = true;
      n.last_sent = id;
      n.has[id] = 1;
      messages.push_back(std::move(m));
      for (std::uint64_t to = 0; to < nodes; ++to) {
        if (to == from) continue;
        const std::uint64_t copies = (random() % 10 == 0) ? 2 : 1;  // 10% duplicated
        for (std::uint64_t c = 0; c < copies; ++c) {
          network.emplace(now + 1 + random() % 60, std::pair{to, id});  // random delay
          ++copies_sent;
        }
      }
    }
    while (!network.empty() && network.begin()->first <= now) {
      const auto [to, id] = network.begin()->second;
      network.erase(network.begin());
      auto& n = state[to];
      const auto& m = messages[id];
      const auto result = n.buffer.offer(m.sender, m.clock, id, [&](auto&& d) {
        const std::uint64_t got = d.message;
        for (const std::uint64_t p : messages[got].predecessors) {
          if (!n.has[p]) ++causality_violations;
        }
        ++n.deliveries[got];
        n.has[got] = 1;
        n.since_last_send.push_back(got);
      });
      if (result.status == offer_status::held) ++held_on_arrival;
    }
    ++now;
  }

  CHECK(causality_violations == 0);
  std::uint64_t wrong_counts = 0;
  std::uint64_t duplicates = 0;
  for (std::uint64_t node = 0; node < nodes; ++node) {
    const auto& n = state[node];
    for (std::uint64_t id = 0; id < total; ++id) {
      const std::uint32_t expected = messages[id].sender == node ? 0 : 1;
      if (n.deliveries[id] != expected) ++wrong_counts;
    }
    const auto s = n.buffer.stats();
    CHECK(s.held == 0);
    CHECK(s.rejected == 0);
    duplicates += s.duplicates;
  }
  CHECK(wrong_counts == 0);  // every message delivered exactly once everywhere
  CHECK(duplicates == copies_sent - total * (nodes - 1));
  CHECK(duplicates > 1000);
  CHECK(held_on_arrival > 1000);  // the network really reordered causally related messages
}

TEST_CASE("causal_buffer: concurrent offers deliver each message once, in order",
          "[causal_buffer][stress]") {
  constexpr int senders = 4;
  constexpr std::uint64_t per_sender = 3000;
  interlock::causal_buffer<std::uint64_t> buffer;
  std::vector<std::uint64_t> delivered_order;  // written by callbacks, under the buffer's lock
  std::vector<std::thread> workers;
  for (int s = 0; s < senders; ++s) {
    workers.emplace_back([&, s] {
      // each thread offers one sender's stream, locally reordered in windows of 8
      std::mt19937_64 random(static_cast<std::uint64_t>(s));
      std::vector<std::uint64_t> counters(per_sender);
      for (std::uint64_t k = 0; k < per_sender; ++k) counters[k] = k + 1;
      for (std::size_t w = 0; w < counters.size(); w += 8) {
        std::shuffle(
            counters.begin() + static_cast<std::ptrdiff_t>(w),
            counters.begin() + static_cast<std::ptrdiff_t>(std::min(w + 8, counters.size())),
            random);
      }
      const auto sender = static_cast<std::uint64_t>(s);
      for (const std::uint64_t c : counters) {
        buffer.offer(sender, clock64{{sender, c}}, sender * per_sender + c - 1,
                     [&](auto&& d) { delivered_order.push_back(d.message); });
      }
    });
  }
  for (auto& w : workers) w.join();
  REQUIRE(delivered_order.size() == senders * per_sender);
  std::vector<std::uint64_t> next(senders, 0);
  int out_of_order = 0;
  for (const std::uint64_t id : delivered_order) {
    const std::uint64_t sender = id / per_sender;
    if (id % per_sender != next[sender]) ++out_of_order;
    ++next[sender];
  }
  CHECK(out_of_order == 0);
  CHECK(buffer.stats().delivered == senders * per_sender);
  CHECK(buffer.stats().held == 0);
}

// Offers a1 to a buffer holding b1 (which needs a1: its delivery ticks a new node b) and
// b2, with a copy failure injected at every possible point in turn. Whatever fails, no
// message is lost or delivered twice: a retransmission of a1 (the offered message may be
// lost with the exception, as any argument) gets the rest out, in causal order.
template <class Offer>
void check_no_message_lost(Offer offer) {
  int throws = 0;
  for (int copies = 0;; ++copies) {
    REQUIRE(copies < 200);
    fragile_buffer buffer;
    REQUIRE(buffer.offer("b", fragile_clock{{"a", 1}, {"b", 1}}, "b1").status ==
            offer_status::held);
    REQUIRE(buffer.offer("b", fragile_clock{{"a", 1}, {"b", 2}}, "b2").status ==
            offer_status::held);
    std::vector<std::string> seen;
    bool threw = false;
    try {
      const copy_failure_after failure(copies);
      offer(buffer, seen);
    } catch (const injected_failure&) {
      threw = true;
      ++throws;
      offer(buffer, seen);  // the retransmission
    }
    INFO("failed at copy " << copies);
    REQUIRE(seen == std::vector<std::string>{"a1", "b1", "b2"});
    REQUIRE(buffer.stats().delivered == 3);
    REQUIRE(buffer.stats().held == 0);
    REQUIRE(buffer.local() == fragile_clock{{"a", 1}, {"b", 2}});
    if (!threw) break;
  }
  CHECK(throws > 0);
}

TEST_CASE("causal_buffer batch offer: a throw after collecting deliveries loses none of them",
          "[causal_buffer][exceptions]") {
  check_no_message_lost([](fragile_buffer& buffer, std::vector<std::string>& seen) {
    const auto result = buffer.offer("a", fragile_clock{{"a", 1}}, "a1");
    for (const auto& d : result.deliveries) seen.push_back(d.message);
  });
}

TEST_CASE("causal_buffer: a throw while ticking for a held message leaves it held",
          "[causal_buffer][exceptions]") {
  check_no_message_lost([](fragile_buffer& buffer, std::vector<std::string>& seen) {
    buffer.offer("a", fragile_clock{{"a", 1}}, "a1",
                 [&seen](fragile_buffer::delivered&& d) { seen.push_back(d.message); });
  });
}

TEST_CASE("causal_buffer evict_oldest: a throw while holding evicts nothing",
          "[causal_buffer][exceptions]") {
  fragile_buffer::options opts;
  opts.max_entries = 2;
  opts.when_full = overflow_policy::evict_oldest;
  int throws = 0;
  for (int copies = 0;; ++copies) {
    REQUIRE(copies < 100);
    fragile_buffer buffer({}, opts);
    REQUIRE(buffer.offer("b", fragile_clock{{"b", 5}}, "b5").status == offer_status::held);
    REQUIRE(buffer.offer("b", fragile_clock{{"b", 6}}, "b6").status == offer_status::held);
    fragile_buffer::offer_result result;
    try {
      const copy_failure_after failure(copies);
      result = buffer.offer("c", fragile_clock{{"c", 5}}, "c5");  // needs b5's room
    } catch (const injected_failure&) {
      ++throws;
      INFO("failed at copy " << copies);
      // As before the call: both messages still held, nothing evicted.
      REQUIRE(buffer.stats().held == 2);
      REQUIRE(buffer.stats().evicted == 0);
      REQUIRE(buffer.waiting_for("b", 5).size() == 1);
      REQUIRE(buffer.waiting_for("b", 6).size() == 1);
      continue;
    }
    CHECK(result.status == offer_status::held);
    REQUIRE(result.evicted.size() == 1);
    CHECK(result.evicted[0].message == "b5");
    CHECK(buffer.stats().held == 2);
    CHECK(buffer.waiting_for("b", 5).empty());
    break;
  }
  CHECK(throws > 0);
}

TEST_CASE(
    "causal_buffer: a message left deliverable by a throwing callback is delivered, "
    "not expired, by the next offer",
    "[causal_buffer]") {
  fake_time time;
  text_buffer::options opts;
  opts.time_to_live = std::chrono::seconds(10);
  opts.now = [&time] { return time.now; };
  text_buffer buffer({}, opts);
  buffer.offer("a", string_clock{{"a", 2}}, "a2");  // held at t = 0
  time.advance(std::chrono::seconds(9));
  std::vector<std::string> seen;
  auto throwing = recording_callback(seen, "a1");
  CHECK_THROWS_AS(buffer.offer("a", string_clock{{"a", 1}}, "a1", throwing), std::runtime_error);
  time.advance(std::chrono::seconds(2));  // a2 is deliverable, pending, and 11 s old
  const auto r = buffer.offer("b", string_clock{{"b", 1}}, "b1", throwing);
  CHECK(r.expired.empty());
  CHECK(r.delivered_count == 2);
  CHECK(seen == std::vector<std::string>{"a1", "a2", "b1"});
  CHECK(buffer.local().get("a") == 2);
  CHECK(buffer.stats().expired == 0);
}

namespace {

#if INTERLOCK_TSAN || defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

// Three senders whose messages depend on each other: b's i-th message depends on a's
// i-th, c's i-th on b's i-th, and a's i-th on c's (i - 2)-th, so every message but a1
// waits for another sender's.
constexpr std::uint64_t sender_count = 3;
constexpr std::uint64_t node_a = 0;
constexpr std::uint64_t node_b = 1;
constexpr std::uint64_t node_c = 2;

struct chained_messages {
  std::uint64_t per_sender;

  [[nodiscard]] std::uint64_t total() const { return sender_count * per_sender; }
  [[nodiscard]] std::uint64_t id(std::uint64_t sender, std::uint64_t counter) const {
    return sender * per_sender + counter - 1;
  }
  [[nodiscard]] std::uint64_t sender(std::uint64_t id) const { return id / per_sender; }
  [[nodiscard]] std::uint64_t counter(std::uint64_t id) const { return id % per_sender + 1; }

  // The stamp of a message (counters of 0 are dropped by the clock).
  [[nodiscard]] clock64 clock(std::uint64_t id) const {
    const std::uint64_t i = counter(id);
    switch (sender(id)) {
      case node_a:
        return clock64{{node_a, i}, {node_c, i > 2 ? i - 2 : 0}};
      case node_b:
        return clock64{{node_a, i}, {node_b, i}};
      default:
        return clock64{{node_b, i}, {node_c, i}};
    }
  }

  // The messages this one directly depends on; the rest follows by transitivity.
  [[nodiscard]] std::vector<std::uint64_t> predecessors(std::uint64_t id) const {
    const std::uint64_t s = sender(id);
    const std::uint64_t i = counter(id);
    std::vector<std::uint64_t> out;
    if (i > 1) out.push_back(this->id(s, i - 1));
    if (s == node_a && i > 2) out.push_back(this->id(node_c, i - 2));
    if (s == node_b) out.push_back(this->id(node_a, i));
    if (s == node_c) out.push_back(this->id(node_b, i));
    return out;
  }
};

}  // namespace

TEST_CASE(
    "causal_buffer: concurrent shuffled offers of interdependent senders, batch offers, "
    "expire and deliver_ready deliver every message once, in causal order",
    "[causal_buffer][stress]") {
  using buffer_type = interlock::causal_buffer<std::uint64_t>;
  const chained_messages messages{sanitized ? 1000U : 3000U};
  const std::uint64_t total = messages.total();
  constexpr int callback_offerers = 3;  // threads 0..2: callback form; thread 3: batch form
  constexpr int offerers = callback_offerers + 1;
  // No thread runs more than this many offers ahead of another, so the offers of
  // every thread interleave whatever the scheduler does.
  constexpr std::uint64_t window = 8;

  // Time is the number of first offers made so far: held messages expire after
  // `time_to_live` of them and are retransmitted by the test, so expiry races the
  // offers (in offer() and in a thread calling expire()). Retransmissions do not move
  // time, which bounds how often a message can expire.
  constexpr std::int64_t time_to_live = 160;
  std::atomic<std::int64_t> ticks{0};
  buffer_type::options opts;
  opts.time_to_live = std::chrono::steady_clock::duration(time_to_live);
  opts.now = [&ticks] {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(ticks.load(std::memory_order_relaxed)));
  };
  buffer_type buffer({}, opts);

  // Which thread offers what: every message once, some twice (by two threads). Each
  // thread's list is in causal order shuffled in windows of `shuffle_window`, so that
  // messages arrive before their predecessors (from other threads or the same one) but
  // most are delivered while the offers run.
  constexpr std::size_t shuffle_window = 32;
  std::vector<std::vector<std::uint64_t>> lists(offerers);
  std::mt19937_64 random(20240611);
  for (std::uint64_t i = 1; i <= messages.per_sender; ++i) {
    for (const std::uint64_t sender : {node_a, node_b, node_c}) {  // a causal order
      const std::uint64_t id = messages.id(sender, i);
      const auto first = static_cast<std::size_t>(random() % offerers);
      lists[first].push_back(id);
      if (random() % 8 == 0)
        lists[(first + 1 + random() % (offerers - 1)) % offerers].push_back(id);
    }
  }
  for (auto& list : lists) {
    for (std::size_t w = 0; w < list.size(); w += shuffle_window) {
      std::shuffle(
          list.begin() + static_cast<std::ptrdiff_t>(w),
          list.begin() + static_cast<std::ptrdiff_t>(std::min(w + shuffle_window, list.size())),
          random);
    }
  }

  // The delivery log, in the test's own mutex. A callback delivery runs under the
  // buffer's lock, so its `event` places it exactly among the other callback
  // deliveries. A batch is handed out after the buffer unlocks: it took the buffer's
  // lock after event `lo` and before event `hi` (bracketing events of the offer call).
  struct delivery {
    std::uint64_t id = 0;
    std::uint64_t sender = 0;
    std::uint64_t counter = 0;
    std::uint64_t event = 0;  // callback: when; batch: its place in the batch
    std::ptrdiff_t batch = -1;
  };
  struct batch_span {
    std::uint64_t lo = 0;
    std::uint64_t hi = 0;
  };
  std::mutex log_mutex;
  std::vector<delivery> log;
  std::vector<batch_span> batches;
  std::uint64_t event = 0;
  auto record = [&](const buffer_type::delivered& d) {
    const std::lock_guard lock(log_mutex);
    log.push_back({d.message, d.sender, d.clock.get(d.sender), ++event, -1});
  };

  // Retransmissions of expired messages, in a second mutex (never held across a buffer
  // call).
  std::mutex queue_mutex;
  std::deque<buffer_type::envelope> retransmit;
  std::uint64_t expired_reported = 0;
  auto requeue = [&](std::vector<buffer_type::envelope>&& expired) {
    if (expired.empty()) return;
    const std::lock_guard lock(queue_mutex);
    expired_reported += expired.size();
    for (auto& e : expired) retransmit.push_back(std::move(e));
  };
  auto next_retransmission = [&]() -> std::optional<buffer_type::envelope> {
    const std::lock_guard lock(queue_mutex);
    if (retransmit.empty()) return std::nullopt;
    auto e = std::move(retransmit.front());
    retransmit.pop_front();
    return e;
  };

  std::atomic<int> lists_left{offerers};
  std::vector<std::atomic<std::uint64_t>> progress(offerers);  // first offers made, per thread
  std::atomic<bool> expiry_over{false};
  std::atomic<std::uint64_t> refused{0};  // invalid or rejected: none expected
  std::latch start(offerers + 1);

  auto offer = [&](int thread, std::uint64_t sender, clock64 clock, std::uint64_t id) {
    buffer_type::offer_result result;
    if (thread < callback_offerers) {
      result = buffer.offer(sender, std::move(clock), id, record);
    } else {
      std::uint64_t lo = 0;
      {
        const std::lock_guard lock(log_mutex);
        lo = ++event;
      }
      result = buffer.offer(sender, std::move(clock), id);
      const std::lock_guard lock(log_mutex);
      const auto batch = static_cast<std::ptrdiff_t>(batches.size());
      batches.push_back({lo, ++event});
      for (std::size_t k = 0; k < result.deliveries.size(); ++k) {
        const auto& d = result.deliveries[k];
        log.push_back({d.message, d.sender, d.clock.get(d.sender), k, batch});
      }
    }
    if (result.status == offer_status::invalid || result.status == offer_status::rejected) {
      refused.fetch_add(1, std::memory_order_relaxed);
    }
    requeue(std::move(result.expired));
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < offerers; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      const auto& list = lists[static_cast<std::size_t>(t)];
      for (std::uint64_t j = 0; j < list.size(); ++j) {
        // Wait while another thread lags more than `window` offers behind.
        while (
            std::any_of(progress.begin(), progress.end(), [j](const std::atomic<std::uint64_t>& p) {
              return p.load(std::memory_order_acquire) + window < j;
            })) {
          std::this_thread::yield();
        }
        // Retransmit what expired as it comes, as a network would.
        if (auto e = next_retransmission()) offer(t, e->sender, std::move(e->clock), e->message);
        ticks.fetch_add(1, std::memory_order_relaxed);
        const std::uint64_t id = list[j];
        offer(t, messages.sender(id), messages.clock(id), id);
        progress[static_cast<std::size_t>(t)].fetch_add(1, std::memory_order_release);
      }
      progress[static_cast<std::size_t>(t)].store(total, std::memory_order_release);  // done
      lists_left.fetch_sub(1, std::memory_order_release);
      // Retransmit what expired until expiry is over and nothing is left to resend (an
      // offer that expires messages after that requeues them on the thread that made
      // it, which then resends them itself).
      for (;;) {
        const bool over = expiry_over.load(std::memory_order_acquire);  // before the queue
        if (auto e = next_retransmission()) {
          offer(t, e->sender, std::move(e->clock), e->message);
        } else if (over) {
          break;
        } else {
          std::this_thread::yield();
        }
      }
    });
  }
  // Expires and calls deliver_ready while the offers run.
  threads.emplace_back([&] {
    start.arrive_and_wait();
    while (lists_left.load(std::memory_order_acquire) != 0) {
      requeue(buffer.expire());
      buffer.deliver_ready(record);
      std::this_thread::yield();
    }
    expiry_over.store(true, std::memory_order_release);
  });
  for (auto& thread : threads) thread.join();

  // Every message delivered exactly once, with its own stamp.
  std::vector<std::ptrdiff_t> where(total, -1);
  std::uint64_t twice = 0;
  std::uint64_t never = 0;
  std::uint64_t wrong_stamp = 0;
  for (std::size_t k = 0; k < log.size(); ++k) {
    const auto& d = log[k];
    if (d.id >= total) {
      ++wrong_stamp;
      continue;
    }
    if (d.sender != messages.sender(d.id) || d.counter != messages.counter(d.id)) ++wrong_stamp;
    if (where[d.id] != -1) ++twice;
    where[d.id] = static_cast<std::ptrdiff_t>(k);
  }
  for (const auto w : where) never += w == -1 ? 1 : 0;

  // No message delivered before one of its predecessors: `later` says when the order
  // of two deliveries is known and wrong (a batch's place among callback deliveries is
  // only known to within its bracket, so some pairs cannot be judged).
  auto later = [&](const delivery& x, const delivery& y) {  // x certainly after y
    if (x.batch < 0 && y.batch < 0) return x.event > y.event;
    if (x.batch >= 0 && x.batch == y.batch) return x.event > y.event;
    if (x.batch < 0) return x.event > batches[static_cast<std::size_t>(y.batch)].hi;
    if (y.batch < 0) return batches[static_cast<std::size_t>(x.batch)].lo > y.event;
    return batches[static_cast<std::size_t>(x.batch)].lo >
           batches[static_cast<std::size_t>(y.batch)].hi;
  };
  std::uint64_t before_predecessor = 0;
  for (std::uint64_t id = 0; id < total; ++id) {
    if (where[id] == -1) continue;
    const auto& m = log[static_cast<std::size_t>(where[id])];
    for (const std::uint64_t p : messages.predecessors(id)) {
      if (where[p] == -1) {
        ++before_predecessor;  // delivered, but its predecessor never was
        continue;
      }
      const auto& d = log[static_cast<std::size_t>(where[p])];
      if (later(d, m)) ++before_predecessor;
    }
  }

  CHECK(twice == 0);
  CHECK(never == 0);
  CHECK(wrong_stamp == 0);
  CHECK(before_predecessor == 0);
  CHECK(refused.load() == 0);
  CHECK(log.size() == total);
  const auto stats = buffer.stats();
  CHECK(stats.delivered == total);
  CHECK(stats.held == 0);
  CHECK(stats.expired == expired_reported);  // every expiry reported exactly once
  CHECK(buffer.missing().empty());
  CHECK(buffer.local() == (clock64{{node_a, messages.per_sender},
                                   {node_b, messages.per_sender},
                                   {node_c, messages.per_sender}}));
}
