// Retried payments (16 clients, one payment each): a client sends a charge, times out because the
// payment takes longer than its timeout, and retries while the first attempt is still in flight;
// then its connection drops the response and it retries once more after everything finished. The
// naive server charges every attempt. With idempotency_guard, keyed by the client's idempotency
// key, the first attempt charges, the retries in flight join it and the late retry replays the
// stored receipt: one charge per payment.
#include "scenario.hpp"

#include <interlock/idempotency_guard.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

constexpr int payments = 16;            // clients paying at the same time
constexpr auto processing_time = 60ms;  // what the payment provider takes
constexpr auto client_timeout = 20ms;   // what the client waits before retrying
constexpr int attempts_on_timeout = 3;  // attempts while waiting for an answer

struct receipt {
  std::uint64_t charge_id = 0;
  std::uint64_t amount_cents = 0;
};

/// The payment provider: every call is a real charge.
class provider {
 public:
  receipt charge(std::uint64_t amount_cents) {
    std::this_thread::sleep_for(processing_time);
    return receipt{charges_.fetch_add(1) + 1, amount_cents};
  }
  [[nodiscard]] std::uint64_t charges() const { return charges_.load(); }

 private:
  std::atomic<std::uint64_t> charges_{0};
};

/// One client: sends, retries on timeout while earlier attempts are in flight, then
/// retries once more after a lost response. Returns how many distinct receipts it got.
int pay_with_retries(const std::function<receipt()>& send) {
  std::vector<std::future<receipt>> attempts;
  for (int attempt = 0; attempt < attempts_on_timeout; ++attempt) {
    attempts.push_back(std::async(std::launch::async, send));
    if (attempts.back().wait_for(client_timeout) == std::future_status::ready) break;
  }
  std::vector<std::uint64_t> receipts;
  for (auto& attempt : attempts) receipts.push_back(attempt.get().charge_id);
  receipts.push_back(send().charge_id);  // the response was lost: one more retry
  int distinct = 0;
  for (std::size_t i = 0; i < receipts.size(); ++i) {
    bool seen = false;
    for (std::size_t j = 0; j < i; ++j) seen = seen || receipts[j] == receipts[i];
    if (!seen) ++distinct;
  }
  return distinct;
}

struct run_result {
  std::uint64_t charges = 0;
  int clients_with_one_receipt = 0;
};

template <class Send>
run_result run_clients(provider& p, Send send) {
  std::atomic<int> consistent{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < payments; ++c) {
    clients.emplace_back([&, c] {
      const std::string key = "payment:" + std::to_string(9000 + c);
      const std::uint64_t amount = 1000 + static_cast<std::uint64_t>(c);
      if (pay_with_retries([&] { return send(key, amount); }) == 1) consistent.fetch_add(1);
    });
  }
  for (auto& client : clients) client.join();
  return run_result{p.charges(), consistent.load()};
}

run_result naive_run() {
  provider p;
  return run_clients(p,
                     [&p](const std::string&, std::uint64_t amount) { return p.charge(amount); });
}

run_result interlock_run() {
  provider p;
  interlock::idempotency_guard<std::string, receipt> guard;
  return run_clients(p, [&](const std::string& key, std::uint64_t amount) {
    // The request (amount and key) is fingerprinted: a retry with another amount would
    // be a mismatch, not a second charge.
    auto out = guard.run(key, std::pair{key, amount}, [&] { return p.charge(amount); });
    return out.has_result() ? *out : receipt{};
  });
}

std::string charges_text(const run_result& r) {
  const std::uint64_t duplicated = r.charges > payments ? r.charges - payments : 0;
  return std::to_string(r.charges) + " charges, " + std::to_string(duplicated) + " duplicated";
}

}  // namespace

static demo::registration reg{30, [] {
                                demo::row row;
                                row.scenario = "retried payment";
                                const auto [naive, naive_ms] = demo::timed(naive_run);
                                const auto [guarded, interlock_ms] = demo::timed(interlock_run);
                                row.naive = {charges_text(naive), naive_ms};
                                row.interlock = {charges_text(guarded), interlock_ms};
                                row.interlock_correct =
                                    guarded.charges == payments &&
                                    guarded.clients_with_one_receipt == payments;
                                return row;
                              }};
