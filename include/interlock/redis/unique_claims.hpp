// interlock/redis/unique_claims.hpp: claims that succeed for exactly one caller per key
// across processes (the double-spend / nullifier case), with the claims in Redis.
//
// Design note. interlock::unique_claims grants a key to one caller inside a process;
// redis::unique_claims does it for every process talking to one server. A claim is one
// Redis string, p + "claim:" + key, whose value is the owner (possibly empty):
//   try_claim: SET key owner NX [PX ttl]: one round trip; Redis grants it to exactly
//              one caller until it is released or expires.
//   release(key):        DEL.
//   release(key, owner): a script that deletes only when the stored owner is `owner`
//                        (compare-and-delete: an owner never frees someone else's
//                        claim, e.g. one granted after its own expired).
//   owner_of:  GET.
// Claims without a ttl never expire (they live until released or the server loses its
// data: run Redis with persistence when a claim must survive a restart).
//
// A lost reply. When try_claim throws redis_error (io), its SET may have run on the
// server with the reply lost on the way back, so the claim may be taken, by this
// call. A retry then returns false. With a unique owner (a request id, a transaction
// id), owner_of(key) == owner tells that the claim is this caller's after all; without
// one, nothing can tell, and a claim without a ttl stays taken until released. Pass a
// unique owner where that matters.
//
// Thread-safety: every member function is thread-safe (each call borrows its own
// connection). Progress: blocking, one round trip. Failures: redis_error when Redis
// cannot be reached or answers with an error; a refused claim is a value (false).
// Memory ordering: a successful try_claim is ordered after every earlier release of the
// key (Redis runs commands one at a time).
#ifndef INTERLOCK_REDIS_UNIQUE_CLAIMS_HPP
#define INTERLOCK_REDIS_UNIQUE_CLAIMS_HPP

#include <interlock/config.hpp>
#include <interlock/redis/connection.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN
namespace redis {

class unique_claims {
 public:
  explicit unique_claims(connection_options options)
      : unique_claims(std::make_shared<connection_pool>(std::move(options))) {}
  explicit unique_claims(std::shared_ptr<connection_pool> pool) : pool_(std::move(pool)) {}
  unique_claims(const unique_claims&) = delete;
  unique_claims& operator=(const unique_claims&) = delete;

  /// Claims `key` for `owner` if nobody holds it; with a ttl the claim expires after it
  /// (clamped to [1 ms, about 34.8 years]). Returns true for exactly one caller per key
  /// until release or expiry. Thread-safe; one round trip. Throws redis_error (after an
  /// I/O error the claim may have been taken: see "A lost reply" above).
  [[nodiscard]] bool try_claim(std::string_view key, std::string_view owner = {},
                               std::optional<std::chrono::milliseconds> ttl = std::nullopt) {
    auto c = pool_->acquire();
    const std::string ck = claim_key(key);
    if (ttl) {
      const std::string ms = detail::ttl_text(*ttl);
      return !c->command({"SET", ck, owner, "NX", "PX", ms}).is_nil();
    }
    return !c->command({"SET", ck, owner, "NX"}).is_nil();
  }

  /// Releases `key` whoever holds it. Returns true when there was a claim.
  bool release(std::string_view key) {
    auto c = pool_->acquire();
    const std::string ck = claim_key(key);
    return c->command({"DEL", ck}).integer() == 1;
  }

  /// Releases `key` only if `owner` holds it (compare-and-delete). Returns true when it
  /// did.
  bool release(std::string_view key, std::string_view owner) {
    auto c = pool_->acquire();
    const std::string ck = claim_key(key);
    return c->eval(detail::compare_and_delete_script(), {ck}, {owner}).integer() == 1;
  }

  /// The owner of `key`'s claim, or empty when it is not claimed.
  [[nodiscard]] std::optional<std::string> owner_of(std::string_view key) {
    auto c = pool_->acquire();
    const std::string ck = claim_key(key);
    reply r = c->command({"GET", ck});
    if (r.is_nil()) return std::nullopt;
    return std::string(r.str());
  }

  /// The Redis key of `key`'s claim.
  [[nodiscard]] std::string claim_key(std::string_view key) const {
    std::string k = pool_->key("claim:");
    k.append(key);
    return k;
  }

 private:
  std::shared_ptr<connection_pool> pool_;
};

}  // namespace redis
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_REDIS_UNIQUE_CLAIMS_HPP
