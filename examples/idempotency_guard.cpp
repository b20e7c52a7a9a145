// idempotency_guard: a payment handler that charges once per idempotency key.
//
// Two copies of one request arrive at once (a client retried on timeout): the guard runs
// the charge once and both copies get the same receipt. A later retry replays it. The
// same key with a different amount is a mismatch and charges nothing. unique_claims
// spends each nullifier (a one-time token) exactly once.
//
// Exits 0 when everything happened as expected, 1 otherwise.
#include <interlock/idempotency_guard.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>

namespace {

struct charge_request {
  std::string card;
  std::uint64_t amount_cents = 0;
};

struct receipt {
  std::uint64_t charge_id = 0;
  std::uint64_t amount_cents = 0;
};

}  // namespace

// Which bytes identify a request: its fingerprint is the SHA-256 of these.
template <>
struct interlock::content_codec<charge_request> {
  template <interlock::byte_sink Sink>
  static void encode(const charge_request& r, Sink& sink) {
    interlock::encode_field(sink, r.card);
    interlock::encode_field(sink, r.amount_cents);
  }
};

int main() {
  using interlock::run_status;
  std::atomic<std::uint64_t> charges{0};
  interlock::idempotency_guard<std::string, receipt> guard;

  std::atomic<bool> in_flight{false};
  std::atomic<bool> retry_sent{false};
  auto handle = [&](const std::string& idempotency_key, const charge_request& request) {
    return guard.run(idempotency_key, request, [&] {
      in_flight.store(true);
      while (!retry_sent.load()) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the card network
      return receipt{charges.fetch_add(1) + 1, request.amount_cents};
    });
  };

  const charge_request request{"4242-4242", 1999};
  interlock::run_outcome<receipt> first;
  interlock::run_outcome<receipt> second;
  std::thread a([&] { first = handle("order-1001", request); });
  while (!in_flight.load()) std::this_thread::yield();
  std::thread b([&] {  // the client's retry, while the first attempt is in flight
    retry_sent.store(true);
    second = handle("order-1001", request);
  });
  a.join();
  b.join();
  const auto later = handle("order-1001", request);                            // replayed
  const auto tampered = handle("order-1001", charge_request{"4242-4242", 5});  // mismatch

  std::printf("first: %s, second: %s, later: %s, tampered: %s\n",
              first.status == run_status::executed ? "executed" : "?",
              second.status == run_status::joined ? "joined" : "?",
              later.status == run_status::replayed ? "replayed" : "?",
              tampered.status == run_status::mismatch ? "mismatch" : "?");
  const bool once = charges.load() == 1 && first.result == second.result &&
                    later.result == first.result && !tampered.has_result() &&
                    first->amount_cents == 1999;
  const auto stats = guard.stats();
  std::printf("charges: %llu; executed %llu, joined %llu, replayed %llu, mismatches %llu\n",
              static_cast<unsigned long long>(charges.load()),
              static_cast<unsigned long long>(stats.executed),
              static_cast<unsigned long long>(stats.joined),
              static_cast<unsigned long long>(stats.replayed),
              static_cast<unsigned long long>(stats.mismatches));

  // unique_claims: a nullifier can be spent once.
  interlock::unique_claims<std::string> spent;
  const bool spend = spent.try_claim(std::string("nullifier:ab12"), std::string("wallet-7"));
  const bool double_spend = spent.try_claim(std::string("nullifier:ab12"), std::string("wallet-9"));
  const auto owner = spent.owner_of("nullifier:ab12");
  std::printf("spend: %s, double spend: %s, owner: %s\n", spend ? "granted" : "refused",
              double_spend ? "granted" : "refused", owner ? owner->c_str() : "(none)");

  const bool ok = once && first.status == run_status::executed &&
                  second.status == run_status::joined && later.status == run_status::replayed &&
                  tampered.status == run_status::mismatch && spend && !double_spend &&
                  owner == std::string("wallet-7");
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
