// interlock/sha256.hpp: SHA-256 digests of bytes and of values.
//
// Design note. A `digest` is the 32-byte SHA-256 of some content: a regular value
// type with hex text, ordering, std::hash and stream output. `sha256` is a
// streaming hasher over OpenSSL's EVP interface; `sha256_digest(bytes)` and
// `content_digest(value)` are one-shot forms that reuse one hashing context per
// thread, so the hot path creates no context. (OpenSSL 3.0 itself still allocates its
// provider state for each message, one malloc/free pair, counted with
// CRYPTO_set_mem_functions; the benchmarks include it.) The SHA-256 algorithm is
// fetched from OpenSSL once per process (a failed fetch is not cached: it is tried
// again on the next call).
//
// Which bytes identify a value is the job of the `content_codec<T>` customization
// point: built in for arithmetic and enum types, strings and byte spans, contiguous
// and other ranges, std::pair / std::tuple / std::optional, and trivially copyable
// types without padding. A type whose object representation has padding (or float
// members) is rejected at compile time unless it has a codec, because hashing padding
// would make equal values differ. See `content_codec` below for the encoding rules.
//
// When not to use it: for passwords (use a slow KDF) or message authentication (use
// HMAC). SHA-256 here identifies content; it does not keep secrets.
//
// Errors: an OpenSSL failure (out of memory, a provider without SHA-256) throws
// `interlock::sha256_error`. Nothing else here throws, except what a user codec or
// a std::string allocation throws.
#ifndef INTERLOCK_SHA256_HPP
#define INTERLOCK_SHA256_HPP

#include <interlock/config.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN

// ============================================================================
// digest
// ============================================================================

/// A 32-byte SHA-256 digest. A value-initialized digest is all zero bytes.
///
/// Thread-safety: a plain value type (like std::array): concurrent reads are safe.
class digest {
 public:
  static constexpr std::size_t size = 32;
  using bytes_type = std::array<std::byte, size>;

  constexpr digest() noexcept = default;
  explicit constexpr digest(const bytes_type& bytes) noexcept : bytes_(bytes) {}

  [[nodiscard]] constexpr const bytes_type& bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::span<const std::byte, size> as_span() const noexcept { return bytes_; }

  /// The 64-character lowercase hex form. Allocates the returned string.
  [[nodiscard]] std::string to_hex() const {
    std::string text(2 * size, '0');
    write_hex(text.data());
    return text;
  }

  /// Writes the 64 lowercase hex characters to `out` (no terminator). No allocation.
  void write_hex(char* out) const noexcept {
    constexpr std::string_view alphabet = "0123456789abcdef";
    for (std::size_t i = 0; i < size; ++i) {
      const auto byte = std::to_integer<unsigned>(bytes_[i]);
      out[2 * i] = alphabet[byte >> 4];
      out[2 * i + 1] = alphabet[byte & 0xFU];
    }
  }

  /// Parses exactly 64 hex characters (either case). Returns an empty optional for
  /// any other length or any non-hex character. Never throws, never allocates.
  [[nodiscard]] static constexpr std::optional<digest> from_hex(std::string_view text) noexcept {
    if (text.size() != 2 * size) return std::nullopt;
    bytes_type bytes{};
    for (std::size_t i = 0; i < size; ++i) {
      const int high = hex_value(text[2 * i]);
      const int low = hex_value(text[2 * i + 1]);
      if (high < 0 || low < 0) return std::nullopt;
      bytes[i] = static_cast<std::byte>((high << 4) | low);
    }
    return digest(bytes);
  }

  /// Compares all 32 bytes. At run time one memcmp of a constant size, which the
  /// compiler turns into a few vector compares (the defaulted comparison of a byte
  /// array is a byte loop with an exit per byte: about 6 ns on a replay's path).
  friend constexpr bool operator==(const digest& a, const digest& b) noexcept {
    if (std::is_constant_evaluated()) return a.bytes_ == b.bytes_;
    return std::memcmp(a.bytes_.data(), b.bytes_.data(), size) == 0;
  }
  friend constexpr std::strong_ordering operator<=>(const digest& a, const digest& b) noexcept {
    return a.bytes_ <=> b.bytes_;
  }

