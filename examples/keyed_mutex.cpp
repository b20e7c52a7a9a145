// keyed_mutex: one lock per key. Signups for an event role run one at a time per
// role (and in parallel across roles); a transfer locks both accounts at once without
// deadlock; fencing tokens let a downstream store reject a stale holder's write.
#include <interlock/keyed_mutex.hpp>

#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <vector>

int main() {
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

  const bool ok = lead_signups.size() == seats && balance["account:alice"] == 70 &&
                  balance["account:bob"] == 80 && stale_rejected && locks.size() == 0;
  return ok ? 0 : 1;
}
