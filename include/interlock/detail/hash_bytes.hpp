// interlock/detail/hash_bytes.hpp: a fast 64-bit hash of a byte string, behind the
// keyed primitives' default hash for string keys (interlock::key_hash), and the byte
// comparison their tables use for string keys.
//
// Design note. Every call of idempotency_guard, unique_claims and keyed_mutex hashes
// its key once. With many stored keys that call is bound by cache misses, and the
// instructions in its way matter more than their count suggests: the fewer there are,
// the sooner the processor reaches the next call's independent loads. libstdc++'s
// std::hash<std::string_view> (MurmurHash2, out of line) takes about 67 instructions
// for a 12-byte key; this takes about 15. Measured on idempotency replays over 100,000
// keys (one thread, 2-core AMD VM, medians of 6 alternating runs): 301 -> 228 ns per
// call from the hash alone (328 -> 282 in a second set).
//
// The function: an input of up to 16 bytes is read as two words (overlapping when it
// is shorter than 16; 4-byte words below 8 bytes; its first, middle and last byte
// below 4); a longer one is folded 16 bytes at a time into a running state, and its
// last 16 bytes are read as the two words. The two words, the length and fixed odd
// constants then meet in one folded multiply: the 128-bit product of two 64-bit
// values with its halves xor-ed, in which every input bit reaches most output bits.
// This is the structure of wyhash and rapidhash, written afresh here.
//
// What it is not: it is not seeded and not cryptographic, so it does not resist keys
// chosen by an attacker to collide (neither does std::hash). A word whose bytes
// happen to equal a mixing constant cancels it, as in wyhash: harmless for keys that
// are not adversarial. Its values depend on the machine's byte order and may change
// between interlock versions: use them in one process, never persist them.
//
// equal_bytes compares keys of up to 16 bytes with the same two (overlapping) word
// loads, inline, where std::string's == calls memcmp: about 20 instructions fewer
// per lookup of a short key.
//
// Thread-safety: pure functions. Complexity: O(n), never reading outside
// [data, data + n): each byte once or twice (the overlapping words of inputs up to 16
// bytes, and the last 16 bytes of a longer one; one byte of a 1-byte input thrice).
#ifndef INTERLOCK_DETAIL_HASH_BYTES_HPP
#define INTERLOCK_DETAIL_HASH_BYTES_HPP

#include <interlock/config.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>

INTERLOCK_NAMESPACE_BEGIN
namespace detail {

/// The 128-bit product of a and b with its high and low halves xor-ed, computed from
/// four 32-bit products (for compilers without a 128-bit integer type; also the
/// reference the tests compare the fast version with).
constexpr std::uint64_t folded_multiply_portable(std::uint64_t a, std::uint64_t b) noexcept {
  constexpr std::uint64_t low32 = 0xffffffffULL;
  const std::uint64_t a_lo = a & low32, a_hi = a >> 32;
  const std::uint64_t b_lo = b & low32, b_hi = b >> 32;
  const std::uint64_t lo_lo = a_lo * b_lo;
  const std::uint64_t hi_lo = a_hi * b_lo;
  const std::uint64_t lo_hi = a_lo * b_hi;
  const std::uint64_t hi_hi = a_hi * b_hi;
  const std::uint64_t middle = (lo_lo >> 32) + (hi_lo & low32) + lo_hi;  // < 2^64: no carry lost
  const std::uint64_t high = hi_hi + (hi_lo >> 32) + (middle >> 32);
  const std::uint64_t low = (middle << 32) | (lo_lo & low32);
  return high ^ low;
}

/// As folded_multiply_portable, with one multiply instruction where the compiler has
/// a 128-bit integer type.
inline std::uint64_t folded_multiply(std::uint64_t a, std::uint64_t b) noexcept {
#if defined(__SIZEOF_INT128__)
  __extension__ using uint128 = unsigned __int128;  // __extension__: no -Wpedantic warning
  const uint128 product = static_cast<uint128>(a) * b;
  return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
#else
  return folded_multiply_portable(a, b);
#endif
}

/// The 8 or 4 bytes at p as an integer in the machine's byte order (one unaligned
/// load; memcpy is how C++ spells it without undefined behaviour).
inline std::uint64_t load_word64(const unsigned char* p) noexcept {
  std::uint64_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}
inline std::uint64_t load_word32(const unsigned char* p) noexcept {
  std::uint32_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}

/// The 64-bit hash of the n bytes at data (see the design note). data may be null
/// when n is 0.
inline std::uint64_t hash_bytes(const void* data, std::size_t n) noexcept {
  // Odd constants with about as many one bits as zero bits (from the golden ratio and
  // splitmix64), so that xor-ing one in flips about half of a word's bits.
  constexpr std::uint64_t state_seed = 0x9e3779b97f4a7c15ULL;
  constexpr std::uint64_t first_key = 0xbf58476d1ce4e5b9ULL;
  constexpr std::uint64_t second_key = 0x94d049bb133111ebULL;
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t first = 0;
  std::uint64_t second = 0;
  if (n <= 16) {
    if (n >= 8) {
      first = load_word64(p);
      second = load_word64(p + n - 8);
    } else if (n >= 4) {
      first = load_word32(p);
      second = load_word32(p + n - 4);
    } else if (n > 0) {
      first = (std::uint64_t{p[0]} << 16) | (std::uint64_t{p[n / 2]} << 8) | p[n - 1];
    }
  } else {
    std::uint64_t state = state_seed;
    const unsigned char* const last = p + n - 16;
    for (; p < last; p += 16) {
      state = folded_multiply(load_word64(p) ^ first_key, load_word64(p + 8) ^ state);
    }
    first = load_word64(last) ^ state;
    second = load_word64(last + 8);
  }
  return folded_multiply(first ^ first_key, second ^ second_key ^ n);
}

/// True when the n bytes at a equal the n bytes at b (memcmp(a, b, n) == 0).
inline bool equal_bytes(const void* a, const void* b, std::size_t n) noexcept {
  const auto* x = static_cast<const unsigned char*>(a);
  const auto* y = static_cast<const unsigned char*>(b);
  if (n > 16) return std::memcmp(x, y, n) == 0;
  if (n >= 8) {
    return ((load_word64(x) ^ load_word64(y)) |
            (load_word64(x + n - 8) ^ load_word64(y + n - 8))) == 0;
  }
  if (n >= 4) {
    return ((load_word32(x) ^ load_word32(y)) |
            (load_word32(x + n - 4) ^ load_word32(y + n - 4))) == 0;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (x[i] != y[i]) return false;
  }
  return true;
}

}  // namespace detail
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_DETAIL_HASH_BYTES_HPP
