// interlock/redis/versioned.hpp: a value with a version number in Redis, committed
// optimistically by every process that shares the server.
//
// Design note. interlock::versioned<T> stops lost updates between threads;
// redis::versioned<T> does the same between processes: read() returns {value,
// version}, try_commit(expected_version, desired) commits only if no other commit
// happened since that version (atomically, in one Lua script), and a conflict carries
// the current value and version so the caller can retry without another read.
// update(fn, policy) is that loop under a retry_policy (exponential backoff with
// jitter by default: a remote store should not be hammered).
//
// Storage: one Redis hash, p + "ver:" + key, with fields `v` (the value, through
// result_codec<T>) and `ver` (decimal). A missing hash is the constructor's initial
// value at version 1 (nothing is written until the first commit), so every process
// must construct it with the same initial value. Versions are Lua numbers (doubles) on
// the server: exact up to 2^53 commits. The hash has no expiry and must not be lost:
// where Redis drops it (a restart without persistence, FLUSHDB, a failover to a replica
// that had not received it, eviction under an allkeys-* maxmemory-policy) the value is
// back to the initial one at version 1, and a caller holding an older version number
// may commit against it. Run Redis with persistence and noeviction (or volatile-*).
//
// The commit script: HMGET ver, v; the current version is `ver`, or 1 when the hash is
// missing; if it equals the expected version, HSET v = desired, ver = version + 1 and
// return {1, version + 1}; otherwise return {0, version, v}. The check and the write
// are one atomic step on the server.
//
// Thread-safety: every member function is thread-safe (each call borrows its own
// connection). Progress: blocking (round trips); update is lock-free as a system
// (every conflict means another commit succeeded) and sleeps between attempts.
// Failures: redis_error when Redis cannot be reached or answers with an error (a commit
// whose reply was lost may or may not have happened: read again), and what the codec
// or fn throws. Memory ordering: commits are totally ordered by their versions; a read
// that returns version n sees the value committed as n.
#ifndef INTERLOCK_REDIS_VERSIONED_HPP
#define INTERLOCK_REDIS_VERSIONED_HPP

#include <interlock/config.hpp>
#include <interlock/redis/codec.hpp>
#include <interlock/redis/connection.hpp>
#include <interlock/retry.hpp>
#include <interlock/versioned.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN
namespace redis {

template <class T, class Codec = result_codec<T>>
class versioned {
 public:
  using value_type = T;
  using snapshot = versioned_snapshot<T>;
  static constexpr version_type initial_version = 1;

  /// Committed with the new `version`, or a conflict with the current `version` and
  /// value in `current` (the same result type as the in-process versioned<T>).
  using commit_result = versioned_commit<T>;

  enum class update_status { committed, gave_up };

  struct update_result {
    update_status status;
    snapshot current;  // committed: what was committed; gave up: the last value seen
    std::uint32_t attempts;
    std::chrono::nanoseconds elapsed;
    retry_status retry = retry_status::succeeded;
    [[nodiscard]] bool committed() const noexcept { return status == update_status::committed; }
    explicit operator bool() const noexcept { return committed(); }
  };

  /// The default policy of update: exponential backoff, 100 us to 10 ms, full jitter,
  /// no limit on attempts.
  static retry_policy default_policy() noexcept {
    return retry_policy::exponential(std::chrono::microseconds(100), std::chrono::milliseconds(10),
                                     jitter_kind::full);
  }

  versioned(connection_options options, std::string key, T initial = T{})
      : versioned(std::make_shared<connection_pool>(std::move(options)), std::move(key),
                  std::move(initial)) {}
  versioned(std::shared_ptr<connection_pool> pool, std::string key, T initial = T{})
      : pool_(std::move(pool)), key_(pool_->key("ver:") + key), initial_(std::move(initial)) {}
  versioned(const versioned&) = delete;
  versioned& operator=(const versioned&) = delete;

  /// The current value and its version (one HMGET: never torn). Throws redis_error
  /// and what the codec throws.
  [[nodiscard]] snapshot read() const {
    auto c = pool_->acquire();
    reply r = c->command({"HMGET", key_, "ver", "v"});
    if (r.size() != 2)
      throw redis_error(redis_error::error_kind::server, "HMGET", "unexpected reply");
    if (r[0].is_nil()) return snapshot{initial_, initial_version};
    return snapshot{Codec::decode(r[1].str()), detail::to_u64(r[0].str())};
  }

  /// Commits `desired` as expected_version + 1 if the current version is
  /// expected_version (atomically, see the design note). Thread-safe; one round trip.
  [[nodiscard]] commit_result try_commit(version_type expected_version, const T& desired) {
    static const script& s = detail::lasting_script(
        "local cur = redis.call('HMGET', KEYS[1], 'ver', 'v')\n"
        "local ver = tonumber(cur[1]) or 1\n"
        "if ver == tonumber(ARGV[1]) then\n"
        "  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'ver', string.format('%d', ver + 1))\n"
        "  return {1, ver + 1}\n"
        "end\n"
        "return {0, ver, cur[2]}\n");
    const std::string expected = std::to_string(expected_version);
    const std::string bytes = Codec::encode(desired);
    auto c = pool_->acquire();
    reply r = c->eval(s, {key_}, {expected, bytes});
    if (r.size() < 2)
      throw redis_error(redis_error::error_kind::server, "EVALSHA", "unexpected reply");
    const auto version = static_cast<version_type>(r[1].integer());
    if (r[0].integer() == 1) return commit_result{true, version, std::nullopt};
    if (r.size() < 3 || r[2].is_nil()) return commit_result{false, version, initial_};
    return commit_result{false, version, Codec::decode(r[2].str())};
  }

  /// The read-modify-write loop: fn(const T&) -> T on the current value, committed on
  /// top of the version read; a conflict retries on the conflict's value under
  /// `policy`. fn may run several times. Returns committed (the committed snapshot) or
  /// gave_up (bounded policies only). Throws what fn, the codec or Redis throws.
  template <class Fn, class Env = system_retry_environment>
  requires std::is_invocable_r_v<T, Fn&, const T&> update_result
  update(Fn fn, const retry_policy& policy = default_policy(), Env&& env = Env{}) {
    std::optional<snapshot> seen;
    auto attempt = [&]() -> std::optional<snapshot> {
      if (!seen) seen.emplace(read());
      T next = fn(std::as_const(seen->value));
      commit_result r = try_commit(seen->version, next);
      if (r.committed) return snapshot{std::move(next), r.version};
      seen.emplace(snapshot{std::move(*r.current), r.version});
      return std::nullopt;
    };
    auto out = retry_on_conflict(policy, attempt, std::forward<Env>(env));
    if (out) {
      return update_result{update_status::committed, std::move(*out.result), out.attempts,
                           out.elapsed, out.status};
    }
    return update_result{update_status::gave_up, std::move(*seen), out.attempts, out.elapsed,
                         out.status};
  }

  /// The Redis key of the hash.
  [[nodiscard]] const std::string& redis_key() const noexcept { return key_; }

 private:
  std::shared_ptr<connection_pool> pool_;
  std::string key_;
  T initial_;
};

}  // namespace redis
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_REDIS_VERSIONED_HPP
