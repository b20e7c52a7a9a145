#!/usr/bin/env bash
# interlock quick start. Works on a fresh Debian 12 machine.
#
#   ./run.sh demo          build (release) and run the demo
#   ./run.sh test          build and run the whole test suite (preset `dev`)
#   ./run.sh test --all    the same, then the tsan, asan and clang presets (what CI runs)
#   ./run.sh bench [args]  build (release) and run interlock_bench
#
# Missing Debian packages are installed with apt-get when run as root; otherwise the
# exact apt-get line is printed and the script stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

mode="${1:-}"
shift || true

base_packages=(cmake ninja-build g++ libssl-dev pkg-config)
test_packages=(catch2 libbenchmark-dev libtbb-dev libhiredis-dev redis-server)
all_packages=(clang libclang-rt-14-dev)

ensure_packages() {
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "interlock needs these Debian packages. Install them, then run this again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ThreadSanitizer in GCC 12 cannot map its shadow memory under the high ASLR entropy of
# recent kernels; running the tests without address randomization avoids that.
without_aslr() {
  if setarch "$(uname -m)" -R true 2>/dev/null; then
    setarch "$(uname -m)" -R "$@"
  else
    "$@"
  fi
}

workflow() {
  local preset="$1"
  echo "==== preset: $preset ===="
  cmake --preset "$preset"
  if [ "$preset" = tsan ]; then
    # The build runs the test binaries too (Catch2 lists their tests after linking).
    without_aslr cmake --build --preset "$preset"
    without_aslr ctest --preset "$preset"
  else
    cmake --build --preset "$preset"
    ctest --preset "$preset"
  fi
}

case "$mode" in
  demo)
    ensure_packages "${base_packages[@]}"
    cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DINTERLOCK_BUILD_TESTS=OFF -DINTERLOCK_BUILD_BENCHMARKS=OFF
    cmake --build build/demo --target interlock_demo
    ./build/demo/examples/interlock_demo
    ;;
  test)
    ensure_packages "${base_packages[@]}" "${test_packages[@]}"
    if [ "${1:-}" = "--all" ]; then
      ensure_packages "${all_packages[@]}"
      for preset in dev tsan asan clang; do workflow "$preset"; done
    else
      workflow dev
    fi
    ;;
  bench)
    ensure_packages "${base_packages[@]}" "${test_packages[@]}"
    cmake --preset release >/dev/null
    cmake --build --preset release --target interlock_bench
    ./build/release/bench/interlock_bench "$@"
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
