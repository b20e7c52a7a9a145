// interlock/redis/idempotency_store.hpp: exactly-once execution per idempotency key
// across processes, with the records in Redis.
//
// Design note. interlock::idempotency_guard runs the first call for a key and gives
// every duplicate its result, inside one process. When retries of one request can reach
// any replica, the record must be shared: redis::idempotency_guard<Result> keeps it in
// Redis and applies the same state machine (interlock::decide_idempotent over
// interlock::idempotency_record_state) and returns the same interlock::run_outcome with
// the same interlock::run_status values.
//
// The record of key k is one Redis string, p + "idem:" + k (p = the key prefix):
//   in progress:  "P" + fingerprint (64 hex) + executor token     PX = in_progress_ttl
//   completed:    "C" + fingerprint (64 hex) + encoded result     PX = time_to_live
//   failed:       "F" + fingerprint (64 hex) + error message      PX = time_to_live
//                 (op ran, but its result could not be stored; see Failures)
//   absent / expired: no key.
// The fingerprint is the hex of interlock::content_digest(request) (or the request
// itself when it is an interlock::digest); the result passes through
// result_codec<Result> (<interlock/redis/codec.hpp>).
//
// The scripts (atomic on the server):
//   claim:    GET the record; if there is none, SET the in-progress record with its
//             expiry and return nil (this caller executes); if it is this call's own
//             in-progress record (same executor token), return nil too; else return
//             the record. Finding the record and creating it are one step, so exactly
//             one caller per key executes while the record lives.
//   complete: SET the completed record (PX time_to_live) only if the record is still
//             this executor's in-progress record; returns 0 otherwise.
//   abandon:  DEL the record only if it is still this executor's in-progress record
//             (a failed op: the next call runs again).
//
// Crashes. The in-progress record expires after `in_progress_ttl`, so a key whose
// executor died becomes runnable again after it (the next caller executes). The other
// side of that coin: an op that runs longer than in_progress_ttl loses its record, a
// duplicate may then execute too, and its own completion is not stored (complete
// returns 0; the call still returns executed with its result). Choose in_progress_ttl
// above the longest op.
//
// Waiting. A concurrent duplicate (same fingerprint, record in progress) polls the
// record with backoff (`poll_policy`'s delays) until it is completed (status joined,
// the stored result), disappears (the executor failed or died: the waiter tries to
// claim it and may execute), or the deadline of run_for/run_until passes (status
// in_progress). run() waits without a deadline; that wait ends because an in-progress
// record always either completes or expires. With concurrency_policy::reject a
// duplicate returns in_progress at once.
//
// Failures. An exception from op abandons the record, so a retry runs again, and
// reaches the caller. An exception after op returned (encoding its result, or
// allocating it) is different: op's effect has happened, so the record is completed as
// failed ("F", with the error's message) and later calls with the same request throw
// result_not_stored instead of running op again, until it expires or is forgotten; the
// executing caller gets the original exception. Failures are not stored
// (failure_policy::store of the in-process guard has no cross-process form: an
// exception object cannot be replayed in another process). A claim whose reply was
// lost (an I/O error) is sent once more, on a new connection, with the same executor
// token: if the first one ran, the second finds this call's own record and executes,
// so a lost reply does not leave the key blocked for in_progress_ttl. A redis_error at
// the claim (both tries failed, or a server error) means nothing ran; at completion it means op ran
// but its result may not be stored (the in-progress record then expires, and a retry after that
// runs op again: the store cannot tell "ran, result lost" from "crashed"). A connection that the
// server closed while op ran (its `timeout`, a proxy) is not such a failure: it is reconnected
// before completing (see "Idle connections" in <interlock/redis/connection.hpp>). A
// result that cannot be decoded throws what the codec throws.
//
// Thread-safety: every member function is thread-safe; each call borrows its own
// connection. Progress: blocking (round trips; waiting polls).
//
// Memory ordering: the result a caller receives is the bytes the executor stored;
// anything the executor wrote to the same Redis server before completing is visible to
// every caller that receives its result.
#ifndef INTERLOCK_REDIS_IDEMPOTENCY_STORE_HPP
#define INTERLOCK_REDIS_IDEMPOTENCY_STORE_HPP

#include <interlock/config.hpp>
#include <interlock/detail/deadline.hpp>
#include <interlock/idempotency_guard.hpp>
#include <interlock/redis/codec.hpp>
#include <interlock/redis/connection.hpp>
#include <interlock/retry.hpp>
#include <interlock/sha256.hpp>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

