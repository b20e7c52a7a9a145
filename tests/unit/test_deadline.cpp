// detail/deadline.hpp: timeouts and deadlines of any clock and any duration become
// steady_clock deadlines without overflow, and the time left until a deadline
// saturates instead of wrapping.
#include <interlock/detail/deadline.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <ratio>

namespace {

using namespace std::chrono_literals;
using interlock::detail::add_ticks_saturating;
using interlock::detail::deadline_after;
using interlock::detail::steady_deadline;
using interlock::detail::steady_deadline_of;
using interlock::detail::time_left;
using std::chrono::hours;
using std::chrono::nanoseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

template <class Clock>
using coarse = std::chrono::time_point<Clock, hours>;

}  // namespace

TEST_CASE("deadline_after saturates and clamps", "[deadline]") {
  CHECK(deadline_after(hours::max()) == steady_deadline::max());
  CHECK(deadline_after(std::chrono::duration<double>(1e300)) == steady_deadline::max());
  const auto before = steady_clock::now();
  const auto expired = deadline_after(-5s);
  CHECK(expired >= before);  // now, not five seconds ago
  const auto after = steady_clock::now();
  CHECK(expired <= after);
  const auto soon = deadline_after(10s);
  CHECK(soon > before + 9s);
  CHECK(soon <= steady_clock::now() + 10s);
}

TEST_CASE("time_left saturates at both ends of the nanosecond range", "[deadline]") {
  CHECK(time_left(coarse<steady_clock>::max()) == nanoseconds::max());
  CHECK(time_left(coarse<system_clock>::max()) == nanoseconds::max());
  CHECK(time_left(coarse<steady_clock>::min()) == nanoseconds::min());
  CHECK(time_left(coarse<system_clock>::min()) == nanoseconds::min());
  // Exact-duration extremes: max() - now fits, min() - now does not.
  CHECK(time_left(steady_clock::time_point::max()) > nanoseconds::zero());
  CHECK(time_left(system_clock::time_point::min()) == nanoseconds::min());
  CHECK(time_left(steady_clock::time_point::min()) == nanoseconds::min());
}

TEST_CASE("time_left measures an ordinary deadline on its own clock", "[deadline]") {
  const auto left = time_left(system_clock::now() + 30s);
  CHECK(left > 29s);
  CHECK(left <= 30s);
  CHECK(time_left(steady_clock::now() - 1s) < -999ms);
  const auto coarse_soon =
      std::chrono::time_point_cast<hours>(steady_clock::now()) + hours(2);  // 1 to 2 hours
  CHECK(time_left(coarse_soon) > 59min);
  CHECK(time_left(coarse_soon) <= 2h);
}

TEST_CASE("steady_deadline_of converts any clock and duration", "[deadline]") {
  const steady_deadline exact = steady_clock::now() + 5s;
  CHECK(steady_deadline_of(exact) == exact);  // kept as it is, no clock read
  CHECK(steady_deadline_of(coarse<steady_clock>::max()) == steady_deadline::max());
  CHECK(steady_deadline_of(coarse<system_clock>::max()) == steady_deadline::max());
  // system_clock's max() is about 230 years away: far, but it fits.
  CHECK(steady_deadline_of(system_clock::time_point::max()) > steady_clock::now() + 200 * 8766h);
  const auto before = steady_clock::now();
  CHECK(steady_deadline_of(coarse<steady_clock>::min()) >= before);  // already expired: now
  const auto expired = steady_deadline_of(system_clock::time_point::min());
  CHECK(expired >= before);
  CHECK(expired <= steady_clock::now());
  const auto converted = steady_deadline_of(system_clock::now() + 10s);
  CHECK(converted > before + 9s);
  CHECK(converted <= steady_clock::now() + 10s);
}

TEST_CASE("add_ticks_saturating adds exactly, rounds up to a tick and saturates", "[deadline]") {
  constexpr std::int64_t max = std::numeric_limits<std::int64_t>::max();
  constexpr std::int64_t min = std::numeric_limits<std::int64_t>::min();
  using nano = std::nano;
  using tick_1024 = std::ratio<1, 1024>;  // a clock that ticks 1024 times a second

  // Same period: an integer add, exact up to the ends, then saturated.
  CHECK(add_ticks_saturating<nano>(5, nanoseconds(7)) == 12);
  CHECK(add_ticks_saturating<nano>(-5, nanoseconds(-7)) == -12);
  CHECK(add_ticks_saturating<nano>(max - 3, nanoseconds(3)) == max);
  CHECK(add_ticks_saturating<nano>(max - 3, nanoseconds(4)) == max);
  CHECK(add_ticks_saturating<nano>(min + 3, nanoseconds(-4)) == min);
  CHECK(add_ticks_saturating<nano>(0, nanoseconds::max()) == max);

  // Another period: rounded up to a whole tick, never earlier than asked.
  CHECK(add_ticks_saturating<tick_1024>(0, 1s) == 1024);
  CHECK(add_ticks_saturating<tick_1024>(10, 1ns) == 11);
  CHECK(add_ticks_saturating<tick_1024>(-10, 1ms) == -8);  // 1.024 ticks -> 2
  CHECK(add_ticks_saturating<nano>(100, std::chrono::duration<double, std::pico>(1.0)) == 101);
  // nanoseconds::max() in 1/1024 s ticks fits, but hours::max() does not.
  CHECK(add_ticks_saturating<tick_1024>(0, hours::max()) == max);
  CHECK(add_ticks_saturating<tick_1024>(0, hours::min()) == min);
  CHECK(add_ticks_saturating<nano>(max - 10, 1ms) == max);

  // Counts that an integer add would get wrong, and a NaN.
  using unsigned_ns = std::chrono::duration<std::uint64_t, std::nano>;
  CHECK(add_ticks_saturating<nano>(0, unsigned_ns(std::numeric_limits<std::uint64_t>::max())) ==
        max);
  CHECK(add_ticks_saturating<nano>(5, unsigned_ns(7)) == 12);
  const std::chrono::duration<double> not_a_number(std::numeric_limits<double>::quiet_NaN());
  CHECK(add_ticks_saturating<nano>(42, not_a_number) == 42);
  const auto before = steady_clock::now();
  const auto nan_deadline = deadline_after(not_a_number);  // now: no undefined conversion
  const auto after = steady_clock::now();
  CHECK(nan_deadline >= before);
  CHECK(nan_deadline <= after);
  const std::chrono::time_point<steady_clock, std::chrono::duration<double>> nan_point(
      not_a_number);
  CHECK(time_left(nan_point) == nanoseconds::min());  // passed
}
