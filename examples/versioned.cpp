// versioned<T> and retry_policy: optimistic concurrency with version numbers.
// Four workers add to one account's balance through update(); a stale write is
// refused with the current state; an optimistic read is validated. Returns 0 when
// every check holds. tour() is the example that README.md shows (the region between
// the readme markers): two tabs edit one profile.
#include <interlock/retry.hpp>
#include <interlock/versioned.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

struct account {
  std::string owner;
  std::int64_t balance_cents = 0;
};

namespace {

struct profile {
  std::string name;
  std::string email;
  std::uint64_t visits = 0;
};

profile renamed(profile p) {  // what the other tab saves
  p.name = "Ada Lovelace";
  return p;
}

profile edited(profile p) {  // what this tab saves
  p.email = "ada@example.org";
  return p;
}

profile merge(const profile& current, const profile& mine) {  // keep theirs, add mine
  profile merged = current;
  merged.email = mine.email;
  return merged;
}

profile with_visit(profile p) {
  ++p.visits;
  return p;
}

bool tour() {
  using namespace std::chrono_literals;
  const profile initial{"Ada", "ada@example.com", 0};

  // [readme:versioned]
  interlock::versioned<profile> record{initial};  // version 1

  auto tab = record.read();                                         // {value, version}
  auto other = record.try_commit(tab.version, renamed(tab.value));  // another tab saves first
  auto r = record.try_commit(tab.version, edited(tab.value));
  if (!r.committed) {  // someone saved first: r.current is what is there now,
    auto merged = merge(*r.current, edited(tab.value));  // r.version its version
    r = record.try_commit(r.version, merged);
  }

  // The loop, with retries under a policy (default: at once, without limit):
  auto policy = interlock::retry_policy::exponential(1us, 1ms, interlock::jitter_kind::full);
  auto u = record.update([](const profile& p) { return with_visit(p); }, policy);

  // Optimistic read (StampedLock style): compute from a snapshot, then check it.
  auto s = record.read();
  bool still_current = record.validate(s.version);  // false if a commit came in between
  // [/readme:versioned]

  const bool ok = other.committed && r.committed && r.version == 3 && u.committed() &&
                  s.version == 4 && s.value.name == "Ada Lovelace" &&
                  s.value.email == "ada@example.org" && s.value.visits == 1 && still_current;
  std::printf("tour: %s at version %llu, %s\n", s.value.name.c_str(),
              static_cast<unsigned long long>(s.version), ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  const bool tour_ok = tour();

  interlock::versioned<account> acct{account{"ada", 0}};  // version 1

  // Concurrent deposits: conflicts are retried with exponential backoff and full jitter.
  const auto policy =
      interlock::retry_policy::exponential(1us, 100us, interlock::jitter_kind::full);
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        auto result = acct.update(
            [](const account& a) {
              account next = a;
              next.balance_cents += 100;
              return next;
            },
            policy);
        if (!result.committed()) std::abort();  // an unbounded policy never gives up
      }
    });
  }
  for (auto& worker : workers) worker.join();

  const auto now = acct.read();
  std::printf("%s has %lld cents at version %llu\n", now.value.owner.c_str(),
              static_cast<long long>(now.value.balance_cents),
              static_cast<unsigned long long>(now.version));
  bool ok = tour_ok && now.value.balance_cents == 4000 * 100 && now.version == 1 + 4000;

  // A write based on an old version is refused, and the refusal carries the present.
  auto stale = acct.try_commit(1, account{"mallory", 0});
  ok = ok && !stale.committed && stale.version == now.version &&
       stale.current->balance_cents == now.value.balance_cents;
  std::printf("stale write refused: %s (current version %llu)\n", stale.committed ? "no" : "yes",
              static_cast<unsigned long long>(stale.version));

  // Optimistic read: compute from a snapshot, then check it is still current.
  const auto seen = acct.read();
  const std::int64_t fee = seen.value.balance_cents / 100;
  ok = ok && acct.validate(seen.version) && fee == 4000;

  std::printf("%s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
