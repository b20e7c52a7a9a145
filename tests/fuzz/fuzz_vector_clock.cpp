// libFuzzer target: runs the binary and text decoders of vector_clock (integer and
// string node ids) on arbitrary input; whatever decodes must re-encode to the very
// input (decoding is canonical) and survive encode -> decode unchanged in both
// encodings, or the target traps.
#include <interlock/vector_clock.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace {

template <class Clock>
void check_round_trips(const Clock& clock) {
  const auto binary = Clock::decode_binary(clock.encode_binary());
  if (!binary.has_value() || !(*binary == clock)) __builtin_trap();
  const auto text = Clock::decode_text(clock.to_string());
  if (!text.has_value() || !(*text == clock)) __builtin_trap();
  // compare is reflexive and antisymmetric on any decoded value
  if (clock.compare(clock) != interlock::clock_order::equal) __builtin_trap();
}

template <class Clock>
void fuzz_one(std::span<const std::byte> bytes, std::string_view text) {
  // Decoding is canonical: whatever decodes is exactly the encoding of its value.
  if (const auto decoded = Clock::decode_binary(bytes)) {
    const auto again = decoded->encode_binary();
    if (!std::equal(again.begin(), again.end(), bytes.begin(), bytes.end())) __builtin_trap();
    check_round_trips(*decoded);
  }
  if (const auto decoded = Clock::decode_text(text)) {
    if (decoded->to_string() != text) __builtin_trap();
    check_round_trips(*decoded);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzz_one<interlock::vector_clock<std::uint64_t>>(bytes, text);
  fuzz_one<interlock::vector_clock<std::string>>(bytes, text);
  fuzz_one<interlock::vector_clock<std::int16_t>>(bytes, text);
  if (size >= 2) {  // two clocks from one input: merge and compare stay consistent
    const std::size_t half = size / 2;
    const auto a = interlock::vector_clock<std::uint64_t>::decode_binary(bytes.first(half));
    const auto b = interlock::vector_clock<std::uint64_t>::decode_binary(bytes.subspan(half));
    if (a && b) {
      auto merged = *a;
      merged.merge(*b);
      if (!merged.descends(*a) || !merged.descends(*b)) __builtin_trap();
      const auto order = a->compare(*b);
      const auto reverse = b->compare(*a);
      using interlock::clock_order;
      if ((order == clock_order::before) != (reverse == clock_order::after)) __builtin_trap();
      if ((order == clock_order::concurrent) != (reverse == clock_order::concurrent)) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
