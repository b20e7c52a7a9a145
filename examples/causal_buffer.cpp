// causal_buffer: a node applies the messages it receives in causal order.
//
// Alice posts, Bob replies to the post, and this node's inbox receives the reply
// first: the buffer holds it, says what it waits for, and delivers both, post first,
// when the post arrives. A duplicate is dropped. tour() is the example that README.md
// shows (the region between the readme markers).
//
// Exits 0 when everything happened as expected, 1 otherwise.
#include <interlock/causal_buffer.hpp>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace {

using clock_type = interlock::vector_clock<std::string>;

bool tour() {
  // Alice posts; Bob receives the post and replies.
  interlock::causal_buffer<std::string, std::string> alice, bob;
  const clock_type post = alice.stamp_send("alice");
  (void)bob.offer("alice", post, "post");
  const clock_type reply = bob.stamp_send("bob");

  std::vector<std::pair<std::string, std::string>> applied;  // (sender, message)
  std::vector<std::string> notes;
  auto apply = [&](const std::string& from, const std::string& message) {
    applied.emplace_back(from, message);
  };
  auto note = [&](std::string line) { notes.push_back(std::move(line)); };

  // The reply reaches this node first.
  std::string sender = "bob";
  clock_type clock = reply;
  std::string text = "reply";

  // [readme:causal_buffer]
  interlock::causal_buffer<std::string, std::string> inbox;
  auto stamp = inbox.stamp_send("me");  // stamp what this node sends

  auto r = inbox.offer(sender, clock, text, [&](auto&& d) { apply(d.sender, d.message); });
  if (r.status == interlock::offer_status::held)
    for (const auto& m : inbox.missing()) note(m.to_string());  // "needs message 1 from node alice"
  // [/readme:causal_buffer]

  for (const auto& line : notes) std::printf("held the reply: %s\n", line.c_str());
  const bool held_first = r.status == interlock::offer_status::held && applied.empty() &&
                          notes == std::vector<std::string>{"needs message 1 from node alice"};

  // The post arrives: the post, then the held reply, are applied.
  const auto second =
      inbox.offer("alice", post, "post", [&](auto&& d) { apply(d.sender, d.message); });
  // A retransmitted duplicate is dropped.
  const auto again =
      inbox.offer("alice", post, "post", [&](auto&& d) { apply(d.sender, d.message); });
  std::printf("applied:");
  for (const auto& [from, message] : applied)
    std::printf(" %s from %s;", message.c_str(), from.c_str());
  std::printf("\n");

  const bool in_order =
      second.delivered_count == 2 && applied == std::vector<std::pair<std::string, std::string>>{
                                                    {"alice", "post"}, {"bob", "reply"}};
  const bool duplicate_dropped = again.delivered_count == 0 && applied.size() == 2 &&
                                 again.status == interlock::offer_status::duplicate;
  const bool stamped = stamp.get("me") == 1 && inbox.missing().empty();
  return held_first && in_order && duplicate_dropped && stamped;
}

}  // namespace

int main() {
  const bool ok = tour();
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
