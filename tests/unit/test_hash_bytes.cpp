// detail::hash_bytes and key_hash for strings: every length read exactly, the two
// multiply paths equal, no collisions on realistic keys, an even spread, and
// single-bit changes reaching about half the output bits.
#include <interlock/detail/hash_bytes.hpp>
#include <interlock/detail/keyed_table.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

using interlock::detail::hash_bytes;

namespace {

/// Hashes a copy of `bytes` in an allocation of exactly its size: AddressSanitizer
/// reports any read past it.
std::uint64_t hash_exact_copy(const std::vector<unsigned char>& bytes) {
  auto copy = std::make_unique<unsigned char[]>(bytes.size());
  std::copy(bytes.begin(), bytes.end(), copy.get());
  return hash_bytes(copy.get(), bytes.size());
}

std::vector<unsigned char> random_bytes(std::mt19937_64& random, std::size_t n) {
  std::vector<unsigned char> bytes(n);
  for (auto& b : bytes) b = static_cast<unsigned char>(random());
  return bytes;
}

}  // namespace

TEST_CASE("hash_bytes: the portable multiply equals the native one", "[hash_bytes]") {
  std::mt19937_64 random(1);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t a = random();
    const std::uint64_t b = random();
    REQUIRE(interlock::detail::folded_multiply(a, b) ==
            interlock::detail::folded_multiply_portable(a, b));
  }
  constexpr std::uint64_t all_ones = ~std::uint64_t{0};
  // (2^64 - 1)^2 = 2^128 - 2^65 + 1: high half 2^64 - 2, low half 1.
  CHECK(interlock::detail::folded_multiply_portable(all_ones, all_ones) == ((all_ones - 1) ^ 1));
  CHECK(interlock::detail::folded_multiply(all_ones, all_ones) == ((all_ones - 1) ^ 1));
  CHECK(interlock::detail::folded_multiply(0, all_ones) == 0);
}

TEST_CASE("hash_bytes: reads exactly its input, at any address and length", "[hash_bytes]") {
  std::mt19937_64 random(2);
  const std::vector<unsigned char> source = random_bytes(random, 200);
  CHECK(hash_bytes(nullptr, 0) == hash_bytes(source.data(), 0));
  for (std::size_t n = 0; n <= 100; ++n) {
    const std::vector<unsigned char> prefix(source.begin(), source.begin() + static_cast<long>(n));
    const std::uint64_t expected = hash_exact_copy(prefix);
    for (std::size_t offset = 1; offset < 8; ++offset) {  // the same bytes, misaligned
      std::vector<unsigned char> shifted(offset, 0xAB);
      shifted.insert(shifted.end(), prefix.begin(), prefix.end());
      REQUIRE(hash_bytes(shifted.data() + offset, n) == expected);
    }
    // The bytes after the input must not matter.
    std::vector<unsigned char> followed = prefix;
    followed.push_back(0x5A);
    REQUIRE(hash_bytes(followed.data(), n) == expected);
  }
}

TEST_CASE("hash_bytes: prefixes, lengths and zero bytes give distinct values", "[hash_bytes]") {
  std::mt19937_64 random(3);
  const std::vector<unsigned char> source = random_bytes(random, 300);
  std::set<std::uint64_t> seen;
  for (std::size_t n = 0; n <= source.size(); ++n) seen.insert(hash_bytes(source.data(), n));
  CHECK(seen.size() == source.size() + 1);
  // Strings of zero bytes differ only in their length.
  const std::vector<unsigned char> zeros(64, 0);
  std::set<std::uint64_t> zero_hashes;
  for (std::size_t n = 0; n <= zeros.size(); ++n) zero_hashes.insert(hash_bytes(zeros.data(), n));
  CHECK(zero_hashes.size() == zeros.size() + 1);
}