INTERLOCK_NAMESPACE_BEGIN
namespace redis {

/// Thrown by redis::idempotency_guard::run (and run_for, run_until) when the key's
/// record says an earlier call ran the operation but could not store its result
/// (encoding it threw): running it again would repeat its effect. what() carries the
/// original error's message. forget(key) drops the record.
class result_not_stored : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Retention and behaviour of a redis::idempotency_guard.
struct idempotency_options {
  /// How long a completed record is kept. Like in_progress_ttl, clamped to [1 ms, about
  /// 34.8 years] (see "Expiry times" in <interlock/redis/connection.hpp>).
  std::chrono::milliseconds time_to_live = std::chrono::hours(24);
  /// How long an in-progress record lives without completing (a crashed executor's
  /// key becomes runnable after it). Keep it above the longest operation.
  std::chrono::milliseconds in_progress_ttl = std::chrono::seconds(30);
  concurrency_policy on_concurrent = concurrency_policy::wait;
  /// Delays between polls of a waiting duplicate (only the delays are used).
  retry_policy poll_policy = retry_policy::exponential(
      std::chrono::microseconds(500), std::chrono::milliseconds(20), jitter_kind::full);
};

template <class Result, class Codec = result_codec<Result>>
class idempotency_guard {
 public:
  using result_type = Result;
  using outcome = run_outcome<Result>;

  explicit idempotency_guard(connection_options options, idempotency_options idem = {})
      : idempotency_guard(std::make_shared<connection_pool>(std::move(options)), std::move(idem)) {}
  explicit idempotency_guard(std::shared_ptr<connection_pool> pool, idempotency_options idem = {})
      : pool_(std::move(pool)), options_(std::move(idem)) {}
  idempotency_guard(const idempotency_guard&) = delete;
  idempotency_guard& operator=(const idempotency_guard&) = delete;

  [[nodiscard]] const idempotency_options& options() const noexcept { return options_; }

  /// Runs op() -> Result for the first call with `key` (see run_status for the other
  /// cases); a concurrent duplicate waits without a deadline (or is rejected, per
  /// policy). Thread-safe. Blocking. Throws what op throws (the record is abandoned),
  /// redis_error, and what hashing the request or the codec throws.
  template <class Request, class Op>
  outcome run(std::string_view key, const Request& request, Op&& op) {
    return run_impl(key, request_fingerprint(request), op, std::nullopt);
  }

  /// As run, but a concurrent duplicate waits at most `timeout`, then returns
  /// run_status::in_progress.
  template <class Request, class Rep, class Period, class Op>
  outcome run_for(std::string_view key, const Request& request,
                  std::chrono::duration<Rep, Period> timeout, Op&& op) {
    return run_impl(key, request_fingerprint(request), op,
                    ::interlock::detail::deadline_after(timeout));
  }

  /// As run_for, with a deadline on any clock (converted once to the time left,
  /// saturating: time_point<C, hours>::max() waits as long as it takes).
  template <class Request, class DeadlineClock, class Duration, class Op>
  outcome run_until(std::string_view key, const Request& request,
                    const std::chrono::time_point<DeadlineClock, Duration>& deadline, Op&& op) {
    return run_impl(key, request_fingerprint(request), op,
                    ::interlock::detail::steady_deadline_of(deadline));
  }

  /// Drops the completed (or failed) record of `key` so the next call runs; false when
  /// there is none or it is in progress (never dropped). Blocking: one round trip.
  bool forget(std::string_view key) {
    auto c = pool_->acquire();
    const std::string rk = record_key(key);
    return c->eval(forget_script(), {rk}, {}).integer() == 1;
  }

  /// The Redis key of `key`'s record.
  [[nodiscard]] std::string record_key(std::string_view key) const {
    std::string k = pool_->key("idem:");
    k.append(key);
    return k;
  }

 private:
  static constexpr std::size_t header = 1 + 64;  // state byte + fingerprint hex

  static const script& claim_script() {
    static const script& s = detail::lasting_script(
        "local v = redis.call('GET', KEYS[1])\n"
        "if v and v ~= ARGV[1] then return v end\n"
        "if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end\n"
        "return false\n");
    return s;
  }
  static const script& complete_script() {
    static const script& s = detail::lasting_script(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
        "  return 1\n"
        "end\n"
        "return 0\n");
    return s;
  }
  static const script& forget_script() {
    static const script& s = detail::lasting_script(
        "local v = redis.call('GET', KEYS[1])\n"
        "if v and string.sub(v, 1, 1) ~= 'P' then return redis.call('DEL', KEYS[1]) end\n"
        "return 0\n");
    return s;
  }

  struct parsed {
    idempotency_record_state state;
    digest fingerprint;
    std::string_view body;
  };
  static parsed parse(std::string_view record) {
    std::optional<digest> fp;
    if (record.size() >= header) fp = digest::from_hex(record.substr(1, 64));
    if (!fp || (record[0] != 'P' && record[0] != 'C' && record[0] != 'F')) {
      throw redis_error(redis_error::error_kind::server, "idempotency record",
                        "malformed record (not written by interlock)");
    }
    const auto state = record[0] == 'P'   ? idempotency_record_state::in_progress
                       : record[0] == 'C' ? idempotency_record_state::completed
                                          : idempotency_record_state::failed;
    return parsed{state, *fp, record.substr(header)};
  }

