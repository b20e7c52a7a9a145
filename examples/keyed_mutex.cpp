// keyed_mutex: one lock per key. Signups for an event role run one at a time per
// role (and in parallel across roles); a transfer locks both accounts at once without
// deadlock; fencing tokens let a downstream store reject a stale holder's write.
// tour() is the example that README.md shows (the region between the readme markers).
// Returns 0 when every check holds.
#include <interlock/keyed_mutex.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// A downstream store that accepts a write only with a newer fencing token.
struct report_store {
  std::uint64_t last_token = 0;
  std::vector<std::string> written;
  void write(const std::string& report, std::uint64_t token) {
    if (token <= last_token) return;  // a stale holder: rejected
    last_token = token;
    written.push_back(report);
  }
};

// The README's tour, with the state it touches.
bool tour() {
  using namespace std::chrono_literals;
  std::vector<std::string> signups;
  const std::size_t capacity = 3;
  const std::string user = "ada";
  report_store store;
  const std::string report = "weekly totals";
  const std::string to = "account:bob";
  const std::string from = "account:alice";

  // [readme:keyed_mutex]
  interlock::keyed_mutex<std::string> locks;

  locks.with_lock("signup:42:lead", [&] {  // check-then-insert, safely
    if (signups.size() < capacity) signups.push_back(user);
  });

  if (auto g = locks.try_lock_for("report:7", 50ms)) {  // empty guard on timeout
    store.write(report, g.fencing_token());             // the store rejects older tokens
  }

  auto both = locks.lock_many({to, from});  // any order: no deadlock
  auto view = locks.mutex("a");             // a Lockable, for std::scoped_lock / unique_lock
  std::unique_lock held(view);
  // [/readme:keyed_mutex]

  const bool ok = signups.size() == 1 && store.written.size() == 1 && held.owns_lock() &&
                  locks.size() == 3;  // "account:bob", "account:alice" and "a" are held
  held.unlock();
  both.unlock();
  return ok && locks.size() == 0;
}

}  // namespace

int main() {
  const bool tour_ok = tour();
  std::printf("tour: %s\n", tour_ok ? "ok" : "FAILED");

  interlock::keyed_mutex<std::string> locks;

  // 1. Check-then-insert under the role's lock: never more signups than seats.
  constexpr std::size_t seats = 5;
  std::vector<int> lead_signups;  // guarded by the lock of "signup:42:lead"
  std::vector<std::thread> people;
  for (int person = 0; person < 20; ++person) {
    people.emplace_back([&, person] {
      locks.with_lock("signup:42:lead", [&] {
        if (lead_signups.size() < seats) lead_signups.push_back(person);
      });
    });
  }
  for (auto& t : people) t.join();
  std::printf("signups: %zu of %zu seats\n", lead_signups.size(), seats);

  // 2. A transfer locks both accounts, whichever order they are named in.
  std::map<std::string, long> balance{{"account:alice", 100}, {"account:bob", 50}};
  {
    auto both = locks.lock_many({"account:bob", "account:alice"});
    balance["account:alice"] -= 30;
    balance["account:bob"] += 30;
  }
  std::printf("alice %ld, bob %ld\n", balance["account:alice"], balance["account:bob"]);

  // 3. Fencing tokens: a store accepts a write only with a token above the last one.
  std::uint64_t store_last_token = 0;
  auto write_with_token = [&](std::uint64_t token) {
    if (token <= store_last_token) return false;  // a stale holder: rejected
    store_last_token = token;
    return true;
  };
  std::uint64_t first_token = 0;
  {
    auto g = locks.lock("report:7");
    first_token = g.fencing_token();
    write_with_token(first_token);
  }
  {
    auto g = locks.lock("report:7");  // granted again: a larger token
    write_with_token(g.fencing_token());
  }
  const bool stale_rejected = !write_with_token(first_token);
  std::printf("stale write rejected: %s\n", stale_rejected ? "yes" : "no");
  std::printf("entries left: %zu\n", locks.size());

  const bool ok = tour_ok && lead_signups.size() == seats && balance["account:alice"] == 70 &&
                  balance["account:bob"] == 80 && stale_rejected && locks.size() == 0;
  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