TEST_CASE("hash_bytes: a million realistic keys, no collision and an even spread", "[hash_bytes]") {
  constexpr std::size_t keys = 1'000'000;
  constexpr std::size_t buckets = 1024;
  std::unordered_set<std::uint64_t> values;
  values.reserve(keys);
  std::vector<std::size_t> low_bits(buckets, 0);
  std::vector<std::size_t> high_bits(buckets, 0);
  for (std::size_t i = 0; i < keys; ++i) {
    const std::string key = (i % 2 == 0 ? "order:" : "signup:42:lead:") + std::to_string(i);
    const std::uint64_t h = hash_bytes(key.data(), key.size());
    values.insert(h);
    ++low_bits[h % buckets];
    ++high_bits[h >> 54];
  }
  CHECK(values.size() == keys);
  // About 977 per bucket, standard deviation about 31: a bucket off by a third would
  // be more than ten deviations out.
  const std::size_t mean = keys / buckets;
  for (std::size_t b = 0; b < buckets; ++b) {
    REQUIRE(low_bits[b] > mean * 2 / 3);
    REQUIRE(low_bits[b] < mean * 4 / 3);
    REQUIRE(high_bits[b] > mean * 2 / 3);
    REQUIRE(high_bits[b] < mean * 4 / 3);
  }
}

TEST_CASE("hash_bytes: flipping one input bit flips about half the output bits", "[hash_bytes]") {
  std::mt19937_64 random(4);
  for (const std::size_t n : {1, 3, 4, 7, 8, 12, 16, 17, 31, 32, 33, 64}) {
    std::uint64_t flipped_bits = 0;
    std::uint64_t trials = 0;
    int fewest = 64;
    for (int sample = 0; sample < 200; ++sample) {
      std::vector<unsigned char> bytes = random_bytes(random, n);
      const std::uint64_t original = hash_bytes(bytes.data(), n);
      for (std::size_t bit = 0; bit < 8 * n; ++bit) {
        bytes[bit / 8] ^= static_cast<unsigned char>(1U << (bit % 8));
        const int changed = std::popcount(original ^ hash_bytes(bytes.data(), n));
        bytes[bit / 8] ^= static_cast<unsigned char>(1U << (bit % 8));
        flipped_bits += static_cast<std::uint64_t>(changed);
        fewest = std::min(fewest, changed);
        ++trials;
      }
    }
    INFO("length " << n);
    const double average = static_cast<double>(flipped_bits) / static_cast<double>(trials);
    CHECK(average > 30.0);
    CHECK(average < 34.0);
    CHECK(fewest > 0);  // no flip left the hash unchanged
  }
}

TEST_CASE("key_hash: string keys hash alike as string, string_view and const char*",
          "[hash_bytes]") {
  const interlock::key_hash<std::string> by_string;
  const std::string key = "signup:42:lead";
  CHECK(by_string(key) == by_string(std::string_view(key)));
  CHECK(by_string(key) == by_string("signup:42:lead"));
  CHECK(by_string(key) == static_cast<std::size_t>(hash_bytes(key.data(), key.size())));
  CHECK(interlock::key_hash<std::string_view>{}(std::string_view(key)) == by_string(key));
  // Wide strings hash their bytes.
  const std::u16string wide = u"lead";
  CHECK(interlock::key_hash<std::u16string>{}(wide) ==
        static_cast<std::size_t>(hash_bytes(wide.data(), wide.size() * sizeof(char16_t))));
  // Other keys keep std::hash.
  CHECK(interlock::key_hash<int>{}(42) == std::hash<int>{}(42));
}

TEST_CASE("equal_bytes: agrees with memcmp at every length and difference position",
          "[hash_bytes]") {
  std::mt19937_64 random(5);
  for (std::size_t n = 0; n <= 40; ++n) {
    const std::vector<unsigned char> a = random_bytes(random, n);
    std::vector<unsigned char> b = a;
    // Exact-size copies: AddressSanitizer reports a read past either.
    auto a_copy = std::make_unique<unsigned char[]>(n);
    auto b_copy = std::make_unique<unsigned char[]>(n);
    std::copy(a.begin(), a.end(), a_copy.get());
    std::copy(b.begin(), b.end(), b_copy.get());
    REQUIRE(interlock::detail::equal_bytes(a_copy.get(), b_copy.get(), n));
    for (std::size_t i = 0; i < n; ++i) {
      for (const unsigned flip : {0x01U, 0x80U}) {
        b_copy[i] = static_cast<unsigned char>(b[i] ^ flip);
        INFO("length " << n << ", byte " << i);
        REQUIRE_FALSE(interlock::detail::equal_bytes(a_copy.get(), b_copy.get(), n));
        b_copy[i] = b[i];
      }
    }
  }
}
