// interlock/redis/keyed_mutex.hpp: a per-key lock shared by every process that talks
// to one Redis server: leases with fencing tokens, renewal while the work runs, and
// deadlock-free multi-key locking.
//
// Design note. interlock::keyed_mutex serializes the threads of one process; once a
// service runs as several replicas, "one signup for the last seat at a time" needs a
// lock that lives in a shared store. redis::keyed_mutex has the same member names
// (lock, try_lock, try_lock_for, try_lock_until, with_lock, with_lock_for, lock_many,
// try_lock_many, try_lock_many_for), so moving a key from one process to many is a
// change of constructor. Keys are strings.
//
// A lock is a lease, not a mutex: it is held for `lease_time` unless renewed. If the
// holder dies (SIGKILL, a lost host) the key becomes free when the lease expires, with
// no cleanup. The price: a holder that stalls longer than its lease (a GC pause, a
// stopped VM) may still believe it holds the key after another process was granted it.
// Fencing tokens make that harmless for stores that check them: every grant gets a
// number from Redis itself, strictly larger than every earlier grant's for that key,
// and a store that remembers the highest token it accepted per key rejects the stale
// holder's write (see the tests for a ten-line Lua store that does it).
//
// Redis keys (with `p` = connection_options::key_prefix, the braces keep both keys in
// one Redis Cluster hash slot):
//   p + "lock:{" + t + "}"            the lease: value = the holder's random token, PX = lease
//   p + "lock:{" + t + "}:fence"      the grant counter (no expiry: tokens must never go
//                                     back, so it outlives every lease; one small integer
//                                     per key ever locked)
// where t is the key itself, or "{" + key when the key is empty or starts with '{' or
// '}' (an empty hash tag would hash the two names apart; escaping '{' keeps distinct
// keys distinct). Redis Cluster is not supported otherwise; the tag only keeps the
// scripts' two keys together.
//
// The scripts (each runs atomically on the server):
//   acquire: SET lease token NX PX ttl; if that set it, INCR fence and return the new
//            count (the fencing token), else return 0. Taking the lock and numbering
//            the grant are one step, so no two grants can share or swap numbers.
//   release: DEL lease only if its value is still our token (compare-and-delete): a
//            holder whose lease expired and was granted to another never frees the
//            new holder's lock.
//   renew:   PEXPIRE lease ttl only if its value is still our token.
//
// Waiting. A lock that is held is polled: after each refused attempt the caller sleeps
// a delay from `lock_options::wait_policy` (a retry_policy: exponential backoff with
// jitter, so competing processes spread out), capped so it never sleeps past its
// deadline. Only the delays of the policy are used; the deadline (or none, for lock())
// bounds the wait. There is no queue: waiters are not served in order.
//
// Renewal. with_lock / with_lock_for start a renewal thread that extends the lease
// every `renew_every` (lease_time / 3 by default) while fn runs. When a renewal finds
// the lease gone (expired and taken, or deleted), or cannot reach Redis for a whole
// lease, the lease is lost: fn is not interrupted (it may check guard.lease_lost()),
// and after fn returns with_lock releases what is left and throws `lease_lost` instead
// of returning fn's result. A plain guard (lock(), try_lock...) is not renewed: call
// renew() yourself or keep the work shorter than the lease.
//
// Renewal timing. A lease term is counted from when its acquire or renewal was sent,
// not from when the reply came, and the renewal thread sets lease_lost() as soon as a
// failed renewal leaves the lease too little time to reach the next attempt (Redis
// unreachable for lease_time - renew_every), not only once the lease is over.
//
// Multi-key locking sorts the keys and collapses duplicates, then takes them one by one
// in that order, as interlock::keyed_mutex does: every process takes any two keys in
// the same order, so no cycle of waiters can form. The try and timed forms release
// what they took when one key fails. While it waits for a later key, it renews every
// key it already holds once half its lease has passed (and waits at most a quarter of
// a lease between attempts), so a long wait never returns a key whose lease lapsed; if
// one lapsed anyway (a renewal later than half a lease), it releases everything and
// starts over. The guard it returns holds every key for at least half a lease.
//
// What the fencing tokens rely on: the grant counter must survive. Redis loses it
// with the rest of its data in a restart without persistence, a FLUSHDB, a failover to
// a replica that had not received it, or eviction under an allkeys-* maxmemory-policy
// (the counter has no expiry, so volatile-* policies and noeviction keep it). Then the
// count starts again at 1 and tokens go back. Run Redis with persistence and
// noeviction (or volatile-*) where fencing matters.
//
// Failures: every call that talks to Redis throws redis_error when the server cannot be
// reached or answers with an error (a lock call then holds nothing: if the acquire's
// reply was lost, the lease it may have set expires by itself). A pooled connection
// that the server closed while idle (its `timeout`, a proxy) is reconnected before use,
// so unlock() after a long critical section does not fail for that reason (see "Idle
// connections" in <interlock/redis/connection.hpp>). Expected outcomes are values: a refused
// try_lock and a timed-out try_lock_for return an empty guard.
//
// Thread-safety: every member function of keyed_mutex is thread-safe (each call borrows
// its own connection from the pool). A guard is used by one thread at a time.
// Re-entrancy: locking a key that the calling process already holds waits for the
// lease like anyone else (a lease has no thread identity).
//
// Memory ordering: Redis runs commands one at a time, so everything a holder wrote to
// the same Redis server before its release (or before its lease expired) is visible to
// the next holder. Writes to other stores are ordered only by fencing tokens.
//
// When not to use it: inside one process (interlock::keyed_mutex is thousands of times
// faster), or where a stalled holder's late write must be impossible and the target
// store cannot check fencing tokens (then no lease lock is safe).
#ifndef INTERLOCK_REDIS_KEYED_MUTEX_HPP
#define INTERLOCK_REDIS_KEYED_MUTEX_HPP

