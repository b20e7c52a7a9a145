// interlock demo: each race the library exists for, run naively and through
// interlock on the same workload. Prints one table; exits non-zero if any interlock
// row is wrong.
#include "scenario.hpp"

#include <interlock/interlock.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace {

struct widths {
  int scenario = 8;
  int naive = 5;
  int interlock = 9;
};

void print_row(const widths& w, const std::string& scenario, const std::string& naive,
               const std::string& naive_ms, const std::string& interlock,
               const std::string& interlock_ms, const std::string& ok) {
  std::printf("%-*s | %-*s %9s | %-*s %9s | %s\n", w.scenario, scenario.c_str(), w.naive,
              naive.c_str(), naive_ms.c_str(), w.interlock, interlock.c_str(), interlock_ms.c_str(),
              ok.c_str());
}

std::string milliseconds(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", ms);
  return text;
}

}  // namespace

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

  std::vector<demo::row> rows;
  for (const auto& scenario : scenarios) rows.push_back(scenario.run());

  widths w;
  for (const auto& r : rows) {
    w.scenario = std::max(w.scenario, static_cast<int>(r.scenario.size()));
    w.naive = std::max(w.naive, static_cast<int>(r.naive.result.size()));
    w.interlock = std::max(w.interlock, static_cast<int>(r.interlock.result.size()));
  }
  print_row(w, "scenario", "naive", "ms", "interlock", "ms", "interlock ok");
  std::printf(
      "%s\n",
      std::string(static_cast<std::size_t>(w.scenario + w.naive + w.interlock + 44), '-').c_str());
  bool all_correct = true;
  for (const auto& r : rows) {
    all_correct = all_correct && r.interlock_correct;
    print_row(w, r.scenario, r.naive.result, milliseconds(r.naive.milliseconds), r.interlock.result,
              milliseconds(r.interlock.milliseconds), r.interlock_correct ? "yes" : "NO");
  }
  std::printf("\n%s\n",
              all_correct ? "every interlock row is correct" : "FAILED: an interlock row is wrong");
  return all_correct ? 0 : 1;
}
