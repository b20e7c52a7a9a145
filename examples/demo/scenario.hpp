// The demo's scenario registry: each race scenario is one .cpp file in this folder
// that registers a function returning one row of the demo's table.
#ifndef INTERLOCK_DEMO_SCENARIO_HPP
#define INTERLOCK_DEMO_SCENARIO_HPP

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace demo {

/// One side (naive or interlock) of a scenario: what it got, how long it took.
struct outcome {
  std::string result;  // e.g. "812 of 800000 updates lost"
  double milliseconds = 0;
};

struct row {
  std::string scenario;
  outcome naive;
  outcome interlock;
  bool interlock_correct = false;  // the demo exits non-zero when any row is false
};

struct scenario {
  int order;  // rows print in this order
  std::function<row()> run;
};

inline std::vector<scenario>& registry() {
  static std::vector<scenario> scenarios;
  return scenarios;
}

struct registration {
  registration(int order, std::function<row()> run) {
    registry().push_back({order, std::move(run)});
  }
};

/// Runs fn and returns its result with the elapsed wall time in milliseconds.
template <class Fn>
auto timed(Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  auto result = std::forward<Fn>(fn)();
  const std::chrono::duration<double, std::milli> elapsed =
      std::chrono::steady_clock::now() - start;
  return std::pair{std::move(result), elapsed.count()};
}

}  // namespace demo

#endif