  friend std::ostream& operator<<(std::ostream& out, const digest& d) {
    std::array<char, 2 * size> text{};
    d.write_hex(text.data());
    return out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }

 private:
  static constexpr int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bytes_type bytes_{};
};

// ============================================================================
// Errors
// ============================================================================

/// Thrown when OpenSSL fails to provide or run SHA-256. The message carries
/// OpenSSL's own error text when it has one.
class sha256_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

[[noreturn]] inline void throw_openssl_error(const char* operation) {
  std::string message = "interlock: OpenSSL ";
  message += operation;
  message += " failed";
  if (const unsigned long code = ERR_get_error(); code != 0) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    message += ": ";
    message += text.data();
  }
  ERR_clear_error();
  throw sha256_error(message);
}

/// The SHA-256 algorithm, fetched from the default provider once per process
/// (OpenSSL 3: explicit fetching avoids a provider lookup on every init). Only a
/// successful fetch is kept: a failure (providers not configured yet) throws and is
/// tried again by the next call.
inline const EVP_MD* sha256_algorithm() {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  struct fetched {
    std::atomic<EVP_MD*> md{nullptr};
    fetched() = default;
    fetched(const fetched&) = delete;
    fetched& operator=(const fetched&) = delete;
    ~fetched() { EVP_MD_free(md.load(std::memory_order_relaxed)); }
  };
  static fetched algorithm;
  // Acquire: pairs with the release of the CAS below (the EVP_MD's contents).
  if (EVP_MD* md = algorithm.md.load(std::memory_order_acquire)) return md;
  EVP_MD* mine = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (mine == nullptr) throw_openssl_error("EVP_MD_fetch(SHA256)");
  EVP_MD* published = nullptr;
  if (!algorithm.md.compare_exchange_strong(published, mine, std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
    EVP_MD_free(mine);  // another thread's fetch won
    return published;
  }
  return mine;
#else
  return EVP_sha256();
#endif
}

}  // namespace detail

// ============================================================================
// Streaming hasher
// ============================================================================

/// A streaming SHA-256 hasher over one OpenSSL EVP_MD_CTX.
///
/// `update` any number of times, then `finish()` returns the digest and leaves the
/// hasher ready for the next message, so one object can hash many messages with one
/// context. A moved-from hasher is empty: its next call creates a fresh context and
/// starts a new message (it never carries another object's message).
///
/// Thread-safety: one object is used by one thread at a time (like std::string);
/// distinct objects are independent. Progress: never blocks.
/// Complexity: linear in the bytes hashed.
/// Failure: construction and every call throw `sha256_error` when OpenSSL fails;
/// after such a failure the message in progress is discarded and the hasher starts
/// a new one.
class sha256 {
 public:
  sha256() { ensure_context(); }
  sha256(sha256&& other) noexcept : context_(std::exchange(other.context_, nullptr)) {}
  sha256& operator=(sha256&& other) noexcept {
    if (this != &other) {
      EVP_MD_CTX_free(context_);
      context_ = std::exchange(other.context_, nullptr);
    }
    return *this;
  }
  sha256(const sha256&) = delete;
  sha256& operator=(const sha256&) = delete;
  ~sha256() { EVP_MD_CTX_free(context_); }

  /// Adds bytes to the message.
  sha256& update(std::span<const std::byte> bytes) {
    ensure_context();
    if (!bytes.empty() && EVP_DigestUpdate(context_, bytes.data(), bytes.size()) != 1) {
      fail("EVP_DigestUpdate");
    }
    return *this;
  }
  sha256& update(std::string_view text) { return update(std::as_bytes(std::span(text))); }
  sha256& update(const void* data, std::size_t size) {
    return update(std::span(static_cast<const std::byte*>(data), size));
  }

