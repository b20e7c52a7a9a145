// interlock demo: each race the library exists for, run naively and through
// interlock on the same workload. Prints one table; exits non-zero if any interlock
// row is wrong.
#include "scenario.hpp"

#include <interlock/interlock.hpp>

#include <algorithm>
#include <cstdio>
#include <string>

int main() {
  std::printf("interlock %s demo\n", interlock::version_string());
  std::printf("sha256(\"interlock\") = %s\n\n",
              interlock::sha256_digest("interlock").to_hex().c_str());

  auto scenarios = demo::registry();
  std::sort(scenarios.begin(), scenarios.end(),
            [](const auto& a, const auto& b) { return a.order < b.order; });
  if (scenarios.empty()) {
    std::printf("(no race scenarios registered)\n");
    return 0;
  }

  std::printf("%-26s | %-36s %9s | %-30s %9s | %s\n", "scenario", "naive", "ms", "interlock",
              "ms", "interlock ok");
  std::printf("%s\n", std::string(134, '-').c_str());
  bool all_correct = true;
  for (const auto& scenario : scenarios) {
    const demo::row r = scenario.run();
    all_correct = all_correct && r.interlock_correct;
    std::printf("%-26s | %-36s %9.1f | %-30s %9.1f | %s\n", r.scenario.c_str(),
                r.naive.result.c_str(), r.naive.milliseconds, r.interlock.result.c_str(),
                r.interlock.milliseconds, r.interlock_correct ? "yes" : "NO");
  }
  std::printf("\n%s\n", all_correct ? "every interlock row is correct"
                                    : "FAILED: an interlock row is wrong");
  return all_correct ? 0 : 1;
}
