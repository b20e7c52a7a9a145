// retry_policy and retry_on_conflict: delay sequences per jitter kind (bounds, the
// growth of decorrelated medians), the attempt and elapsed-time bounds, exceptions
// passing through at once. A fake clock advanced by a fake sleep: nothing sleeps.
#include <interlock/retry.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <vector>

namespace {

using namespace std::chrono_literals;
using interlock::backoff_schedule;
using interlock::jitter_kind;
using interlock::retry_policy;
using interlock::retry_status;
using std::chrono::nanoseconds;

/// A clock that moves only when the code under test sleeps (or the test says so).
struct fake_world {
  explicit fake_world(std::uint64_t seed = 42) : engine(seed) {}

  std::chrono::steady_clock::time_point now{};
  std::vector<nanoseconds> sleeps;
  std::mt19937_64 engine;

  interlock::retry_environment environment() {
    return {[this] { return now; },
            [this](nanoseconds d) {
              sleeps.push_back(d);
              now += d;
            },
            [this] { return engine(); }};
  }
};

std::vector<nanoseconds> delays_of(const retry_policy& policy, std::size_t count,
                                   std::uint64_t seed) {
  std::mt19937_64 engine(seed);
  auto random = [&engine] { return engine(); };
  backoff_schedule schedule(policy);
  std::vector<nanoseconds> out;
  for (std::size_t i = 0; i < count; ++i) out.push_back(schedule.next(random));
  return out;
}

retry_policy policy_of(jitter_kind kind, nanoseconds initial, nanoseconds maximum) {
  retry_policy policy;
  policy.initial_delay = initial;
  policy.max_delay = maximum;
  policy.jitter = kind;
  return policy;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

TEST_CASE("no jitter is deterministic exponential backoff capped at max_delay", "[retry]") {
  const auto delays = delays_of(policy_of(jitter_kind::none, 10ms, 100ms), 7, 1);
  const std::vector<nanoseconds> expected{10ms, 20ms, 40ms, 80ms, 100ms, 100ms, 100ms};
  CHECK(delays == expected);

  retry_policy slower = policy_of(jitter_kind::none, 1ms, 1s);
  slower.multiplier = 3.0;
  CHECK(delays_of(slower, 4, 1) == std::vector<nanoseconds>{1ms, 3ms, 9ms, 27ms});
}

TEST_CASE("a multiplier below 1 shrinks the base, also from above max_delay", "[retry]") {
  // base_k = min(max_delay, initial * multiplier^k): 10 s halving under a 1 s cap is
  // capped until it falls below the cap (it used to stay at the cap forever).
  retry_policy shrinking = policy_of(jitter_kind::none, 10s, 1s);
  shrinking.multiplier = 0.5;
  const std::vector<nanoseconds> expected{1s, 1s, 1s, 1s, 625ms, 312500us, 156250us};
  CHECK(delays_of(shrinking, 7, 1) == expected);

  retry_policy below_cap = policy_of(jitter_kind::none, 800ms, 1s);
  below_cap.multiplier = 0.5;
  CHECK(delays_of(below_cap, 3, 1) == std::vector<nanoseconds>{800ms, 400ms, 200ms});
}

TEST_CASE("full and equal jitter stay within their bounds", "[retry]") {
  const nanoseconds initial = 1ms;
  const nanoseconds maximum = 50ms;
  const std::size_t retries = 12;  // reaches the cap after 6 retries
  for (std::uint64_t seed = 1; seed <= 500; ++seed) {
    const auto full = delays_of(policy_of(jitter_kind::full, initial, maximum), retries, seed);
    const auto equal = delays_of(policy_of(jitter_kind::equal, initial, maximum), retries, seed);
    nanoseconds base = initial;
    for (std::size_t k = 0; k < retries; ++k) {
      INFO("seed " << seed << ", retry " << k);
      REQUIRE(full[k] >= 0ns);
      REQUIRE(full[k] <= base);
      REQUIRE(equal[k] >= base / 2);
      REQUIRE(equal[k] <= base);
      base = std::min(base * 2, maximum);
    }
  }
  // Jitter actually spreads: over many seeds, the first full-jitter delay covers both
  // halves of its range.
  std::size_t low = 0;
  std::size_t high = 0;
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    const auto d = delays_of(policy_of(jitter_kind::full, initial, maximum), 1, seed)[0];
    (d < initial / 2 ? low : high) += 1;
  }
  CHECK(low > 50);
  CHECK(high > 50);
}

TEST_CASE("decorrelated jitter (V2): bounded, positive, medians grow", "[retry]") {
  const nanoseconds initial = 1ms;
  const nanoseconds maximum = 10s;  // far above the retries examined, so no capping
  constexpr std::size_t retries = 8;
  constexpr std::uint64_t runs = 2001;
  std::vector<std::vector<double>> by_retry(retries);
  for (std::uint64_t seed = 1; seed <= runs; ++seed) {
    const auto delays =
        delays_of(policy_of(jitter_kind::decorrelated, initial, maximum), retries, seed);
    for (std::size_t k = 0; k < retries; ++k) {
      REQUIRE(delays[k] > 0ns);  // t_k > t_(k-1) and f increases
      REQUIRE(delays[k] <= maximum);
      by_retry[k].push_back(static_cast<double>(delays[k].count()));
    }
  }
  // The median first delay is near initial_delay (the 1/1.4 scaling's purpose).
  const double first = median(by_retry[0]);
  CHECK(first > 0.5 * static_cast<double>(initial.count()));
  CHECK(first < 1.5 * static_cast<double>(initial.count()));
  // Each median is well above the previous one. In theory (medians of 0.90, 1.13,
  // 2.01, 4.01, 8.0, ... times initial_delay) the ratio is 1.26 for the second retry,
  // while tanh still ramps up, and about 2 after; 2001 runs put each sample median
  // within a few percent of its true value.
  for (std::size_t k = 1; k < retries; ++k) {
    INFO("retry " << k);
    CHECK(median(by_retry[k]) > (k == 1 ? 1.1 : 1.6) * median(by_retry[k - 1]));
  }
}

TEST_CASE("delays respect 0 <= delay <= max_delay for odd parameters", "[retry]") {
  for (auto kind :
       {jitter_kind::none, jitter_kind::full, jitter_kind::equal, jitter_kind::decorrelated}) {
    INFO("jitter kind " << static_cast<int>(kind));
    // initial above the cap; many retries (2^t overflows for the decorrelated kind).
    for (nanoseconds d : delays_of(policy_of(kind, 5s, 2s), 1500, 7)) {
      REQUIRE(d >= 0ns);
      REQUIRE(d <= 2s);
    }
    // A zero cap means no delay at all.
    for (nanoseconds d : delays_of(policy_of(kind, 5ms, 0ns), 10, 7)) REQUIRE(d == 0ns);
    // A zero initial delay means retry at once.
    for (nanoseconds d : delays_of(policy_of(kind, 0ns, 1s), 10, 7)) REQUIRE(d == 0ns);
    // A shrinking multiplier.
    retry_policy shrinking = policy_of(kind, 8ms, 1s);
    shrinking.multiplier = 0.5;
    for (nanoseconds d : delays_of(shrinking, 50, 7)) {
      REQUIRE(d >= 0ns);
      REQUIRE(d <= 1s);
    }
  }
}

TEST_CASE("retry_on_conflict retries conflicts and reports attempts and time", "[retry]") {
  fake_world world;
  int calls = 0;
  const auto outcome = interlock::retry_on_conflict(
      policy_of(jitter_kind::none, 1ms, 1s),
      [&]() -> std::optional<int> {
        ++calls;
        if (calls < 4) return std::nullopt;  // three conflicts
        return 7;
      },
      world.environment());
  REQUIRE(outcome);
  CHECK_FALSE(outcome.gave_up());
  CHECK(outcome.status == retry_status::succeeded);
  CHECK(*outcome.result == 7);
  CHECK(outcome.attempts == 4);
  CHECK(calls == 4);
  CHECK(world.sleeps == std::vector<nanoseconds>{1ms, 2ms, 4ms});
  CHECK(outcome.elapsed == 7ms);
}

TEST_CASE("max_attempts is respected", "[retry]") {
  for (std::uint32_t limit : {0U, 1U, 2U, 5U}) {
    INFO("max_attempts " << limit);
    fake_world world;
    retry_policy policy = policy_of(jitter_kind::full, 1ms, 10ms);
    policy.max_attempts = limit;
    int calls = 0;
    const auto outcome = interlock::retry_on_conflict(
        policy,
        [&]() -> std::optional<int> {
          ++calls;
          return std::nullopt;
        },
        world.environment());
    const std::uint32_t expected = limit == 0 ? 1 : limit;  // 0 means one attempt
    CHECK(outcome.gave_up());
    CHECK_FALSE(outcome.result.has_value());
    CHECK(outcome.status == retry_status::out_of_attempts);
    CHECK(outcome.attempts == expected);
    CHECK(calls == static_cast<int>(expected));
    CHECK(world.sleeps.size() == expected - 1);  // no sleep after the last attempt
  }
}

TEST_CASE("the elapsed-time bound stops retries", "[retry]") {
  fake_world world;
  retry_policy policy = policy_of(jitter_kind::none, 10ms, 1s);
  policy.max_elapsed = 100ms;
  int calls = 0;
  const auto outcome = interlock::retry_on_conflict(
      policy,
      [&]() -> std::optional<int> {
        ++calls;
        return std::nullopt;
      },
      world.environment());
  // Sleeps 10 + 20 + 40 = 70 ms; the next delay (80 ms) would end at 150 ms > 100 ms.
  CHECK(outcome.status == retry_status::out_of_time);
  CHECK(outcome.attempts == 4);
  CHECK(calls == 4);
  CHECK(world.sleeps == std::vector<nanoseconds>{10ms, 20ms, 40ms});
  CHECK(outcome.elapsed == 70ms);

  // Time spent inside attempts counts too, from the first conflict on: each attempt
  // takes 30 ms of fake time.
  fake_world slow;
  retry_policy immediate;
  immediate.max_elapsed = 100ms;
  int slow_calls = 0;
  const auto slow_outcome = interlock::retry_on_conflict(
      immediate,
      [&]() -> std::optional<int> {
        ++slow_calls;
        slow.now += 30ms;
        return std::nullopt;
      },
      slow.environment());
  CHECK(slow_outcome.status == retry_status::out_of_time);
  // The first conflict is at 30 ms; retries end 30, 60, 90 and 120 ms after it; at
  // 120 ms no retry starts.
  CHECK(slow_calls == 5);
  CHECK(slow_outcome.attempts == 5);
  CHECK(slow_outcome.elapsed == 120ms);
  CHECK(slow.sleeps.empty());  // zero delays are not slept
}

TEST_CASE("an exception from the attempt passes through at once", "[retry]") {
  fake_world world;
  int calls = 0;
  auto throwing = [&]() -> std::optional<int> {
    ++calls;
    throw std::runtime_error("the store is down");
  };
  CHECK_THROWS_AS(interlock::retry_on_conflict(policy_of(jitter_kind::full, 1ms, 1s), throwing,
                                               world.environment()),
                  std::runtime_error);
  CHECK(calls == 1);
  CHECK(world.sleeps.empty());

  // Also after some conflicts: the exception ends the loop where it happens.
  int later_calls = 0;
  CHECK_THROWS_AS(interlock::retry_on_conflict(
                      policy_of(jitter_kind::none, 1ms, 1s),
                      [&]() -> std::optional<int> {
                        if (++later_calls == 3) throw std::logic_error("bad input");
                        return std::nullopt;
                      },
                      world.environment()),
                  std::logic_error);
  CHECK(later_calls == 3);
}

TEST_CASE("the default policy retries at once, without limit", "[retry]") {
  fake_world world;
  int calls = 0;
  const auto outcome = interlock::retry_on_conflict(
      retry_policy{},
      [&]() -> std::optional<long> {
        if (++calls <= 1000) return std::nullopt;
        return 1000L;
      },
      world.environment());
  REQUIRE(outcome);
  CHECK(outcome.attempts == 1001);
  CHECK(world.sleeps.empty());
  CHECK(outcome.elapsed == 0ns);
}

TEST_CASE("the system environment runs a short real policy", "[retry]") {
  // Microsecond delays, three attempts: only counts are checked, never durations.
  int calls = 0;
  const auto outcome = interlock::retry_on_conflict(
      retry_policy::exponential(1us, 4us, jitter_kind::decorrelated, 3),
      [&]() -> std::optional<int> {
        ++calls;
        return std::nullopt;
      });
  CHECK(outcome.status == retry_status::out_of_attempts);
  CHECK(outcome.attempts == 3);
  CHECK(calls == 3);
}

TEST_CASE("elapsed counts from the first conflict", "[retry]") {
  fake_world world;
  int calls = 0;
  auto slow_attempt = [&](int succeed_on) {
    return [&, succeed_on]() -> std::optional<int> {
      world.now += 5ms;  // every attempt takes 5 ms
      if (++calls < succeed_on) return std::nullopt;
      return calls;
    };
  };
  // Success at once: nothing was retried, no time was spent retrying.
  const auto at_once = interlock::retry_on_conflict(policy_of(jitter_kind::none, 1ms, 1s),
                                                    slow_attempt(1), world.environment());
  CHECK(at_once.attempts == 1);
  CHECK(at_once.elapsed == 0ns);
  // One conflict: the 1 ms delay and the 5 ms second attempt.
  calls = 0;
  const auto once = interlock::retry_on_conflict(policy_of(jitter_kind::none, 1ms, 1s),
                                                 slow_attempt(2), world.environment());
  CHECK(once.attempts == 2);
  CHECK(once.elapsed == 6ms);
}

TEST_CASE("a clock stepping backwards does not break the elapsed-time bound", "[retry]") {
  // An injected clock that steps back made the elapsed time negative, and the bound
  // check max_elapsed - elapsed overflowed (undefined behaviour) for a bound near the
  // top of the range. Elapsed time never goes below zero now.
  std::chrono::steady_clock::time_point now{};
  interlock::retry_environment backwards{[&now] {
                                           const auto t = now;
                                           now -= 10ns;
                                           return t;
                                         },
                                         [](nanoseconds) {}, [] { return std::uint64_t{1}; }};
  retry_policy policy;
  policy.max_elapsed = nanoseconds::max() - 1ns;  // bounded, in effect forever
  policy.max_attempts = 5;
  int calls = 0;
  const auto out = interlock::retry_on_conflict(
      policy,
      [&calls]() -> std::optional<int> {
        ++calls;
        return std::nullopt;
      },
      backwards);
  CHECK(out.status == retry_status::out_of_attempts);
  CHECK(out.attempts == 5);
  CHECK(calls == 5);
  CHECK(out.elapsed == 0ns);
}

TEST_CASE("retry: extreme policies stay within bounds", "[retry]") {
  std::mt19937_64 random(11);
  auto bits = [&random]() -> std::uint64_t { return random(); };
  // max_delay at the top of the range: the cap comes back exactly, never negative.
  for (auto kind : {interlock::jitter_kind::none, interlock::jitter_kind::full,
                    interlock::jitter_kind::equal, interlock::jitter_kind::decorrelated}) {
    interlock::retry_policy policy;
    policy.initial_delay = std::chrono::nanoseconds(1000);
    policy.multiplier = 2;
    policy.max_delay = std::chrono::nanoseconds::max();
    policy.jitter = kind;
    interlock::backoff_schedule schedule(policy);
    bool in_range = true;
    for (int i = 0; i < 2000; ++i) {
      const auto d = schedule.next(bits);
      in_range = in_range && d.count() >= 0 && d <= policy.max_delay;
    }
    CHECK(in_range);
  }
  // A cap that does not round-trip through double is never exceeded.
  interlock::retry_policy big;
  big.initial_delay = std::chrono::nanoseconds(1);
  big.multiplier = 4;
  big.max_delay = std::chrono::nanoseconds((std::int64_t{1} << 62) - 1);
  big.jitter = interlock::jitter_kind::none;
  interlock::backoff_schedule capped(big);
  std::chrono::nanoseconds last{0};
  for (int i = 0; i < 100; ++i) last = capped.next(bits);
  CHECK(last == big.max_delay);
  // An initial delay of 0 means "at once" for every kind, however many retries.
  for (auto kind : {interlock::jitter_kind::none, interlock::jitter_kind::full,
                    interlock::jitter_kind::equal, interlock::jitter_kind::decorrelated}) {
    interlock::retry_policy zero;
    zero.initial_delay = std::chrono::nanoseconds(0);
    zero.multiplier = std::numeric_limits<double>::infinity();
    zero.max_delay = std::chrono::seconds(1);
    zero.jitter = kind;
    interlock::backoff_schedule schedule(zero);
    bool all_zero = true;
    for (int i = 0; i < 3000; ++i) all_zero = all_zero && schedule.next(bits).count() == 0;
    CHECK(all_zero);
  }
}

TEST_CASE("a loop that never conflicts reads no clock and draws no random number", "[retry]") {
  int clock_reads = 0;
  int sleeps = 0;
  int draws = 0;
  const interlock::retry_environment counting{[&] {
                                                ++clock_reads;
                                                return std::chrono::steady_clock::time_point{};
                                              },
                                              [&](nanoseconds) { ++sleeps; },
                                              [&] {
                                                ++draws;
                                                return std::uint64_t{1} << 63;  // half of base
                                              }};
  auto policy = policy_of(jitter_kind::full, 1ms, 1s);
  policy.max_elapsed = 10s;  // a bound: still no clock read before the first conflict
  const auto result = interlock::retry_on_conflict(
      policy, [] { return std::optional<int>(3); }, counting);
  CHECK(result.attempts == 1);
  CHECK(clock_reads == 0);
  CHECK(sleeps == 0);
  CHECK(draws == 0);
  // One conflict: now the loop does read the clock and draws for its jittered delay.
  int calls = 0;
  const auto retried = interlock::retry_on_conflict(
      policy, [&] { return ++calls < 2 ? std::nullopt : std::optional<int>(calls); }, counting);
  CHECK(retried.attempts == 2);
  CHECK(clock_reads > 0);
  CHECK(sleeps == 1);
  CHECK(draws > 0);
}

namespace {
struct int_random_env {
  std::chrono::steady_clock::time_point now() const { return {}; }
  void sleep_for(nanoseconds) const {}
  int random() const { return 4; }  // rand()-like: 31 random bits at most
};
struct uint64_random_env {
  std::chrono::steady_clock::time_point now() const { return {}; }
  void sleep_for(nanoseconds) const {}
  std::uint64_t random() const { return 4; }
};
}  // namespace

TEST_CASE("retry: random sources narrower than 64 bits are rejected at compile time", "[retry]") {
  STATIC_REQUIRE_FALSE(interlock::retry_environment_like<int_random_env>);
  STATIC_REQUIRE(interlock::retry_environment_like<uint64_random_env>);
  STATIC_REQUIRE(interlock::retry_environment_like<interlock::retry_environment>);
  STATIC_REQUIRE_FALSE(interlock::random_bits_source<int (*)()>);
  STATIC_REQUIRE_FALSE(interlock::random_bits_source<std::uint32_t (*)()>);
  STATIC_REQUIRE(interlock::random_bits_source<std::uint64_t (*)()>);
}

TEST_CASE("retry: a 64-bit random type with 32 random bits (std::mt19937) still jitters",
          "[retry]") {
  // std::mt19937's result type is 64 bits wide on LP64, but only its low 32 bits are
  // random. Jitter drawn from one draw's top bits used to be always 0 (full jitter: no
  // delay at all) or always base / 2 (equal jitter).
  std::mt19937 engine(3);
  auto random = [&engine] { return engine(); };
  for (auto kind : {jitter_kind::full, jitter_kind::equal}) {
    backoff_schedule schedule(policy_of(kind, 10ms, 10ms));
    std::size_t low = 0;
    std::size_t high = 0;
    for (int i = 0; i < 400; ++i) {
      const nanoseconds d = schedule.next(random);
      const nanoseconds middle = kind == jitter_kind::full ? 5ms : 7500us;
      (d < middle ? low : high) += 1;
    }
    INFO("kind " << static_cast<int>(kind));
    CHECK(low > 100);
    CHECK(high > 100);
  }
}

TEST_CASE("retry: a clock that throws after a successful attempt does not undo the success",
          "[retry]") {
  // The attempt's effect (a commit) stands: an exception here used to make a caller
  // believe it had failed, and repeat it.
  int reads = 0;
  std::chrono::steady_clock::time_point fake_now{};
  const interlock::retry_environment flaky{[&] {
                                             if (++reads > 1) throw std::runtime_error("clock");
                                             return fake_now;
                                           },
                                           [&](nanoseconds d) { fake_now += d; },
                                           [] { return std::uint64_t{1} << 63; }};
  int calls = 0;
  const auto out = interlock::retry_on_conflict(
      policy_of(jitter_kind::none, 2ms, 1s),
      [&] { return ++calls < 3 ? std::nullopt : std::optional<int>(calls); }, flaky);
  CHECK(out.status == retry_status::succeeded);
  CHECK(out.result == std::optional<int>(3));
  CHECK(out.attempts == 3);
  CHECK(out.elapsed == 6ms);  // the time slept: 2 ms + 4 ms
}