  /// Returns the digest of everything added since the last finish() or reset(), and
  /// starts a new message.
  [[nodiscard]] digest finish() {
    ensure_context();
    digest::bytes_type bytes{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context_, reinterpret_cast<unsigned char*>(bytes.data()), &length) !=
            1 ||
        length != digest::size) {
      fail("EVP_DigestFinal_ex");
    }
    start();
    return digest(bytes);
  }

  /// Discards the message in progress.
  void reset() {
    if (context_ == nullptr) {
      ensure_context();  // a fresh context has just started a new message
    } else {
      start();
    }
  }

 private:
  /// A new (or moved-from) hasher gets a fresh context with a new message started.
  void ensure_context() {
    if (context_ != nullptr) return;
    EVP_MD_CTX* fresh = EVP_MD_CTX_new();
    if (fresh == nullptr) detail::throw_openssl_error("EVP_MD_CTX_new");
    context_ = fresh;
    try {
      start();
    } catch (...) {
      EVP_MD_CTX_free(std::exchange(context_, nullptr));
      throw;
    }
  }

  void start() {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    const int ok = EVP_DigestInit_ex2(context_, detail::sha256_algorithm(), nullptr);
#else
    const int ok = EVP_DigestInit_ex(context_, detail::sha256_algorithm(), nullptr);
#endif
    if (ok != 1) detail::throw_openssl_error("EVP_DigestInit");
  }

  [[noreturn]] void fail(const char* operation) {
    try {
      start();
    } catch (const sha256_error&) {
      // The original failure is the one worth reporting.
    }
    detail::throw_openssl_error(operation);
  }

  EVP_MD_CTX* context_ = nullptr;  // null once moved from (see ensure_context)
};

namespace detail {

/// The one-shot path: a context primed with SHA-256 once, copied into a working
/// context for each message. Copying a primed context measured a little cheaper than
/// initializing one (OpenSSL 3.0.19, 64 bytes: 117 against 125 ns; both allocate the
/// provider state once per message), and because every
/// message starts from a fresh copy, a message abandoned half-way by an exception
/// (a throwing codec) cannot leak into the next one.
class one_shot_hasher {
 public:
  one_shot_hasher() : primed_(EVP_MD_CTX_new()), work_(EVP_MD_CTX_new()) {
    if (primed_ == nullptr || work_ == nullptr) {
      release();
      throw_openssl_error("EVP_MD_CTX_new");
    }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    const int ok = EVP_DigestInit_ex2(primed_, sha256_algorithm(), nullptr);
#else
    const int ok = EVP_DigestInit_ex(primed_, sha256_algorithm(), nullptr);
#endif
    if (ok != 1) {
      release();
      throw_openssl_error("EVP_DigestInit");
    }
  }
  one_shot_hasher(const one_shot_hasher&) = delete;
  one_shot_hasher& operator=(const one_shot_hasher&) = delete;
  ~one_shot_hasher() { release(); }

  void begin() {
    if (EVP_MD_CTX_copy_ex(work_, primed_) != 1) throw_openssl_error("EVP_MD_CTX_copy_ex");
  }
  void update(std::span<const std::byte> bytes) {
    if (!bytes.empty() && EVP_DigestUpdate(work_, bytes.data(), bytes.size()) != 1) {
      throw_openssl_error("EVP_DigestUpdate");
    }
  }
  [[nodiscard]] digest finish() {
    digest::bytes_type bytes{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(work_, reinterpret_cast<unsigned char*>(bytes.data()), &length) != 1 ||
        length != digest::size) {
      throw_openssl_error("EVP_DigestFinal_ex");
    }
    return digest(bytes);
  }

 private:
  void release() noexcept {
    EVP_MD_CTX_free(primed_);
    EVP_MD_CTX_free(work_);
  }
  EVP_MD_CTX* primed_;
  EVP_MD_CTX* work_;
};

/// Set when this thread's thread_hashing is destroyed. Trivially destructible, so it
/// stays readable after every thread_local of the thread is gone.
inline constinit thread_local bool thread_hashing_destroyed = false;

/// One hasher per thread for the one-shot functions: created on a thread's first
/// digest, reused after that (no context created on the hot path). `busy` while a digest
/// is being computed with it.
struct thread_hashing {
  thread_hashing() = default;
  thread_hashing(const thread_hashing&) = delete;
  thread_hashing& operator=(const thread_hashing&) = delete;
  ~thread_hashing() { thread_hashing_destroyed = true; }

