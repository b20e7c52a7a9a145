// A consumer of interlock: builds against the package, the source tree or the
// single header, and checks one known digest.
#include <interlock/interlock.hpp>

#include <iostream>

int main() {
  const auto d = interlock::sha256_digest("abc");
  std::cout << "interlock " << interlock::version_string() << " sha256(abc)=" << d << '\n';
  const bool ok = d.to_hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  return ok ? 0 : 1;
}
