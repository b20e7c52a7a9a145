// interlock/redis/codec.hpp: result_codec<T>, how a value stored in Redis (an
// idempotency result, a versioned value) turns into bytes and back.
//
// Design note. A Redis store keeps bytes; the primitives never guess a serialization.
// Specialize `interlock::redis::result_codec<T>` with
//
//     static std::string encode(const T& value);
//     static T decode(std::string_view bytes);   // may throw on malformed input
//
// Built in: std::string, std::vector<std::byte>, std::vector<unsigned char> (the bytes
// themselves) and the integral types (decimal text, so a value is readable in
// redis-cli). decode of a malformed integer throws redis_error (server): what is
// stored was not written by this codec.
//
// Thread-safety: codecs are stateless static functions.
#ifndef INTERLOCK_REDIS_CODEC_HPP
#define INTERLOCK_REDIS_CODEC_HPP

#include <interlock/config.hpp>
#include <interlock/redis/connection.hpp>

#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN
namespace redis {

/// The customization point; see the header's design note.
template <class T>
struct result_codec;

template <>
struct result_codec<std::string> {
  static std::string encode(const std::string& value) { return value; }
  static std::string decode(std::string_view bytes) { return std::string(bytes); }
};

template <class Byte>
requires(std::same_as<Byte, std::byte> ||
         std::same_as<Byte, unsigned char>) struct result_codec<std::vector<Byte>> {
  static std::string encode(const std::vector<Byte>& value) {
    std::string out(value.size(), '\0');
    if (!value.empty()) std::memcpy(out.data(), value.data(), value.size());
    return out;
  }
  static std::vector<Byte> decode(std::string_view bytes) {
    std::vector<Byte> out(bytes.size());
    if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
};

template <class T>
requires(std::is_integral_v<T> && !std::same_as<T, bool>) struct result_codec<T> {
  static std::string encode(const T& value) { return std::to_string(value); }
  static T decode(std::string_view bytes) {
    T value{};
    const auto [end, error] = std::from_chars(bytes.data(), bytes.data() + bytes.size(), value);
    if (error != std::errc{} || end != bytes.data() + bytes.size()) {
      throw redis_error(redis_error::error_kind::server, "decode",
                        "not an integer: " + std::string(bytes));
    }
    return value;
  }
};

/// True when result_codec<T> is usable.
template <class T>
concept has_result_codec = requires(const T& value, std::string_view bytes) {
  { result_codec<T>::encode(value) } -> std::convertible_to<std::string>;
  { result_codec<T>::decode(bytes) } -> std::convertible_to<T>;
};

}  // namespace redis
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_REDIS_CODEC_HPP