  outcome replay(std::string_view body, run_status status) const {
    return outcome{status, std::make_shared<const Result>(Codec::decode(body))};
  }

  template <class Op>
  outcome run_impl(std::string_view key, const digest& fingerprint, Op& op,
                   std::optional<std::chrono::steady_clock::time_point> deadline) {
    const std::string rk = record_key(key);
    std::string in_progress;
    in_progress.reserve(header + 40);
    in_progress.push_back('P');
    in_progress.append(fingerprint.to_hex());
    in_progress.append(detail::unique_token());
    const std::string ttl = detail::ttl_text(options_.in_progress_ttl);

    auto c = pool_->acquire();
    backoff_schedule schedule(options_.poll_policy);
    auto random = [] { return system_retry_environment::random(); };
    bool waited = false;
    for (;;) {
      reply r = claim(*c, rk, in_progress, ttl);
      if (r.is_nil()) return execute(*c, rk, in_progress, op);
      const parsed p = parse(r.str());
      switch (decide_idempotent(p.state, p.fingerprint, fingerprint, options_.on_concurrent)) {
        case idempotency_action::execute:  // not reached: an absent record was claimed
        case idempotency_action::replay:
          if (p.state == idempotency_record_state::failed) {
            throw result_not_stored(
                "interlock::redis::idempotency_guard: the operation ran, but its result "
                "could not be stored: " +
                std::string(p.body));
          }
          return replay(p.body, waited ? run_status::joined : run_status::replayed);
        case idempotency_action::mismatch:
          return outcome{run_status::mismatch, nullptr};
        case idempotency_action::reject:
          return outcome{run_status::in_progress, nullptr};
        case idempotency_action::join:
          break;
      }
      // In progress elsewhere: poll until it completes, disappears or the deadline.
      auto delay = schedule.next(random);
      if (deadline) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= *deadline) return outcome{run_status::in_progress, nullptr};
        delay = std::min<std::chrono::nanoseconds>(delay, *deadline - now);
      }
      waited = true;
      if (delay.count() > 0) {
        std::this_thread::sleep_for(delay);
      } else {
        std::this_thread::yield();
      }
    }
  }

  /// Runs the claim script; after an I/O error, once more with the same record (see
  /// "Failures" above: a claim that ran finds its own record and executes).
  static reply claim(connection& c, const std::string& rk, const std::string& in_progress,
                     const std::string& ttl) {
    try {
      return c.eval(claim_script(), {rk}, {in_progress, ttl});
    } catch (const redis_error& e) {
      if (e.kind() != redis_error::error_kind::io) throw;
    }
    return c.eval(claim_script(), {rk}, {in_progress, ttl});
  }

  template <class Op>
  outcome execute(connection& c, const std::string& rk, const std::string& in_progress, Op& op) {
    const std::string ttl = detail::ttl_text(options_.time_to_live);
    std::shared_ptr<const Result> result;
    std::string completed;
    bool op_returned = false;
    try {
      decltype(auto) value = op();
      op_returned = true;
      result = std::make_shared<const Result>(std::forward<decltype(value)>(value));
      completed = record_of('C', in_progress, Codec::encode(*result));
    } catch (...) {
      if (op_returned) {
        store_failure(c, rk, in_progress, ttl, std::current_exception());
      } else {
        try {
          (void)c.eval(detail::compare_and_delete_script(), {rk}, {in_progress});
        } catch (...) {  // redis_error: the in-progress record expires by itself
        }
      }
      throw;
    }
    (void)c.eval(complete_script(), {rk}, {in_progress, completed, ttl});
    return outcome{run_status::executed, std::move(result)};
  }

  /// `state` + the fingerprint of `in_progress` + `body`.
  static std::string record_of(char state, std::string_view in_progress, std::string_view body) {
    std::string record;
    record.reserve(header + body.size());
    record.push_back(state);
    record.append(in_progress.substr(1, 64));
    record.append(body);
    return record;
  }

  /// Completes this executor's record as failed (see "Failures"): best effort. If it
  /// cannot be written, the in-progress record expires and a retry runs op again.
  static void store_failure(connection& c, const std::string& rk, const std::string& in_progress,
                            const std::string& ttl, std::exception_ptr failure) noexcept {
    try {
      std::string message = "unknown exception";
      try {
        std::rethrow_exception(std::move(failure));
      } catch (const std::exception& e) {
        message = e.what();
      } catch (...) {
      }
      (void)c.eval(complete_script(), {rk},
                   {in_progress, record_of('F', in_progress, message), ttl});
    } catch (...) {  // redis_error, bad_alloc: the in-progress record expires by itself
    }
  }

  std::shared_ptr<connection_pool> pool_;
  idempotency_options options_;
};

}  // namespace redis
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_REDIS_IDEMPOTENCY_STORE_HPP
