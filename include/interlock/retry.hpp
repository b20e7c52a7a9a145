// interlock/retry.hpp: retry policies (exponential backoff with jitter) and the
// retry-on-conflict loop.
//
// Design note. Optimistic concurrency turns a lost update into a detected conflict;
// the caller then reads again and retries. `retry_policy` says how often and how
// patiently: a maximum number of attempts, a delay before each retry that starts at
// `initial_delay` and grows by `multiplier` up to `max_delay`, a jitter kind that
// spreads competing retriers apart, and a bound on the total elapsed time.
// `retry_on_conflict(policy, attempt)` is the one loop that applies it, for any store
// that reports conflicts: versioned<T>::update uses it, and so can a database row
// with a version column (`UPDATE ... WHERE version = $1` affecting zero rows is a
// conflict).
//
// The attempt protocol: `attempt()` returns `std::optional<R>`. An engaged optional is
// the result and ends the loop; an empty one means "conflict, try again". Only
// conflicts are retried: an exception thrown by `attempt` passes through at once,
// without a delay and without another attempt. (An R that can itself say "declined"
// or "failed" ends the loop too: only an empty optional is retried.)
//
// Time and chance are injectable: the loop takes an environment with `now()`,
// `sleep_for(d)` and `random()` (64 uniformly distributed bits). The default,
// `system_retry_environment`, uses std::chrono::steady_clock,
// std::this_thread::sleep_for and a per-thread std::mt19937_64 seeded from
// std::random_device; `retry_environment` holds three std::function's for tests and
// for callers with their own clock (a fake clock advanced by a fake sleep makes a
// test of a ten-second policy run in microseconds).
//
// Delays (k = 0 for the delay before the second attempt, 1 before the third, ...),
// with base_k = min(max_delay, initial_delay * multiplier^k):
//   none          base_k (deterministic exponential backoff)
//   full          uniform in [0, base_k]
//   equal         base_k / 2 + uniform in [0, base_k / 2]
//   decorrelated  the corrected "decorrelated jitter V2" of Polly.Contrib.WaitAndRetry
//                 (DecorrelatedJitterBackoffV2): with t_k = k + u_k, u_k uniform in
//                 [0, 1), f(t) = 2^t * tanh(sqrt(4 t)) and f(t_-1) = 0, the delay is
//                 (f(t_k) - f(t_k-1)) / 1.4 * initial_delay, capped at max_delay.
//                 The base is always 2 (`multiplier` is not used): the constants 4 and
//                 1/1.4 are tuned for it so that the median first delay is close to
//                 initial_delay. Why its medians grow: t_k lies in [k, k + 1) and f is
//                 increasing, so every delay is positive, and since f(t) ~ 2^t for
//                 t >= 1 the k-th delay is about 2^k * (2^u_k - 2^(u_k-1 - 1)), i.e. its
//                 median doubles from one retry to the next, as with plain exponential
//                 backoff, while consecutive delays stay decorrelated. (The earlier
//                 "decorrelated jitter", sleep = uniform(base, 3 * previous sleep), can
//                 fall back to `base` at any step: its per-attempt medians stall.)
// Every delay satisfies 0 <= delay <= max(max_delay, 0), whatever the parameters (a
// non-finite intermediate is capped at max_delay; a max_delay <= 0 means no delay).
//
// Time is counted from the first conflict: `elapsed` (reported) and `max_elapsed`
// (the bound) measure the time spent retrying, i.e. from the end of the first attempt
// to the end of the loop, and a loop whose first attempt succeeds reports zero. The
// retry policy governs retries; the first attempt is what the caller would have made
// anyway, and a loop that never conflicts never reads the clock (an in-process
// versioned<T>::update that commits at once costs no clock reads). Before each retry
// the loop checks the time spent so far: a retry whose delay would end after
// `max_elapsed` is not made, so no retry is scheduled to start after the bound (a
// sleep that oversleeps may still start one a little late, and the last attempt may
// run past it).
//
// Thread-safety: retry_policy is a plain value; retry_on_conflict holds no shared
// state (the default environment's random engine is per thread).
#ifndef INTERLOCK_RETRY_HPP
#define INTERLOCK_RETRY_HPP

#include <interlock/config.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <thread>
#include <type_traits>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN

