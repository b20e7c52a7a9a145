// Must NOT compile: `padded` has 7 padding bytes after `flag` and no content_codec,
// so hashing its object representation would let equal values differ.
#include <interlock/sha256.hpp>

#include <cstdint>

struct padded {
  std::uint8_t flag;
  std::uint64_t value;
};

int main() {
  const auto d = interlock::content_digest(padded{1, 2});
  return static_cast<int>(d.bytes()[0]);
}
