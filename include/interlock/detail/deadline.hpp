// interlock/detail/deadline.hpp: timeouts and deadlines of any clock turned into
// steady_clock deadlines, without overflow.
//
// Design note. Every timed operation (keyed_mutex::try_lock_for, cas_slot's
// wait_for_change_for, idempotency_guard::run_for, their Redis-backed twins) waits on
// the steady clock. `steady_clock::now() + timeout` overflows for a timeout that users
// pass to mean "as long as it takes" (hours::max(), or a time_point::max() deadline on
// another clock): the sum wraps to the past and the call gives up at once. These
// helpers saturate at steady_clock::time_point::max() instead.
//
// add_ticks_saturating is the one saturating "time point + duration" of the library:
// deadline_after uses it on the steady clock, and idempotency_guard and unique_claims
// for an expiry on their own clock.
//
// Thread-safety: stateless; they read the clock once (twice for a foreign clock) and
// never throw.
#ifndef INTERLOCK_DETAIL_DEADLINE_HPP
#define INTERLOCK_DETAIL_DEADLINE_HPP

#include <interlock/config.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

using steady_deadline = std::chrono::steady_clock::time_point;

/// `ticks` (a count of `Period`) + `d`, with `d` rounded up to a whole tick (a
/// deadline or an expiry is never earlier than asked): exact where the sum fits in
/// int64, saturated at the ends of the int64 range where it does not. `ticks` may be
/// negative (an injected clock). An unsigned count beyond int64 saturates; a NaN
/// (floating-point) duration adds nothing.
template <class Period, class Rep, class DPeriod>
std::int64_t add_ticks_saturating(std::int64_t ticks,
                                  std::chrono::duration<Rep, DPeriod> d) noexcept {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  if constexpr (std::is_same_v<Period, DPeriod> && std::is_integral_v<Rep> &&
                std::is_signed_v<Rep> && sizeof(Rep) <= sizeof(std::int64_t)) {
    // The same period (nanoseconds on steady_clock): an integer add, no rounding.
    const auto add = static_cast<std::int64_t>(d.count());
    if (add > 0 && ticks > max - add) return max;
    if (add < 0 && ticks < min - add) return min;
    return ticks + add;
  } else {
    // In long double, so that no conversion overflows whatever the periods (1/1024 s
    // multiplies nanoseconds by 128, a GHz clock by more) and whatever `d`
    // (hours::max() means "never"). Where long double has a 64-bit mantissa (x86) it
    // holds every tick count exactly; where it is a double, the result still
    // saturates but may round by a few hundred ticks.
    const long double add = std::ceil(std::chrono::duration<long double, Period>(d).count());
    if (std::isnan(add)) return ticks;  // a NaN duration adds nothing (never undefined)
    const long double sum = static_cast<long double>(ticks) + add;
    if (sum >= static_cast<long double>(max)) return max;
    if (sum <= static_cast<long double>(min)) return min;
    return static_cast<std::int64_t>(sum);
  }
}

/// now + timeout on the steady clock, saturating at time_point::max(); a zero or
/// negative timeout gives now (already expired).
template <class Rep, class Period>
steady_deadline deadline_after(std::chrono::duration<Rep, Period> timeout) {
  const steady_deadline now = std::chrono::steady_clock::now();
  if (timeout <= timeout.zero()) return now;
  using ticks = steady_deadline::duration;
  return steady_deadline(ticks(add_ticks_saturating<ticks::period>(
      static_cast<std::int64_t>(now.time_since_epoch().count()), timeout)));
}

/// The time from now (on `deadline`'s own clock) until `deadline`, in nanoseconds:
/// negative once it has passed, saturated at nanoseconds::max() and min() where the
/// exact value does not fit (for example time_point<Clock, hours>::max(), or
/// time_point::min()).
template <class Clock, class Duration>
std::chrono::nanoseconds time_left(const std::chrono::time_point<Clock, Duration>& deadline) {
  using std::chrono::nanoseconds;
  // Neither time point is converted to an integer type before the range test. Where
  // long double has a 64-bit mantissa (x86) it holds every nanosecond count exactly;
  // where it is a double, the result still saturates but may round by a few hundred ns.
  using exact = std::chrono::duration<long double, std::nano>;
  const exact left = exact(deadline.time_since_epoch()) - exact(Clock::now().time_since_epoch());
  if (left >= exact(nanoseconds::max())) return nanoseconds::max();
  // A NaN (floating-point) deadline counts as passed: no undefined conversion.
  if (left <= exact(nanoseconds::min()) || std::isnan(left.count())) return nanoseconds::min();
  return std::chrono::duration_cast<nanoseconds>(left);
}

/// `deadline` (any clock, any duration) as a steady_clock deadline: the same time left
/// from now, saturating like deadline_after. A steady_clock::time_point is kept as it is.
template <class Clock, class Duration>
steady_deadline steady_deadline_of(const std::chrono::time_point<Clock, Duration>& deadline) {
  if constexpr (std::is_same_v<std::chrono::time_point<Clock, Duration>, steady_deadline>) {
    return deadline;
  } else {
    return deadline_after(time_left(deadline));
  }
}

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_DEADLINE_HPP