/// How delays are randomized. See the header's design note for the formulas.
enum class jitter_kind { none, full, equal, decorrelated };

/// How often and how patiently to retry after a conflict. A plain value type.
///
/// A default-constructed policy retries at once, without a delay, without a limit on
/// attempts or time: right for an in-process versioned<T>, where every conflict means
/// another writer committed (so the system as a whole always progresses), wrong for a
/// remote store, where `exponential(...)` (or your own bounds) belongs.
struct retry_policy {
  /// max_attempts meaning "no limit".
  static constexpr std::uint32_t unlimited_attempts = std::numeric_limits<std::uint32_t>::max();
  /// max_elapsed meaning "no limit".
  static constexpr std::chrono::nanoseconds unlimited_time = std::chrono::nanoseconds::max();

  /// Attempts in all, the first included (1: never retry). 0 is treated as 1.
  std::uint32_t max_attempts = unlimited_attempts;
  /// The base delay before the first retry (0: retry at once).
  std::chrono::nanoseconds initial_delay{0};
  /// Growth of the base delay per retry (none, full, equal). Values below 1 shrink it.
  double multiplier = 2.0;
  /// Upper bound of every delay.
  std::chrono::nanoseconds max_delay = std::chrono::seconds(1);
  /// How delays are randomized.
  jitter_kind jitter = jitter_kind::none;
  /// Bound on the time spent retrying (from the first conflict): no retry starts after it.
  std::chrono::nanoseconds max_elapsed = unlimited_time;

  /// The default: retry at once, without limits.
  static constexpr retry_policy immediate() noexcept { return retry_policy{}; }

  /// Exponential backoff with jitter (full jitter unless told otherwise).
  static constexpr retry_policy exponential(
      std::chrono::nanoseconds initial, std::chrono::nanoseconds maximum,
      jitter_kind kind = jitter_kind::full, std::uint32_t attempts = unlimited_attempts,
      std::chrono::nanoseconds elapsed = unlimited_time) noexcept {
    retry_policy policy;
    policy.max_attempts = attempts;
    policy.initial_delay = initial;
    policy.max_delay = maximum;
    policy.jitter = kind;
    policy.max_elapsed = elapsed;
    return policy;
  }
};

/// A source of random bits: a callable returning a 64-bit unsigned integer. A
/// narrower type (int from rand(), a uint32_t) is rejected: its top bits would always
/// be 0, and jitter drawn from them would be no jitter at all. A 64-bit type carrying
/// only 32 random bits (std::mt19937's result on LP64) is fine: see
/// backoff_schedule::unit.
template <class Random>
concept random_bits_source = std::invocable<Random&> &&
                             std::unsigned_integral<std::invoke_result_t<Random&>> &&
                             sizeof(std::invoke_result_t<Random&>) == sizeof(std::uint64_t);

/// The delays of one retry loop, in order. Not thread-safe (one per loop).
/// next(random) takes a random_bits_source, called only by the jitter kinds that need
/// it (twice per delay).
class backoff_schedule {
 public:
  explicit backoff_schedule(const retry_policy& policy) noexcept
      : policy_(policy), base_(to_double(policy.initial_delay)) {}

  /// The delay before the next retry. Always within [0, policy.max_delay].
  /// Complexity O(1); never throws unless `random` does.
  template <random_bits_source Random>
  std::chrono::nanoseconds next(Random& random) {
    const double cap = to_double(policy_.max_delay);
    if (!(cap > 0)) return std::chrono::nanoseconds{0};
    if (retry_ < std::numeric_limits<std::uint32_t>::max()) ++retry_;  // saturates
    // An initial delay of 0 means "retry at once" for every kind (0 times an
    // overflowing growth term would otherwise be NaN, which clamps to the cap).
    if (policy_.initial_delay <= std::chrono::nanoseconds::zero()) {
      return std::chrono::nanoseconds{0};
    }
    double delay = 0;
    switch (policy_.jitter) {
      case jitter_kind::none:
        delay = current_base(cap);
        break;
      case jitter_kind::full:
        delay = current_base(cap) * unit(random);
        break;
      case jitter_kind::equal: {
        const double half = current_base(cap) / 2;
        delay = half + half * unit(random);
        break;
      }
      case jitter_kind::decorrelated: {
        // Polly's DecorrelatedJitterBackoffV2: p_factor 4, scaling 1 / 1.4.
        constexpr double p_factor = 4.0;
        constexpr double scaling = 1.0 / 1.4;
        const double t = static_cast<double>(retry_ - 1) + unit(random);
        const double next = std::pow(2.0, t) * std::tanh(std::sqrt(p_factor * t));
        delay = (next - previous_) * scaling * to_double(policy_.initial_delay);
        previous_ = next;
        break;
      }
    }
    return clamp(delay, cap);
  }

