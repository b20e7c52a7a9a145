// Clocks and causal delivery in one short program: two replicas edit a shared list,
// detect a conflict with vector clocks, and a third replica receives their messages
// out of order and applies them in causal order. Returns 0 when everything checks.
// tour() is the example that README.md shows (the region between the readme markers).
#include <interlock/causal_buffer.hpp>
#include <interlock/hybrid_clock.hpp>
#include <interlock/vector_clock.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

bool tour() {
  interlock::hybrid_clock peer;  // another node's clock
  const interlock::hlc_timestamp remote_stamp = peer.now();

  // [readme:clocks]
  interlock::vector_clock<std::string> a, b;
  a.tick("alice");
  b.tick("bob");
  if (a.concurrent_with(b)) a.merge(b).tick("alice");  // resolve, then record the merge

  auto bytes = a.encode_binary();  // or a.to_string(): {alice:2,bob:1}
  auto back = interlock::vector_clock<std::string>::decode_binary(bytes);
  if (!back) std::cerr << interlock::to_string(back.error()) << '\n';

  interlock::hybrid_clock hlc;  // coarse wall clock, 500 ms max offset
  auto stamp = hlc.now();       // strictly increasing
  if (auto t = hlc.update(remote_stamp); !t) {
    // remote_stamp is more than 500 ms ahead of this clock: rejected, clock unchanged
  }
  // [/readme:clocks]

  const bool ok = a.to_string() == "{alice:2,bob:1}" && back && *back == a && a.descends(b) &&
                  hlc.now() > stamp && hlc.last() >= remote_stamp;
  std::printf("tour: %s, %s\n", a.to_string().c_str(), ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main() {
  const bool tour_ok = tour();

  using clock = interlock::vector_clock<std::string>;

  // Conflict detection: alice and bob both edit after seeing version v1.
  clock v1;
  v1.tick("alice");
  clock from_alice = v1;
  from_alice.tick("alice");
  clock from_bob = v1;
  from_bob.tick("bob");
  const bool conflict = from_alice.concurrent_with(from_bob);
  clock resolved = from_alice;
  resolved.merge(from_bob).tick("alice");  // a merge that saw both
  std::printf("alice %s, bob %s: %s; resolved %s\n", from_alice.to_string().c_str(),
              from_bob.to_string().c_str(), conflict ? "concurrent" : "ordered",
              resolved.to_string().c_str());

  // Causal delivery: carol receives bob's reply before alice's post.
  interlock::causal_buffer<std::string, std::string> alice, bob, carol;
  const clock post = alice.stamp_send("alice");
  (void)bob.offer("alice", post, "post");
  const clock reply = bob.stamp_send("bob");

  std::vector<std::string> shown;
  auto show = [&shown](auto&& d) { shown.push_back(d.message); };
  const auto first = carol.offer("bob", reply, "reply", show);
  for (const auto& m : carol.missing())
    std::printf("carol holds the reply: %s\n", m.to_string().c_str());
  carol.offer("alice", post, "post", show);
  std::printf("carol shows:");
  for (const auto& m : shown) std::printf(" %s", m.c_str());
  std::printf("\n");

  // Hybrid logical time for the log lines, merged with a remote stamp.
  interlock::hybrid_clock hlc;
  const interlock::hlc_timestamp local = hlc.now();
  const auto received = hlc.update(local);
  std::printf("hlc: %llu.%llu then %llu.%llu\n", static_cast<unsigned long long>(local.physical()),
              static_cast<unsigned long long>(local.logical()),
              static_cast<unsigned long long>(received ? received->physical() : 0),
              static_cast<unsigned long long>(received ? received->logical() : 0));

  const bool ok = tour_ok && conflict && resolved.descends(from_alice) &&
                  resolved.descends(from_bob) && first.status == interlock::offer_status::held &&
                  shown == std::vector<std::string>{"post", "reply"} && received &&
                  *received > local;
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
