// sha256_<size>/interlock against sha256_<size>/openssl_evp: raw EVP_Digest with the
// algorithm fetched once, the call a user would otherwise make.
#include <interlock/sha256.hpp>

#include <benchmark/benchmark.h>

#include "bench_threads.hpp"

#include <openssl/evp.h>

#include <cstddef>
#include <vector>

namespace {

std::vector<std::byte> message_of(std::size_t size) {
  std::vector<std::byte> message(size);
  for (std::size_t i = 0; i < size; ++i) message[i] = static_cast<std::byte>(i * 131 + 7);
  return message;
}

void run_interlock(benchmark::State& state, std::size_t size) {
  const auto message = message_of(size);
  for (auto _ : state) {
    benchmark::DoNotOptimize(interlock::sha256_digest(message));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}

void run_openssl_evp(benchmark::State& state, std::size_t size) {
  const auto message = message_of(size);
  const EVP_MD* md = interlock::detail::sha256_algorithm();  // fetched once
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  for (auto _ : state) {
    if (EVP_Digest(message.data(), message.size(), out, &length, md, nullptr) != 1) {
      state.SkipWithError("EVP_Digest failed");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}

void sha256_64B_interlock(benchmark::State& s) { run_interlock(s, 64); }
void sha256_64B_openssl_evp(benchmark::State& s) { run_openssl_evp(s, 64); }
void sha256_16KiB_interlock(benchmark::State& s) { run_interlock(s, 16 * 1024); }
void sha256_16KiB_openssl_evp(benchmark::State& s) { run_openssl_evp(s, 16 * 1024); }

}  // namespace

BENCHMARK(sha256_64B_interlock)
    ->Name("sha256_64B/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(sha256_64B_openssl_evp)
    ->Name("sha256_64B/openssl_evp")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(sha256_16KiB_interlock)
    ->Name("sha256_16KiB/interlock")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
BENCHMARK(sha256_16KiB_openssl_evp)
    ->Name("sha256_16KiB/openssl_evp")
    ->ThreadRange(1, interlock_bench::max_threads)
    ->UseRealTime();