  /// Retries scheduled so far.
  [[nodiscard]] std::uint32_t retries() const noexcept { return retry_; }

 private:
  static double to_double(std::chrono::nanoseconds d) noexcept {
    return d.count() > 0 ? static_cast<double>(d.count()) : 0.0;
  }

  /// base_k = min(cap, initial * multiplier^k), then advances to base_(k+1). A base
  /// that grows stops at the cap (growing further would change nothing but could
  /// overflow); one that shrinks (multiplier below 1) keeps shrinking, also from above
  /// the cap.
  double current_base(double cap) noexcept {
    const double base = base_ < cap ? base_ : cap;
    const double multiplier = policy_.multiplier > 0 ? policy_.multiplier : 0.0;
    if (base_ > 0 && (base_ < cap || multiplier < 1)) {
      const double next = base_ * multiplier;
      base_ = next == next ? next : cap;  // an infinite multiplier jumps to the cap
    }
    return base;
  }

  /// Uniform in [0, 1) from the top 53 bits of two draws mixed: the second draw's low
  /// half fills the top half, so a source with only 32 random bits per draw
  /// (std::mt19937) still fills all 53, where one draw's top bits would always be 0
  /// (full jitter would then always be 0). From a 64-bit source the mix is as uniform
  /// as either draw.
  template <class Random>
  static double unit(Random& random) {
    const std::uint64_t first = random();
    const std::uint64_t second = random();
    const std::uint64_t bits = first ^ (second << 32) ^ (second >> 32);
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
  }

  std::chrono::nanoseconds clamp(double delay, double cap) const noexcept {
    // NaN and infinities (2^t overflows after about a thousand retries) go to the cap,
    // returned exactly: `cap` is max_delay rounded to a double, which may exceed it
    // (and, for nanoseconds::max(), would not convert back to an integer at all).
    if (!(delay < cap)) return policy_.max_delay;
    if (!(delay > 0)) return std::chrono::nanoseconds{0};
    // delay < cap <= 2^63, so the conversion is defined; the min undoes rounding.
    return std::min(std::chrono::nanoseconds{static_cast<std::int64_t>(delay)}, policy_.max_delay);
  }

  retry_policy policy_;
  double base_;
  double previous_ = 0;
  std::uint32_t retry_ = 0;
};

/// The default environment: steady_clock, std::this_thread::sleep_for and a
/// per-thread std::mt19937_64 seeded from std::random_device.
struct system_retry_environment {
  using clock = std::chrono::steady_clock;
  static clock::time_point now() noexcept { return clock::now(); }
  static void sleep_for(std::chrono::nanoseconds delay) { std::this_thread::sleep_for(delay); }
  static std::uint64_t random() {
    thread_local std::mt19937_64 engine{seed()};
    return engine();
  }

 private:
  static std::uint64_t seed() {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }
};

/// An environment of three callables, for tests and custom clocks. Every member
/// must be set.
struct retry_environment {
  std::function<std::chrono::steady_clock::time_point()> now;
  std::function<void(std::chrono::nanoseconds)> sleep_for;
  std::function<std::uint64_t()> random;
};

/// What retry_on_conflict needs of an environment.
template <class Env>
concept retry_environment_like = requires(Env& env, std::chrono::nanoseconds d) {
  {env.now() - env.now()};
  env.sleep_for(d);
  requires std::unsigned_integral<std::remove_cvref_t<decltype(env.random())>> &&
      sizeof(std::remove_cvref_t<decltype(env.random())>) == sizeof(std::uint64_t);
};

/// Why a retry loop ended.
enum class retry_status {
  succeeded,        // an attempt returned a result
  out_of_attempts,  // max_attempts attempts all conflicted
  out_of_time,      // the next retry would have started after max_elapsed
};

