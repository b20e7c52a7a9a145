// SHA-256 and content_codec: NIST CAVP vectors, streaming equals one-shot, codec
// rules, digest hex round trips.
#include <interlock/sha256.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <vector>

namespace {

using interlock::digest;

std::vector<std::byte> bytes_from_hex(const std::string& hex) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

struct vector_file {
  struct entry {
    std::size_t length_bits = 0;
    std::string message_hex;
    std::string digest_hex;
  };
  std::vector<entry> entries;
  std::string seed_hex;
  std::vector<std::string> checkpoints;  // Monte Carlo: MD for COUNT 0..99
};

std::optional<std::filesystem::path> testdata_dir() {
  const std::filesystem::path dir = INTERLOCK_TESTDATA_DIR;
  if (dir.empty() || !std::filesystem::exists(dir / "sha256")) return std::nullopt;
  return dir / "sha256";
}

// Reads the `Key = value` lines of a CAVP .rsp file.
vector_file read_rsp(const std::filesystem::path& path) {
  std::ifstream in(path);
  vector_file file;
  vector_file::entry current;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq);
    const std::string value = line.substr(eq + 3);
    if (key == "Len") current.length_bits = std::stoul(value);
    if (key == "Msg") current.message_hex = value;
    if (key == "Seed") file.seed_hex = value;
    if (key == "MD") {
      current.digest_hex = value;
      if (file.seed_hex.empty()) {
        file.entries.push_back(current);
      } else {
        file.checkpoints.push_back(value);
      }
    }
  }
  return file;
}

void check_message_vectors(const char* name, std::size_t expected_count) {
  const auto dir = testdata_dir();
  if (!dir) {
    WARN("NIST SHA-256 vectors not found (INTERLOCK_TESTDATA_DIR=\""
         << INTERLOCK_TESTDATA_DIR << "\"): " << name << " skipped");
    return;
  }
  const auto file = read_rsp(*dir / name);
  REQUIRE(file.entries.size() == expected_count);
  for (const auto& entry : file.entries) {
    auto message = bytes_from_hex(entry.message_hex);
    message.resize(entry.length_bits / 8);
    INFO(name << " Len=" << entry.length_bits);
    CHECK(interlock::sha256_digest(message).to_hex() == entry.digest_hex);
  }
}

}  // namespace

TEST_CASE("NIST CAVP SHA-256 short messages", "[sha256][nist]") {
  check_message_vectors("SHA256ShortMsg.rsp", 65);
}

TEST_CASE("NIST CAVP SHA-256 long messages", "[sha256][nist]") {
  check_message_vectors("SHA256LongMsg.rsp", 64);
}

TEST_CASE("NIST CAVP SHA-256 Monte Carlo chain", "[sha256][nist]") {
  const auto dir = testdata_dir();
  if (!dir) {
    WARN("NIST SHA-256 vectors not found: Monte Carlo test skipped");
    return;
  }
  const auto file = read_rsp(*dir / "SHA256Monte.rsp");
  REQUIRE(file.checkpoints.size() == 100);
  auto seed = digest::from_hex(file.seed_hex);
  REQUIRE(seed.has_value());
  interlock::sha256 hasher;
  for (std::size_t j = 0; j < 100; ++j) {
    std::array<digest, 3> md{*seed, *seed, *seed};
    for (int i = 3; i < 1003; ++i) {
      hasher.update(md[0].as_span()).update(md[1].as_span()).update(md[2].as_span());
      md = {md[1], md[2], hasher.finish()};
    }
    INFO("checkpoint " << j);
    REQUIRE(md[2].to_hex() == file.checkpoints[j]);
    seed = md[2];
  }
}