  one_shot_hasher hasher;
  bool busy = false;
};

inline thread_hashing& thread_hashing_state() {
  thread_local thread_hashing state;
  return state;
}

/// The digest of what write(hasher) feeds a one-shot hasher: the thread's own
/// hasher, or a fresh one when a digest is already being computed on this thread (a
/// codec that hashes a field with content_digest inside an outer content_digest: the
/// outer message must not be overwritten) or when the thread's hasher was already
/// destroyed (a digest from a thread_local or static destructor at exit).
template <class Write>
digest one_shot_digest(Write&& write) {
  const auto with_own_hasher = [&write] {
    one_shot_hasher own;  // rare: allocates two OpenSSL contexts
    own.begin();
    write(own);
    return own.finish();
  };
  // A digest from a thread_local (or, on the main thread, a static) destroyed after
  // this thread's hasher: the hasher's contexts are freed, so use a hasher of its own.
  if (thread_hashing_destroyed) return with_own_hasher();
  thread_hashing& state = thread_hashing_state();
  if (state.busy) return with_own_hasher();
  struct in_use {
    bool& busy;
    explicit in_use(bool& flag) noexcept : busy(flag) { busy = true; }
    in_use(const in_use&) = delete;
    in_use& operator=(const in_use&) = delete;
    ~in_use() { busy = false; }
  } const marked(state.busy);
  state.hasher.begin();
  write(state.hasher);
  return state.hasher.finish();
}

}  // namespace detail

/// SHA-256 of `bytes`. Thread-safe (one context per thread; a call made while
/// another digest is being computed on the same thread, from a codec, uses its own);
/// no context created after a thread's first call (see the design note on OpenSSL's
/// own per-message allocation). Throws sha256_error when OpenSSL fails.
[[nodiscard]] inline digest sha256_digest(std::span<const std::byte> bytes) {
  return detail::one_shot_digest(
      [bytes](detail::one_shot_hasher& hasher) { hasher.update(bytes); });
}
[[nodiscard]] inline digest sha256_digest(std::string_view text) {
  return sha256_digest(std::as_bytes(std::span(text)));
}

// ============================================================================
// content_codec: which bytes identify a value
// ============================================================================

/// A byte sink: where a codec writes a value's bytes (`sha256` is one).
template <class Sink>
concept byte_sink = requires(Sink& sink, std::span<const std::byte> bytes) {
  sink.update(bytes);
};

/// Customization point: `content_codec<T>::encode(const T&, Sink&)` writes the bytes
/// that identify a T to any byte_sink. Specialize it for your own types:
///
///     template <> struct interlock::content_codec<order> {
///       template <interlock::byte_sink Sink>
///       static void encode(const order& o, Sink& sink) {
///         interlock::encode_field(sink, o.id);       // one call per field that
///         interlock::encode_field(sink, o.items);    // makes up the value
///       }
///     };
///
/// Built-in rules (the encoding is injective: different values give different bytes):
/// - arithmetic and enum types: their bytes in little-endian order (floats by their
///   representation, so 0.0 and -0.0 differ; an x87 long double by its 10 value bytes,
///   not its padding);
/// - trivially copyable classes without padding (std::has_unique_object_representations):
///   their object representation, in the host's byte order (so a class holding a
///   pointer, a std::string_view or a std::span hashes the address, not what it points
///   to: give such a class its own codec);
/// - ranges (std::string, std::vector, std::span, std::array, ...): the elements one
///   after another, so a string or byte vector hashes exactly like its bytes;
/// - character arrays (string literals, char buffers): the string they hold, up to
///   the first NUL as std::string(buffer) reads it, so content_digest("abc") ==
///   content_digest(std::string("abc")), and a buffer filled by snprintf hashes its
///   text, not what lies after it (an array without a NUL: every character);
/// - std::pair, std::tuple: each member; std::optional: a presence byte, then the value.
/// Inside a composite (a field, an element of a range, a tuple member), a range is
/// preceded by its element count so that ("ab", "c") and ("a", "bc") differ:
/// `encode_field` applies that rule. A user codec's output must be self-delimiting
/// when its type is nested; writing every field through `encode_field` makes it so.
template <class T>
struct content_codec;

