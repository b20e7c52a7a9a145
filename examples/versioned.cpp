// versioned<T> and retry_policy: optimistic concurrency with version numbers.
// Four workers add to one account's balance through update(); a stale write is
// refused with the current state; an optimistic read is validated. Returns 0 when
// every check holds.
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

int main() {
  using namespace std::chrono_literals;
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
  bool ok = now.value.balance_cents == 4000 * 100 && now.version == 1 + 4000;

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