TEST_CASE("known digests of short strings", "[sha256]") {
  CHECK(interlock::sha256_digest("").to_hex() ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(interlock::sha256_digest("abc").to_hex() ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("streaming in random chunk splits equals one-shot", "[sha256]") {
  std::mt19937_64 random(42);
  interlock::sha256 hasher;
  for (int round = 0; round < 200; ++round) {
    std::vector<std::byte> message(random() % 5000);
    for (auto& b : message) b = static_cast<std::byte>(random());
    const digest expected = interlock::sha256_digest(message);
    std::size_t offset = 0;
    while (offset < message.size()) {
      const std::size_t chunk = std::min<std::size_t>(random() % 300, message.size() - offset);
      hasher.update(std::span(message).subspan(offset, chunk));
      offset += chunk;
    }
    REQUIRE(hasher.finish() == expected);
  }
}

TEST_CASE("reset discards the message in progress; a moved hasher keeps working", "[sha256]") {
  interlock::sha256 hasher;
  hasher.update("garbage");
  hasher.reset();
  hasher.update("abc");
  interlock::sha256 moved = std::move(hasher);
  CHECK(moved.finish() == interlock::sha256_digest("abc"));
}

TEST_CASE("digest hex round-trips and malformed hex is rejected", "[sha256][digest]") {
  std::mt19937_64 random(7);
  for (int i = 0; i < 100; ++i) {
    const auto d = interlock::sha256_digest(std::to_string(random()));
    const auto text = d.to_hex();
    CHECK(text.size() == 64);
    CHECK(digest::from_hex(text) == d);
    std::string upper = text;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    CHECK(digest::from_hex(upper) == d);
  }
  const std::string good(64, 'a');
  CHECK(digest::from_hex(good).has_value());
  CHECK_FALSE(digest::from_hex("").has_value());
  CHECK_FALSE(digest::from_hex(good.substr(1)).has_value());
  CHECK_FALSE(digest::from_hex(good + "a").has_value());
  for (const char bad : {'g', 'G', ' ', '-', 'x', '\0', '/', ':', '@', '`'}) {
    std::string text = good;
    text[17] = bad;
    CHECK_FALSE(digest::from_hex(text).has_value());
  }
}

TEST_CASE("digest ordering, hashing and stream output", "[sha256][digest]") {
  const auto a = *digest::from_hex(std::string(63, '0') + "1");
  const auto b = *digest::from_hex("1" + std::string(63, '0'));
  CHECK(a < b);
  CHECK(digest{} < a);
  CHECK((a <=> a) == std::strong_ordering::equal);
  std::ostringstream out;
  out << b;
  CHECK(out.str() == b.to_hex());
  std::unordered_set<digest> set{a, b, a};
  CHECK(set.size() == 2);
  std::set<digest> ordered{b, a};
  CHECK(*ordered.begin() == a);
}

TEST_CASE("digests that differ in any one byte compare unequal", "[sha256][digest]") {
  const digest base = interlock::sha256_digest("abc");
  for (std::size_t i = 0; i < digest::size; ++i) {
    for (const unsigned flip : {0x01U, 0x80U}) {
      auto bytes = base.bytes();
      bytes[i] ^= static_cast<std::byte>(flip);
      const digest other(bytes);
      CHECK_FALSE(other == base);
      CHECK(other != base);
      CHECK(digest(bytes) == other);
    }
  }
  // The comparison is also a constant expression.
  constexpr digest zero{};
  constexpr digest one(digest::bytes_type{std::byte{1}});
  static_assert(zero == digest{});
  static_assert(zero != one);
}

namespace {
struct point {
  std::int32_t x;
  std::int32_t y;
};

struct padded_with_codec {
  std::uint8_t tag;
  std::uint64_t value;
};
}  // namespace

template <>
struct interlock::content_codec<padded_with_codec> {
  template <interlock::byte_sink Sink>
  static void encode(const padded_with_codec& v, Sink& sink) {
    interlock::encode_field(sink, v.tag);
    interlock::encode_field(sink, v.value);
  }
};

TEST_CASE("content_digest: strings and byte ranges hash as their bytes", "[sha256][codec]") {
  const auto abc = interlock::sha256_digest("abc");
  CHECK(interlock::content_digest(std::string("abc")) == abc);
  CHECK(interlock::content_digest(std::string_view("abc")) == abc);
  CHECK(interlock::content_digest(std::vector<char>{'a', 'b', 'c'}) == abc);
  const std::array<std::byte, 3> raw{std::byte{'a'}, std::byte{'b'}, std::byte{'c'}};
  CHECK(interlock::content_digest(std::span<const std::byte>(raw)) == abc);
  CHECK(interlock::content_digest(std::vector<std::uint8_t>{'a', 'b', 'c'}) == abc);
}

TEST_CASE("content_digest: scalars are little-endian, equal values equal digests",
          "[sha256][codec]") {
  const std::array<std::byte, 4> le{std::byte{0x04}, std::byte{0x03}, std::byte{0x02},
                                    std::byte{0x01}};
  CHECK(interlock::content_digest(std::uint32_t{0x01020304}) ==
        interlock::sha256_digest(std::span<const std::byte>(le)));
  CHECK(interlock::content_digest(42) == interlock::content_digest(42));
  CHECK(interlock::content_digest(42) != interlock::content_digest(43));
  CHECK(interlock::content_digest(true) != interlock::content_digest(false));
  CHECK(interlock::content_digest(0.0) != interlock::content_digest(-0.0));
  CHECK(interlock::content_digest(point{1, 2}) == interlock::content_digest(point{1, 2}));
  CHECK(interlock::content_digest(point{1, 2}) != interlock::content_digest(point{2, 1}));
  // A vector of ints hashes as the ints one after another.
  CHECK(interlock::content_digest(std::vector<int>{1, 2}) ==
        interlock::content_digest(std::array<int, 2>{1, 2}));
}

TEST_CASE("content_digest: composites are unambiguous", "[sha256][codec]") {
  using strings = std::vector<std::string>;
  CHECK(interlock::content_digest(strings{"ab", "c"}) !=
        interlock::content_digest(strings{"a", "bc"}));
  CHECK(interlock::content_digest(strings{"abc"}) != interlock::content_digest(strings{"abc", ""}));
  CHECK(interlock::content_digest(std::pair<std::string, std::string>{"ab", "c"}) !=
        interlock::content_digest(std::pair<std::string, std::string>{"a", "bc"}));
  CHECK(interlock::content_digest(std::optional<int>{}) !=
        interlock::content_digest(std::optional<int>{0}));
  CHECK(interlock::content_digest(std::tuple<int, std::string>{1, "x"}) ==
        interlock::content_digest(std::tuple<int, std::string>{1, "x"}));
  const std::map<std::string, int> m1{{"a", 1}, {"b", 2}};
  const std::map<std::string, int> m2{{"a", 1}, {"b", 3}};
  CHECK(interlock::content_digest(m1) != interlock::content_digest(m2));
  CHECK(interlock::content_digest(padded_with_codec{1, 2}) ==
        interlock::content_digest(padded_with_codec{1, 2}));
  CHECK(interlock::content_digest(padded_with_codec{1, 2}) !=
        interlock::content_digest(padded_with_codec{2, 1}));
}

TEST_CASE("different values give different digests over many random values", "[sha256][codec]") {
  std::mt19937_64 random(3);
  std::set<std::uint64_t> values;
  std::set<digest> digests;
  while (values.size() < 10000) {
    const auto v = random();
    if (values.insert(v).second) digests.insert(interlock::content_digest(v));
  }
  CHECK(digests.size() == values.size());
}

TEST_CASE("one-shot hashing is independent per thread", "[sha256][threads]") {
  constexpr int threads = 4;
  std::vector<std::thread> workers;
  std::atomic<int> mismatches{0};
  const auto expected = interlock::sha256_digest("interlock");
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (interlock::sha256_digest("interlock") != expected) mismatches.fetch_add(1);
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK(mismatches.load() == 0);
}

namespace {
struct throws_midway {
  int value;
};
}  // namespace

template <>
struct interlock::content_codec<throws_midway> {
  template <interlock::byte_sink Sink>
  static void encode(const throws_midway& v, Sink& sink) {
    interlock::encode_field(sink, v.value);
    throw std::runtime_error("codec failed half-way");
  }
};

TEST_CASE("a codec that throws half-way leaves the next digest correct", "[sha256][codec]") {
  const auto expected = interlock::sha256_digest("abc");
  CHECK_THROWS_AS(interlock::content_digest(throws_midway{7}), std::runtime_error);
  CHECK(interlock::sha256_digest("abc") == expected);
  CHECK_THROWS_AS(interlock::content_digest(throws_midway{8}), std::runtime_error);
  CHECK(interlock::content_digest(std::string("abc")) == expected);
}

namespace {
/// A document identified by its title and the digest of its body: the codec hashes a
/// field with content_digest while the outer digest is being computed.
struct document {
  std::string title;
  std::string body;
};
}  // namespace

template <>
struct interlock::content_codec<document> {
  template <interlock::byte_sink Sink>
  static void encode(const document& d, Sink& sink) {
    interlock::encode_field(sink, d.title);
    const interlock::digest body = interlock::content_digest(d.body);  // nested
    interlock::encode_field(sink, body.bytes());
  }
};

TEST_CASE("a codec may call content_digest inside an outer content_digest", "[sha256][codec]") {
  // Both used to share the thread's one hashing context: the nested call restarted it,
  // so the outer digest covered only what came after, and documents with different
  // titles got the same digest.
  const document a{"A", "body"};
  const document b{"B", "body"};
  CHECK(interlock::content_digest(a) != interlock::content_digest(b));
  interlock::sha256 reference;  // a private hasher: what the outer digest must be
  interlock::content_codec<document>::encode(a, reference);
  CHECK(interlock::content_digest(a) == reference.finish());
  CHECK(interlock::sha256_digest("abc") == interlock::content_digest(std::string("abc")));
}

TEST_CASE("string literals hash like the strings they hold", "[sha256][codec]") {
  // A character array used to hash its terminating NUL too, so an idempotency request
  // passed as "amount=10" mismatched the same request passed as a std::string.
  CHECK(interlock::content_digest("abc") == interlock::content_digest(std::string("abc")));
  CHECK(interlock::content_digest("abc") == interlock::sha256_digest("abc"));
  CHECK(interlock::content_digest(u8"abc") == interlock::content_digest(std::u8string(u8"abc")));
  CHECK(interlock::content_digest(std::tuple<const char(&)[3], int>{"ab", 1}) ==
        interlock::content_digest(std::tuple<std::string, int>{"ab", 1}));
  const char unterminated[3] = {'a', 'b', 'c'};  // no NUL: every character counts
  CHECK(interlock::content_digest(unterminated) == interlock::sha256_digest("abc"));
  const unsigned char bytes[4] = {'a', 'b', 'c', 0};  // bytes, not text: all of them
  CHECK(interlock::content_digest(bytes) != interlock::sha256_digest("abc"));
  // A buffer filled by snprintf holds its text up to the first NUL; what lies after
  // it (stale bytes) used to be hashed too.
  char buffer[64];
  std::memset(buffer, 'x', sizeof buffer);
  std::snprintf(buffer, sizeof buffer, "amount=%d", 10);
  CHECK(interlock::content_digest(buffer) == interlock::content_digest(std::string(buffer)));
  CHECK(interlock::content_digest(buffer) == interlock::sha256_digest("amount=10"));
}

namespace {
// A padding-free class whose codec writes only its identity, not its cache field.
struct cached_id {
  std::uint32_t id;
  std::uint32_t cache;
};
}  // namespace

template <>
struct interlock::content_codec<cached_id> {
  template <interlock::byte_sink Sink>
  static void encode(const cached_id& value, Sink& sink) {
    interlock::encode_field(sink, value.id);
  }
};

TEST_CASE("a user codec is used for every element, also in contiguous ranges", "[sha256][codec]") {
  // The raw-memory shortcut for vectors used to bypass the user's codec.
  const std::vector<cached_id> a{{1, 100}, {2, 200}};
  const std::vector<cached_id> b{{1, 7}, {2, 8}};
  CHECK(interlock::content_digest(a) == interlock::content_digest(b));
  const std::list<cached_id> c(a.begin(), a.end());
  CHECK(interlock::content_digest(a) == interlock::content_digest(c));
  // Built-in element codecs still take the shortcut and agree with element-wise.
  const std::vector<std::uint32_t> ids{1, 2};
  const std::list<std::uint32_t> id_list{1, 2};
  CHECK(interlock::content_digest(ids) == interlock::content_digest(id_list));
}

TEST_CASE("a moved-from sha256 starts afresh and never carries another message", "[sha256]") {
  interlock::sha256 a;
  a.update("half a message");
  interlock::sha256 b = std::move(a);
  a.update("abc");  // NOLINT(bugprone-use-after-move): moved-from is usable
  CHECK(a.finish() == interlock::sha256_digest("abc"));
  interlock::sha256 moved;
  (void)interlock::sha256(std::move(moved));
  moved.reset();  // NOLINT(bugprone-use-after-move): used to crash on a null context
  CHECK(moved.finish() == interlock::sha256_digest(""));

  interlock::sha256 x;
  x.update("old");
  interlock::sha256 y;
  y.update("new");
  x = std::move(y);
  y.update("abc");  // NOLINT(bugprone-use-after-move): used to continue x's "old"
  CHECK(y.finish() == interlock::sha256_digest("abc"));
  CHECK(x.finish() == interlock::sha256_digest("new"));
  b.update(" and the rest");
  CHECK(b.finish() == interlock::sha256_digest("half a message and the rest"));
}

TEST_CASE("long double hashes its value, not its padding", "[sha256][codec]") {
  // x87 long double occupies 16 bytes on x86-64 but only 10 hold the value; the other
  // 6 are whatever was in memory, so equal values used to hash differently.
  alignas(long double) unsigned char dirty[sizeof(long double)];
  alignas(long double) unsigned char clean[sizeof(long double)];
  std::memset(dirty, 0xAB, sizeof dirty);
  std::memset(clean, 0x00, sizeof clean);
  const long double value = 3.0L;
  std::memcpy(dirty, &value, interlock::detail::value_bytes<long double>());
  std::memcpy(clean, &value, interlock::detail::value_bytes<long double>());
  long double from_dirty = 0;
  long double from_clean = 0;
  std::memcpy(&from_dirty, dirty, sizeof from_dirty);  // padding copied along
  std::memcpy(&from_clean, clean, sizeof from_clean);
  CHECK(from_dirty == from_clean);
  CHECK(interlock::content_digest(from_dirty) == interlock::content_digest(from_clean));
  CHECK(interlock::content_digest(3.0L) != interlock::content_digest(4.0L));
}

namespace {
/// A thread_local that hashes in its destructor. Constructed before the thread's
/// first digest, it is destroyed after the thread's hasher (reverse order).
struct hashes_when_destroyed {
  std::atomic<bool>* matched = nullptr;
  ~hashes_when_destroyed() {
    if (matched != nullptr) {
      matched->store(interlock::content_digest(std::string("abc")).to_hex() ==
                     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
  }
};
}  // namespace

TEST_CASE("a digest from a thread_local destroyed after the thread's hasher is correct",
          "[sha256]") {
  // It used the hasher's freed OpenSSL contexts: a crash, or a wrong digest.
  std::atomic<bool> matched{false};
  std::thread worker([&matched] {
    static thread_local hashes_when_destroyed late;  // constructed first: destroyed last
    late.matched = &matched;
    (void)interlock::content_digest(std::string("warm up"));  // creates the thread's hasher
  });
  worker.join();
  CHECK(matched.load());
}