namespace detail {

template <class T>
concept raw_bytes_class = std::is_class_v<T> && std::is_trivially_copyable_v<T> &&
    std::has_unique_object_representations_v<T> && !std::ranges::range<T>;

template <class T>
concept padded_trivial_class = std::is_class_v<T> && std::is_trivially_copyable_v<T> &&
                               !std::has_unique_object_representations_v<T> &&
                               !std::ranges::range<T>;

template <class T>
concept scalar_content = std::is_arithmetic_v<T> || std::is_enum_v<T>;

template <class T>
struct is_pair_or_tuple : std::false_type {};
template <class A, class B>
struct is_pair_or_tuple<std::pair<A, B>> : std::true_type {};
template <class... Ts>
struct is_pair_or_tuple<std::tuple<Ts...>> : std::true_type {};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

/// The bytes of a scalar's object representation that hold its value. All of them,
/// except for the x87 80-bit long double (64-bit mantissa), which x86 stores in 12 or
/// 16 bytes: only its first 10 hold the value, the rest is padding whose contents are
/// indeterminate, so hashing it would give equal values different digests.
template <class Scalar>
constexpr std::size_t value_bytes() noexcept {
  if constexpr (std::is_same_v<Scalar, long double> &&
                std::numeric_limits<long double>::digits == 64 && sizeof(long double) > 10) {
    static_assert(std::endian::native == std::endian::little,
                  "interlock::content_codec: unsupported long double layout; specialize "
                  "content_codec for the type that holds it");
    return 10;
  } else {
    return sizeof(Scalar);
  }
}

template <byte_sink Sink, class Scalar>
void write_scalar(Sink& sink, const Scalar& value) {
  auto bytes = std::bit_cast<std::array<std::byte, sizeof(Scalar)>>(value);
  if constexpr (std::endian::native == std::endian::big && sizeof(Scalar) > 1) {
    std::ranges::reverse(bytes);
  }
  sink.update(std::span<const std::byte>(bytes.data(), value_bytes<Scalar>()));
}

/// Character types whose arrays are strings (a string literal's type is an array of
/// one of them).
template <class C>
concept text_char = std::is_same_v<C, char> || std::is_same_v<C, wchar_t> ||
    std::is_same_v<C, char8_t> || std::is_same_v<C, char16_t> || std::is_same_v<C, char32_t>;

template <class T>
struct is_text_array : std::false_type {};
template <text_char C, std::size_t N>
struct is_text_array<C[N]> : std::true_type {};

/// A character array (a string literal, a char buffer) as the string it holds: up to
/// its first NUL (all N characters when it has none), so that "abc" hashes like
/// std::string("abc") and a partly filled buffer like the text in it.
template <class C, std::size_t N>
constexpr std::basic_string_view<C> array_text(const C (&text)[N]) noexcept {
  std::size_t length = 0;
  while (length < N && text[length] != C{}) ++length;
  return {text, length};
}

/// True when a contiguous range of E can be hashed as one block of memory: its
/// bytes are exactly what element-by-element encoding would write. Only with E's
/// built-in codec (which says so with `object_bytes`): a user's codec for E is used
/// for every element.
template <class E>
inline constexpr bool memory_is_encoding =
    ((scalar_content<E> && !std::is_floating_point_v<E> && !std::is_same_v<E, bool> &&
      (sizeof(E) == 1 || std::endian::native == std::endian::little)) ||
     raw_bytes_class<E>)&&requires {
  content_codec<E>::object_bytes;
};

}  // namespace detail

/// True when T has a content codec (built in or user-provided).
template <class T>
concept has_content_codec = requires {
  sizeof(content_codec<T>);
};

/// Encodes `value` as a member of a composite (see content_codec). Use it for
/// the fields of your own codecs.
template <byte_sink Sink, class T>
void encode_field(Sink& sink, const T& value);

