// sha256: content digests (ETags) and a content_codec for a user type.
//
// The digest of a string is the SHA-256 of its bytes; a composite type says which
// bytes identify it with a content_codec, and encode_field keeps the encoding
// unambiguous, so equal orders hash equally and different orders differently.
//
// Exits 0 when everything happened as expected, 1 otherwise.
#include <interlock/sha256.hpp>

#include <cstdint>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

// [readme:content_codec]
struct order {
  std::uint32_t id;
  std::string customer;
  std::vector<std::uint64_t> items;
};

template <>
struct interlock::content_codec<order> {
  template <interlock::byte_sink Sink>
  static void encode(const order& o, Sink& sink) {
    interlock::encode_field(sink, o.id);        // encode_field keeps composites unambiguous:
    interlock::encode_field(sink, o.customer);  // ("ab","c") and ("a","bc") hash differently
    interlock::encode_field(sink, o.items);
  }
};
// [/readme:content_codec]

namespace {

int failures = 0;

void expect(bool condition, const char* what) {
  std::cout << (condition ? "ok   " : "FAIL ") << what << '\n';
  if (!condition) ++failures;
}

}  // namespace

int main() {
  // [readme:sha256_digest]
  auto etag = interlock::content_digest(std::string("hello"));  // == sha256_digest("hello")
  std::cout << etag << '\n';                                    // 64 hex characters
  // [/readme:sha256_digest]

  expect(etag == interlock::sha256_digest("hello"),
         "a string's digest is the SHA-256 of its bytes");
  expect(etag.to_hex() == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
         "the digest matches the known SHA-256 of \"hello\"");
  const auto parsed = interlock::digest::from_hex(etag.to_hex());
  expect(parsed && *parsed == etag, "from_hex reads back what to_hex wrote");
  expect(!interlock::digest::from_hex("not hex"), "malformed hex is an empty optional");

  const order a{7, "ada", {1, 2, 3}};
  const order same{7, "ada", {1, 2, 3}};
  const order other{7, "ada", {1, 2, 4}};
  expect(interlock::content_digest(a) == interlock::content_digest(same),
         "equal orders have equal digests");
  expect(interlock::content_digest(a) != interlock::content_digest(other),
         "different orders have different digests");
  expect(interlock::content_digest(std::pair{std::string("ab"), std::string("c")}) !=
             interlock::content_digest(std::pair{std::string("a"), std::string("bc")}),
         "(\"ab\",\"c\") and (\"a\",\"bc\") hash differently");

  std::cout << (failures == 0 ? "all as expected" : "UNEXPECTED RESULTS") << '\n';
  return failures == 0 ? 0 : 1;
}
