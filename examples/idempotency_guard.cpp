// idempotency_guard: a payment handler that charges once per idempotency key.
//
// Two copies of one request arrive at once (a client retried on timeout): the guard runs
// the charge once and both copies get the same receipt. A later retry replays it. The
// same key with a different amount is a mismatch and charges nothing. unique_claims
// spends each nullifier (a one-time token) exactly once. handle_charge and spend are
// the example that README.md shows (the region between the readme markers).
//
// Exits 0 when everything happened as expected, 1 otherwise.
#include <interlock/idempotency_guard.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

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

namespace {

// The card network: counts the charges it makes. While `hold` is set, a charge waits
// until `release` is set and then takes 50 ms, so a retry can arrive meanwhile.
struct payment_provider {
  std::atomic<std::uint64_t> charges{0};
  std::atomic<bool> hold{false};
  std::atomic<bool> in_flight{false};
  std::atomic<bool> release{false};

  receipt charge(const charge_request& request) {
    in_flight.store(true);
    if (hold.load()) {
      while (!release.load()) std::this_thread::yield();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return receipt{charges.fetch_add(1) + 1, request.amount_cents};
  }
};

struct response {
  int http_status = 0;
  std::shared_ptr<const receipt> body;
};

payment_provider provider;

// [readme:idempotency_guard]
interlock::idempotency_guard<std::string, receipt> guard;  // 24 h retention by default

response handle_charge(const std::string& idempotency_key, const charge_request& request) {
  auto out = guard.run(idempotency_key, request, [&] { return provider.charge(request); });
  switch (out.status) {
    case interlock::run_status::executed:     // this call charged
    case interlock::run_status::joined:       // waited for the charge in flight
    case interlock::run_status::replayed:     // a retry: the stored receipt
      return {200, out.result};               // the same shared object for every caller
    case interlock::run_status::mismatch:     // same key, different request: nothing ran
    case interlock::run_status::in_progress:  // run_for timed out, or the reject policy
      break;
  }
  return {409, nullptr};  // Conflict
}

interlock::unique_claims<std::string> spent;

bool spend(const std::string& nullifier, const std::string& wallet_id) {
  return spent.try_claim(nullifier, wallet_id);  // true for exactly one caller
}
// [/readme:idempotency_guard]

}  // namespace

int main() {
  const charge_request request{"4242-4242", 1999};

  // The first attempt is in flight when the client's retry arrives.
  provider.hold.store(true);
  response first;
  response second;
  std::thread a([&] { first = handle_charge("order-1001", request); });
  while (!provider.in_flight.load()) std::this_thread::yield();
  std::thread b([&] {
    provider.release.store(true);
    second = handle_charge("order-1001", request);
  });
  a.join();
  b.join();
  provider.hold.store(false);

  const response later = handle_charge("order-1001", request);  // replayed
  const response tampered =
      handle_charge("order-1001", charge_request{"4242-4242", 5});  // mismatch: 409

  const auto stats = guard.stats();
  std::printf("charges: %llu; executed %llu, joined %llu, replayed %llu, mismatches %llu\n",
              static_cast<unsigned long long>(provider.charges.load()),
              static_cast<unsigned long long>(stats.executed),
              static_cast<unsigned long long>(stats.joined),
              static_cast<unsigned long long>(stats.replayed),
              static_cast<unsigned long long>(stats.mismatches));
  std::printf("first %d, second %d, later %d, tampered %d\n", first.http_status, second.http_status,
              later.http_status, tampered.http_status);
  const bool once = provider.charges.load() == 1 && first.http_status == 200 &&
                    second.http_status == 200 && later.http_status == 200 &&
                    first.body != nullptr && first.body == second.body &&
                    later.body == first.body && first.body->amount_cents == 1999 &&
                    tampered.http_status == 409 && tampered.body == nullptr;
  // The retry usually joins the charge in flight; if it is scheduled only after the
  // charge finished, it replays it instead. Either way the card is charged once.
  const bool counted =
      stats.executed == 1 && stats.joined + stats.replayed == 2 && stats.mismatches == 1;

  // unique_claims: a nullifier can be spent once.
  const bool spend_ok = spend("nullifier:ab12", "wallet-7");
  const bool double_spend = spend("nullifier:ab12", "wallet-9");
  const auto owner = spent.owner_of("nullifier:ab12");
  std::printf("spend: %s, double spend: %s, owner: %s\n", spend_ok ? "granted" : "refused",
              double_spend ? "granted" : "refused", owner ? owner->c_str() : "(none)");

  const bool ok = once && counted && spend_ok && !double_spend && owner == std::string("wallet-7");
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