/// Encodes `value` as a whole message: what content_digest hashes.
template <byte_sink Sink, class T>
void encode_content(Sink& sink, const T& value) {
  if constexpr (detail::is_text_array<T>::value) {
    encode_content(sink, detail::array_text(value));
  } else if constexpr (has_content_codec<T>) {
    content_codec<T>::encode(value, sink);
  } else {
    static_assert(!detail::padded_trivial_class<T>,
                  "interlock::content_codec: this type has padding bytes (or floating-point "
                  "members) in its object representation, so equal values could hash "
                  "differently. Specialize interlock::content_codec<T> and write the fields "
                  "that identify a value with interlock::encode_field.");
    static_assert(detail::padded_trivial_class<T> || has_content_codec<T>,
                  "interlock::content_codec: no codec for this type. Specialize "
                  "interlock::content_codec<T> with a static encode(const T&, Sink&).");
  }
}

template <detail::scalar_content T>
struct content_codec<T> {
  static constexpr bool object_bytes = true;  // built in (see detail::memory_is_encoding)
  template <byte_sink Sink>
  static void encode(const T& value, Sink& sink) {
    if constexpr (std::is_same_v<T, bool>) {
      const auto byte = static_cast<std::byte>(value ? 1 : 0);
      sink.update(std::span<const std::byte>(&byte, 1));
    } else {
      detail::write_scalar(sink, value);
    }
  }
};

template <detail::raw_bytes_class T>
struct content_codec<T> {
  static constexpr bool object_bytes = true;  // built in (see detail::memory_is_encoding)
  template <byte_sink Sink>
  static void encode(const T& value, Sink& sink) {
    sink.update(std::as_bytes(std::span(&value, 1)));
  }
};

template <std::ranges::input_range R>
requires(!detail::raw_bytes_class<R> &&
         has_content_codec<
             std::remove_cvref_t<std::ranges::range_reference_t<R>>>) struct content_codec<R> {
  template <byte_sink Sink>
  static void encode(const R& range, Sink& sink) {
    using element = std::remove_cvref_t<std::ranges::range_reference_t<R>>;
    if constexpr (std::ranges::contiguous_range<const R> && detail::memory_is_encoding<element>) {
      sink.update(std::as_bytes(std::span(std::ranges::data(range), std::ranges::size(range))));
    } else {
      for (const auto& item : range) encode_field(sink, item);
    }
  }
};

template <class T>
requires detail::is_pair_or_tuple<T>::value struct content_codec<T> {
  template <byte_sink Sink>
  static void encode(const T& value, Sink& sink) {
    std::apply([&sink](const auto&... member) { (encode_field(sink, member), ...); }, value);
  }
};

template <class T>
requires detail::is_optional<T>::value struct content_codec<T> {
  template <byte_sink Sink>
  static void encode(const T& value, Sink& sink) {
    encode_field(sink, value.has_value());
    if (value) encode_field(sink, *value);
  }
};

template <byte_sink Sink, class T>
void encode_field(Sink& sink, const T& value) {
  if constexpr (detail::is_text_array<T>::value) {
    encode_field(sink, detail::array_text(value));  // its count without the NUL
  } else if constexpr (std::ranges::range<T> && !detail::raw_bytes_class<T>) {
    std::uint64_t count = 0;
    if constexpr (std::ranges::sized_range<const T>) {
      count = static_cast<std::uint64_t>(std::ranges::size(value));
    } else {
      for ([[maybe_unused]] const auto& item : value) ++count;
    }
    detail::write_scalar(sink, count);
    encode_content(sink, value);
  } else {
    encode_content(sink, value);
  }
}

/// SHA-256 of a value's content_codec encoding.
///
/// Thread-safe (one hashing context per thread). Progress: never blocks.
/// Complexity: linear in the encoded size. Throws sha256_error when OpenSSL fails,
/// and whatever the codec throws. Fails to compile for a type without a codec.
template <class T>
[[nodiscard]] digest content_digest(const T& value) {
  return detail::one_shot_digest(
      [&value](detail::one_shot_hasher& hasher) { encode_content(hasher, value); });
}

INTERLOCK_NAMESPACE_END

/// Hashes a digest by its first 8 bytes: SHA-256 output is already uniform.
template <>
struct std::hash<interlock::digest> {
  std::size_t operator()(const interlock::digest& d) const noexcept {
    std::size_t value = 0;
    std::memcpy(&value, d.bytes().data(), sizeof(value));
    return value;
  }
};

#endif  // INTERLOCK_SHA256_HPP