#include <interlock/config.hpp>
#include <interlock/detail/deadline.hpp>
#include <interlock/keyed_mutex.hpp>
#include <interlock/redis/connection.hpp>
#include <interlock/retry.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN
namespace redis {

/// Thrown by keyed_mutex::with_lock / with_lock_for after fn returned, when the lease
/// was lost while fn ran (see the design note): fn's effects may have overlapped
/// another holder's.
class lease_lost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Lease and waiting settings of a redis::keyed_mutex.
struct lock_options {
  /// How long a grant lasts unless renewed (clamped to [1 ms, about 34.8 years]; see
  /// "Expiry times" in <interlock/redis/connection.hpp>).
  std::chrono::milliseconds lease_time{10000};
  /// Delays between attempts while a key is held (only the delays are used; the
  /// caller's deadline bounds the wait).
  retry_policy wait_policy = retry_policy::exponential(
      std::chrono::microseconds(200), std::chrono::milliseconds(20), jitter_kind::full);
  /// Renewal period of with_lock (0: lease_time / 3).
  std::chrono::milliseconds renew_every{0};
};

class keyed_mutex {
 public:
  /// Ownership of one key's lease. Movable, not copyable. Destroying (or unlock()ing)
  /// a guard releases the lease if it is still this grant's; the destructor swallows a
  /// redis_error (the lease then expires by itself). Thread-safety: one thread at a
  /// time, except that with_lock's renewal thread calls renew() while fn runs (fn must
  /// not unlock or move the guard). A guard refers to its keyed_mutex: release it (or
  /// let it go) before the keyed_mutex is destroyed.
  class guard {
   public:
    guard() noexcept = default;
    guard(guard&& other) noexcept
        : mutex_(std::exchange(other.mutex_, nullptr)),
          key_(std::exchange(other.key_, {})),
          token_(std::exchange(other.token_, {})),
          fence_(std::exchange(other.fence_, 0)),
          requested_at_(other.requested_at_),
          lost_(other.lost_.load(std::memory_order_relaxed)) {}  // one thread owns both
    guard& operator=(guard&& other) noexcept {
      if (this != &other) {
        release_quietly();
        mutex_ = std::exchange(other.mutex_, nullptr);
        key_ = std::exchange(other.key_, {});
        token_ = std::exchange(other.token_, {});
        fence_ = std::exchange(other.fence_, 0);
        requested_at_ = other.requested_at_;
        // Relaxed: a moved guard belongs to one thread (see the class comment).
        lost_.store(other.lost_.load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
      return *this;
    }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
    ~guard() { release_quietly(); }

    /// Releases the lease if it is still this grant's (compare-and-delete). Returns
    /// true when it was, false when the lease had expired or been taken (the work done
    /// under it may have overlapped another holder's). The guard is empty afterwards
    /// (no key, fencing token 0), also when it throws redis_error (then the lease
    /// expires by itself). A no-op returning false on an empty guard. Blocking: one
    /// round trip.
    bool unlock() {
      if (mutex_ == nullptr) return false;
      keyed_mutex* m = std::exchange(mutex_, nullptr);
      fence_ = 0;
      const std::string key = std::exchange(key_, {});
      const std::string token = std::exchange(token_, {});
      return m->release(key, token);
    }

    /// Extends the lease to lease_time from now if it is still this grant's. Returns
    /// false when it is not (lost). Throws redis_error. Blocking: one round trip.
    /// Precondition: owns_lock().
    bool renew() const {
      INTERLOCK_ASSERT(mutex_ != nullptr, "redis::keyed_mutex guard: renew() on an empty guard");
      return mutex_->renew(key_, token_);
    }

    [[nodiscard]] bool owns_lock() const noexcept { return mutex_ != nullptr; }
    explicit operator bool() const noexcept { return owns_lock(); }
    /// This grant's fencing token (0 for an empty guard): larger than every earlier
    /// grant's token for the same key, across all processes.
    [[nodiscard]] std::uint64_t fencing_token() const noexcept { return fence_; }
    /// The key held (empty for an empty guard: default-constructed, moved from or
    /// unlocked).
    [[nodiscard]] const std::string& key() const noexcept { return key_; }
    /// True once with_lock's renewal found the lease lost, or could not reach Redis in
    /// time to keep it (see "Renewal timing" above). Relaxed-free: an acquire
    /// load pairing with the renewal thread's release store.
    [[nodiscard]] bool lease_lost() const noexcept { return lost_.load(std::memory_order_acquire); }

   private:
    friend class keyed_mutex;
    guard(keyed_mutex* m, std::string key, std::string token, std::uint64_t fence,
          std::chrono::steady_clock::time_point requested_at)
        : mutex_(m),
          key_(std::move(key)),
          token_(std::move(token)),
          fence_(fence),
          requested_at_(requested_at) {}
    void release_quietly() noexcept {
      try {
        (void)unlock();
      } catch (...) {  // redis_error, bad_alloc: the lease expires by itself
      }
    }
    keyed_mutex* mutex_ = nullptr;
    std::string key_;
    std::string token_;
    std::uint64_t fence_ = 0;
    // When the acquire that granted this lease was sent: its term starts no earlier.
    std::chrono::steady_clock::time_point requested_at_{};
    std::atomic<bool> lost_{false};
  };

  /// Ownership of several keys (lock_many). unlock() releases them in reverse order.
  class multi_guard {
   public:
    multi_guard() noexcept = default;
    multi_guard(multi_guard&&) noexcept = default;
    multi_guard& operator=(multi_guard&& other) noexcept {
      if (this != &other) {
        release_quietly();
        held_ = std::move(other.held_);
        other.held_.clear();
      }
      return *this;
    }
    ~multi_guard() { release_quietly(); }
    /// Releases every key; true when every lease was still ours. Throws redis_error
    /// from the first failing release, after trying the others.
    bool unlock() {
      bool all = true;
      std::optional<redis_error> first;
      for (auto it = held_.rbegin(); it != held_.rend(); ++it) {
        try {
          all = it->unlock() && all;
        } catch (const redis_error& e) {
          if (!first) first.emplace(e);
        }
      }
      held_.clear();
      if (first) throw *first;
      return all;
    }
    [[nodiscard]] bool owns_lock() const noexcept { return !held_.empty(); }
    explicit operator bool() const noexcept { return owns_lock(); }
    [[nodiscard]] std::size_t size() const noexcept { return held_.size(); }
    /// The fencing token of `key`'s grant, or 0 when not held. O(size()).
    [[nodiscard]] std::uint64_t fencing_token(std::string_view key) const noexcept {
      for (const auto& g : held_) {
        if (g.key() == key) return g.fencing_token();
      }
      return 0;
    }

   private:
    friend class keyed_mutex;
    void release_quietly() noexcept {
      try {
        (void)unlock();
      } catch (...) {  // the leases expire by themselves
      }
    }
    std::vector<guard> held_;
  };

  /// A lock over the server of `options` (the mutex owns its connection pool).
  explicit keyed_mutex(connection_options options, lock_options lock = {})
      : keyed_mutex(std::make_shared<connection_pool>(std::move(options)), std::move(lock)) {}
  /// A lock sharing `pool` with other primitives.
  explicit keyed_mutex(std::shared_ptr<connection_pool> pool, lock_options lock = {})
      : pool_(std::move(pool)), options_(std::move(lock)) {
    options_.lease_time =
        std::clamp(options_.lease_time, std::chrono::milliseconds(1), detail::max_ttl);
    if (options_.renew_every <= std::chrono::milliseconds(0)) {
      options_.renew_every = std::max(options_.lease_time / 3, std::chrono::milliseconds(1));
    }
  }
  keyed_mutex(const keyed_mutex&) = delete;
  keyed_mutex& operator=(const keyed_mutex&) = delete;

  [[nodiscard]] const lock_options& options() const noexcept { return options_; }
  [[nodiscard]] connection_pool& pool() const noexcept { return *pool_; }

  /// One attempt: the lease if `key` is free, an empty guard if it is held.
  /// Thread-safe. Blocking: one round trip. Throws redis_error.
  [[nodiscard]] guard try_lock(std::string_view key) {
    auto c = pool_->acquire();
    return attempt(*c, key);
  }

  /// Waits until `key` is granted. Thread-safe. Blocking (polls with backoff, without
  /// a deadline). Throws redis_error.
  [[nodiscard]] guard lock(std::string_view key) {
    return acquire_until(key, std::optional<std::chrono::steady_clock::time_point>{});
  }

  /// As lock, but gives up (empty guard) after `timeout`.
  template <class Rep, class Period>
  [[nodiscard]] guard try_lock_for(std::string_view key,
                                   const std::chrono::duration<Rep, Period>& timeout) {
    return try_lock_until(key, ::interlock::detail::deadline_after(timeout));
  }

  /// As lock, but gives up (empty guard) at `deadline`.
  template <class Clock, class Duration>
  [[nodiscard]] guard try_lock_until(std::string_view key,
                                     const std::chrono::time_point<Clock, Duration>& deadline) {
    return acquire_until(key, std::optional<std::chrono::steady_clock::time_point>(
                                  ::interlock::detail::steady_deadline_of(deadline)));
  }

  /// Locks `key`, runs fn (fn(guard&) when it accepts one, else fn()) while a renewal
  /// thread extends the lease, releases it and returns fn's result. Throws lease_lost
  /// after fn when the lease was lost while fn ran, what fn throws (after releasing),
  /// and redis_error.
  template <class Fn>
  decltype(auto) with_lock(std::string_view key, Fn&& fn) {
    guard g = lock(key);
    return run_renewed(g, fn);
  }

  /// As with_lock, but throws interlock::lock_timeout when `key` is not granted within
  /// `timeout`.
  template <class Rep, class Period, class Fn>
  decltype(auto) with_lock_for(std::string_view key,
                               const std::chrono::duration<Rep, Period>& timeout, Fn&& fn) {
    guard g = try_lock_for(key, timeout);
    if (!g) {
      throw lock_timeout(
          "interlock::redis::keyed_mutex: the key was not locked within the timeout");
    }
    return run_renewed(g, fn);
  }

  /// Locks every key of `keys` (sorted, duplicates collapsed), waiting as long as it
  /// takes. Throws redis_error (releasing what it took). Complexity O(n log n) plus one
  /// acquisition per distinct key.
  template <class Range>
  [[nodiscard]] multi_guard lock_many(const Range& keys) {
    return acquire_many(keys, std::optional<std::chrono::steady_clock::time_point>{}, false);
  }
  /// One attempt per key, in order; empty when one is held (releasing the others).
  template <class Range>
  [[nodiscard]] multi_guard try_lock_many(const Range& keys) {
    return acquire_many(keys, std::optional<std::chrono::steady_clock::time_point>{}, true);
  }
  /// As lock_many, but gives up after `timeout` for the whole set (empty result).
  template <class Range, class Rep, class Period>
  [[nodiscard]] multi_guard try_lock_many_for(const Range& keys,
                                              const std::chrono::duration<Rep, Period>& timeout) {
    return acquire_many(keys, ::interlock::detail::deadline_after(timeout), false);
  }

  /// The Redis key that holds `key`'s lease (for inspection and tests).
  [[nodiscard]] std::string lease_key(std::string_view key) const {
    std::string k = pool_->key("lock:{");
    if (needs_tag_escape(key)) k.push_back('{');
    k.append(key).append("}");
    return k;
  }
  /// The Redis key of `key`'s grant counter.
  [[nodiscard]] std::string fence_key(std::string_view key) const {
    return lease_key(key) + ":fence";
  }

 private:
  static const script& acquire_script() {
    static const script& s = detail::lasting_script(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
        "  return redis.call('INCR', KEYS[2])\n"
        "end\n"
        "return 0\n");
    return s;
  }
  static const script& renew_script() {
    static const script& s = detail::lasting_script(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
        "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
        "end\n"
        "return 0\n");
    return s;
  }

  std::string ttl_text() const { return detail::ttl_text(options_.lease_time); }

  /// Whether `key` needs a '{' in front inside the hash tag: an empty key, or one that
  /// starts with '}', would make the tag empty (Redis Cluster then hashes the whole
  /// name, putting the lease and the fence in different slots); a key that starts with
  /// '{' is escaped too, so that distinct keys keep distinct names.
  static bool needs_tag_escape(std::string_view key) noexcept {
    return key.empty() || key.front() == '}' || key.front() == '{';
  }

  guard attempt(connection& c, std::string_view key) {
    std::string token = detail::unique_token();
    const std::string lk = lease_key(key);
    const std::string fk = lk + ":fence";
    const std::string ttl = ttl_text();
    const auto requested_at = std::chrono::steady_clock::now();
    reply r = c.eval(acquire_script(), {lk, fk}, {token, ttl});
    const long long fence = r.integer();
    if (fence <= 0) return guard{};
    return guard(this, std::string(key), std::move(token), static_cast<std::uint64_t>(fence),
                 requested_at);
  }

  bool release(const std::string& key, const std::string& token) {
    auto c = pool_->acquire();
    const std::string lk = lease_key(key);
    return c->eval(detail::compare_and_delete_script(), {lk}, {token}).integer() == 1;
  }

  bool renew(const std::string& key, const std::string& token) {
    auto c = pool_->acquire();
    const std::string lk = lease_key(key);
    const std::string ttl = ttl_text();
    return c->eval(renew_script(), {lk}, {token, ttl}).integer() == 1;
  }

  /// Between the attempts of a plain wait: nothing to keep alive, no delay cap.
  struct nothing_held {
    bool operator()() const noexcept { return true; }
  };

  /// Polls `key` until granted (or `deadline`: empty guard). Between attempts it calls
  /// keep_alive(), and gives up (empty guard) when that returns false; the delay
  /// between attempts is at most max_delay.
  template <class KeepAlive = nothing_held>
  guard acquire_until(std::string_view key,
                      std::optional<std::chrono::steady_clock::time_point> deadline,
                      KeepAlive&& keep_alive = {},
                      std::chrono::nanoseconds max_delay = std::chrono::nanoseconds::max()) {
    auto c = pool_->acquire();
    backoff_schedule schedule(options_.wait_policy);
    auto random = [] { return system_retry_environment::random(); };
    for (;;) {
      if (guard g = attempt(*c, key)) return g;
      if (!keep_alive()) return guard{};
      auto delay = std::min<std::chrono::nanoseconds>(schedule.next(random), max_delay);
      if (deadline) {
        const auto now = std::chrono::steady_clock::now();
        if (now >= *deadline) return guard{};
        delay = std::min<std::chrono::nanoseconds>(delay, *deadline - now);
      }
      if (delay.count() > 0) {
        std::this_thread::sleep_for(delay);
      } else {
        std::this_thread::yield();
      }
    }
  }

  template <class Range>
  multi_guard acquire_many(const Range& keys,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           bool single_attempt) {
    std::vector<std::string> sorted;
    for (const auto& k : keys) sorted.emplace_back(std::string_view(k));
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    for (;;) {
      multi_guard out;
      std::vector<std::chrono::steady_clock::time_point> term_start;  // per held lease
      out.held_.reserve(sorted.size());
      term_start.reserve(sorted.size());
      bool lapsed = false;
      auto keep_alive = [&] {
        lapsed = lapsed || !renew_aging(out.held_, term_start);
        return !lapsed;
      };
      for (const auto& k : sorted) {
        guard g = single_attempt ? try_lock(k)
                                 : acquire_until(k, deadline, keep_alive, options_.lease_time / 4);
        if (!g) break;
        term_start.push_back(g.requested_at_);
        out.held_.push_back(std::move(g));
      }
      if (out.held_.size() == sorted.size() && keep_alive()) return out;
      // Refused, timed out, or a lease lapsed: `out` releases what it took.
      if (!lapsed || single_attempt) return multi_guard{};
      if (deadline && std::chrono::steady_clock::now() >= *deadline) return multi_guard{};
    }
  }

  /// Renews each lease of `held` whose term (term_start, when its acquire or last
  /// renewal was sent) began at least half a lease ago. False when one was no longer
  /// ours (it lapsed, and may have been granted to another). Throws redis_error.
  bool renew_aging(std::vector<guard>& held,
                   std::vector<std::chrono::steady_clock::time_point>& term_start) {
    for (std::size_t i = 0; i < held.size(); ++i) {
      const auto now = std::chrono::steady_clock::now();
      if (now - term_start[i] < options_.lease_time / 2) continue;
      if (!held[i].renew()) return false;
      term_start[i] = now;
    }
    return true;
  }

  /// Extends g's lease every renew_every until stopped; marks g lost when a renewal
  /// finds the lease gone or Redis stayed unreachable for a whole lease.
  class renewer {
   public:
    renewer(keyed_mutex& m, guard& g)
        : mutex_(m), guard_(g), thread_([this](std::stop_token st) { loop(st); }) {}
    renewer(const renewer&) = delete;
    renewer& operator=(const renewer&) = delete;
    ~renewer() {
      thread_.request_stop();
      thread_.join();
    }

   private:
    void loop(const std::stop_token& st) {
      // The current term began when the grant (then each renewal) was sent.
      auto last_renewed = guard_.requested_at_;
      const auto lease = mutex_.options_.lease_time;
      const auto period = mutex_.options_.renew_every;
      std::mutex mu;
      std::condition_variable_any cv;
      std::unique_lock<std::mutex> lock(mu);
      for (;;) {
        // Sleeps one period; wakes early (returning) when with_lock asks it to stop.
        (void)cv.wait_for(lock, st, period, [] { return false; });
        if (st.stop_requested()) return;
        bool lost = false;
        const auto sent = std::chrono::steady_clock::now();
        try {
          if (guard_.renew()) {
            last_renewed = sent;
          } else {
            lost = true;
          }
        } catch (...) {
          // redis_error: try again next period, unless the lease may lapse before that.
          lost = std::chrono::steady_clock::now() + period >= last_renewed + lease;
        }
        if (lost) {
          // (1) release: pairs with the acquire load in guard::lease_lost().
          guard_.lost_.store(true, std::memory_order_release);
          return;
        }
      }
    }
    keyed_mutex& mutex_;
    guard& guard_;
    std::jthread thread_;  // last: starts after the references are set
  };

  template <class Fn>
  decltype(auto) run_renewed(guard& g, Fn& fn) {
    using result_type = decltype(invoke_with(g, fn));
    std::optional<renewer> r;
    r.emplace(*this, g);
    auto finish = [&]() {
      r.reset();                        // joins the renewal thread
      const std::string key = g.key();  // unlock() empties the guard
      auto lost = [&key] {
        return lease_lost("interlock::redis::keyed_mutex: the lease of '" + key +
                          "' was lost while fn ran");
      };
      if (g.lease_lost()) {
        // Already lost (perhaps because Redis is unreachable): releasing is best
        // effort, and what the caller learns is lease_lost, not the release's error.
        g.release_quietly();
        throw lost();
      }
      if (!g.unlock()) throw lost();  // gone by the time of the release
    };
    try {
      if constexpr (std::is_void_v<result_type>) {
        invoke_with(g, fn);
        finish();
      } else {
        result_type result = invoke_with(g, fn);
        finish();
        return result;
      }
    } catch (const lease_lost&) {
      throw;
    } catch (...) {
      r.reset();
      g.release_quietly();
      throw;
    }
  }

  template <class Fn>
  static decltype(auto) invoke_with(guard& g, Fn& fn) {
    if constexpr (std::is_invocable_v<Fn&, guard&>) {
      return fn(g);
    } else {
      return fn();
    }
  }

  std::shared_ptr<connection_pool> pool_;
  lock_options options_;
};

}  // namespace redis
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_REDIS_KEYED_MUTEX_HPP