/// The outcome of retry_on_conflict: the result (empty when it gave up), why it
/// ended, the attempts made and the time spent retrying (from the first conflict to
/// the end, by the environment's clock; zero when the first attempt succeeded).
template <class R>
struct retry_outcome {
  std::optional<R> result;
  retry_status status = retry_status::succeeded;
  std::uint32_t attempts = 0;
  std::chrono::nanoseconds elapsed{0};

  [[nodiscard]] bool gave_up() const noexcept { return status != retry_status::succeeded; }
  explicit operator bool() const noexcept { return status == retry_status::succeeded; }
};

/// Calls `attempt()` until it returns an engaged std::optional<R> (success) or the
/// policy gives up, sleeping the policy's delay between attempts. Only an empty
/// optional (a conflict) is retried; an exception from `attempt`, the environment
/// or R's move passes through at once, except the clock's after a successful
/// attempt (its effect stands; `elapsed` then reports the time slept). Thread-safety: as safe as
/// `attempt` and the environment (the default one is). Progress: blocking (it sleeps) when the
/// policy has delays; otherwise as `attempt`. Returns the outcome; when it gave up, the result is
/// empty and `status` says why.
template <class Attempt, class Env = system_retry_environment>
requires retry_environment_like<std::remove_reference_t<Env>> && requires(Attempt& a) {
  a().has_value();
  *a();
}
auto retry_on_conflict(const retry_policy& policy, Attempt&& attempt, Env&& env = Env{}) {
  using optional_type = std::remove_cvref_t<std::invoke_result_t<Attempt&>>;
  using R = typename optional_type::value_type;
  using outcome = retry_outcome<R>;

  using time_point = std::remove_cvref_t<decltype(env.now())>;
  std::optional<time_point> first_conflict;  // the clock starts at the first conflict
  const auto since_first_conflict = [&]() -> std::chrono::nanoseconds {
    if (!first_conflict) return std::chrono::nanoseconds{0};
    // Never negative: an injected clock may step backwards, and the bound check below
    // subtracts this from max_elapsed.
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::nanoseconds>(env.now() - *first_conflict);
    return elapsed > std::chrono::nanoseconds::zero() ? elapsed : std::chrono::nanoseconds{0};
  };
  // After a success the attempt's effect stands (a commit was made): a clock that
  // throws now must not turn it into an exception, on which a caller would repeat the
  // update. The time slept since the first conflict stands in for the reading.
  std::chrono::nanoseconds slept{0};
  const auto elapsed_after_success = [&]() noexcept -> std::chrono::nanoseconds {
    try {
      return since_first_conflict();
    } catch (...) {
      return slept;
    }
  };
  const std::uint32_t max_attempts = policy.max_attempts == 0 ? 1 : policy.max_attempts;
  const bool time_bounded = policy.max_elapsed != retry_policy::unlimited_time;
  backoff_schedule schedule(policy);
  auto random = [&env]() -> std::uint64_t { return env.random(); };

  // Saturates at the maximum: an unlimited policy keeps retrying past 2^32 attempts.
  for (std::uint32_t attempts = 1;; attempts += attempts < UINT32_MAX ? 1 : 0) {
    if (optional_type result = attempt(); result.has_value()) {
      return outcome{std::move(result), retry_status::succeeded, attempts, elapsed_after_success()};
    }
    if (!first_conflict) first_conflict.emplace(env.now());
    if (max_attempts != retry_policy::unlimited_attempts && attempts >= max_attempts) {
      return outcome{std::nullopt, retry_status::out_of_attempts, attempts, since_first_conflict()};
    }
    const std::chrono::nanoseconds delay = schedule.next(random);
    if (time_bounded) {
      const std::chrono::nanoseconds elapsed = since_first_conflict();
      if (elapsed >= policy.max_elapsed || delay > policy.max_elapsed - elapsed) {
        return outcome{std::nullopt, retry_status::out_of_time, attempts, elapsed};
      }
    }
    if (delay.count() > 0) {
      env.sleep_for(delay);
      slept = delay > std::chrono::nanoseconds::max() - slept ? std::chrono::nanoseconds::max()
                                                              : slept + delay;
    }
  }
}

INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_RETRY_HPP
