// interlock/redis/connection.hpp: a small, explicit Redis client over hiredis: one
// connection (RAII over redisContext), a pool of them, owning replies, Lua scripts run
// by EVALSHA with a fallback to EVAL, and the one exception type of the Redis stores.
//
// Design note. The Redis-backed primitives (<interlock/redis/keyed_mutex.hpp>,
// idempotency_store.hpp, unique_claims.hpp, versioned.hpp) need a handful of
// synchronous commands with binary-safe arguments and a clear failure story, not a
// full client. `connection` sends one command at a time (redisCommandArgv, so keys and
// values may hold any byte, NUL included) and returns an owning `reply`. Every setting
// is explicit in `connection_options` (host, port, database, password, timeouts, key
// prefix); nothing is read from the environment.
//
// Failures. A lost connection, a refused or timed-out connect, a command timeout, a
// protocol error and an error reply from the server all throw `redis_error`, whose
// what() names the call that met it (e.g. "EVALSHA", "connect 127.0.0.1:6379") and
// whose kind() says which of the two it was (io: the connection is unusable and was
// closed; server: Redis answered with an error). A failed call is never reported as a
// success. After an I/O error the connection is closed and the next call reconnects
// (connect, AUTH, SELECT), so a restarted server is picked up without any action; a
// command whose reply was lost may or may not have run on the server: the primitives
// are written so that repeating or abandoning such a command is safe, or say how to
// tell what happened (see each one).
// Commands are never re-sent after an error.
//
// Idle connections. A connection that sat idle (in a pool, or held across a long
// operation) may have been closed by the server (its `timeout` setting), a proxy or a
// restart. Before each command the connection checks its socket without blocking (one
// poll()) and reconnects when the server has closed it, so such a command does not fail
// without having reached Redis. A close that races with the command itself still fails
// it (an I/O error, as above).
//
// SIGPIPE. hiredis writes with write(), which raises SIGPIPE when the server has closed
// the connection (a restart, CLIENT KILL, a value over proto-max-bulk-len), and SIGPIPE
// ends a process that does not handle it. So every command runs with SIGPIPE blocked
// in the calling thread (unless the process ignores it): a SIGPIPE the command raised
// is consumed before the mask is restored, and the write fails with EPIPE, an I/O
// error as above. A SIGPIPE already pending before the command is left alone. Cost,
// measured on a 2-core VM: 0.24 us per command where the process ignores SIGPIPE (one
// sigaction() query), 1.1 us where it does not (three more calls), beside a loopback
// round trip of 60-150 us; the Redis benchmarks moved within their noise (0.87x-1.10x
// the time before, six alternating runs).
//
// Expiry times. Redis takes expiries in milliseconds (PX). Every TTL the primitives
// send is clamped to [1 ms, max_ttl] (2^40 ms, about 34.8 years): Redis 7 refuses an
// expiry whose deadline overflows, and older servers wrap it into the past, so
// milliseconds::max() as "keep it for ever" would otherwise fail or expire at once.
//
// Thread-safety: a `connection` is used by one thread at a time (like a socket).
// A `connection_pool` is thread-safe: acquire() hands each caller its own connection
// (an idle one, or a new one) and takes it back when the handle is destroyed, so N
// threads use at most N connections at once. A pool is per process: after fork(), a
// child must not use connections created by its parent (their sockets are shared with
// it); it builds its own pool.
//
// Scripts. `script` holds a Lua source and its SHA-1 (computed once, with OpenSSL).
// connection::eval sends EVALSHA; when the server answers NOSCRIPT (a fresh or
// restarted server, or SCRIPT FLUSH), it sends EVAL with the source, which also loads
// it, so later calls take the short path again. A script runs atomically on the server:
// nothing else runs between its commands. That atomicity is what every primitive here
// relies on (compare-and-delete, take-lock-and-count-grant, compare-version-and-set).
#ifndef INTERLOCK_REDIS_CONNECTION_HPP
#define INTERLOCK_REDIS_CONNECTION_HPP

#include <interlock/config.hpp>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

INTERLOCK_NAMESPACE_BEGIN
namespace redis {

/// Where and how to connect. Every field is explicit; nothing comes from the
/// environment.
struct connection_options {
  /// The longest timeout hiredis accepts (it waits in int milliseconds); longer
  /// timeouts are clamped to it.
  static constexpr std::chrono::milliseconds max_timeout{std::numeric_limits<int>::max()};

  std::string host = "127.0.0.1";
  int port = 6379;
  /// SELECT this database after connecting (0: the default, nothing sent).
  int database = 0;
  /// AUTH with this password after connecting (empty: no AUTH).
  std::string password{};
  /// AUTH username (Redis 6 ACL); used only with a password (empty: the default user).
  std::string username{};
  /// How long a connect may take. hiredis counts timeouts in int milliseconds: a value
  /// above max_timeout (about 24.8 days; milliseconds::max() included) means "as long
  /// as hiredis allows", i.e. max_timeout. Zero or less means 1 ms.
  std::chrono::milliseconds connect_timeout{1000};
  /// How long one command may wait for its reply before it fails with redis_error.
  /// Clamped as connect_timeout is.
  std::chrono::milliseconds command_timeout{1000};
  /// Prepended to every key the primitives use (e.g. "myservice:"), so several
  /// services or tests can share one server.
  std::string key_prefix{};
  /// Idle connections a connection_pool keeps for reuse.
  std::size_t max_idle = 16;
};

/// The error of every Redis-backed primitive: the connection failed (kind io: connect
/// refused or timed out, reply timed out, connection lost, protocol error) or the
/// server answered with an error (kind server). what() names the call.
class redis_error : public std::runtime_error {
 public:
  enum class error_kind { io, server };
  redis_error(error_kind kind, const std::string& call, const std::string& message)
      : std::runtime_error("interlock::redis: " + call + ": " + message), kind_(kind) {}
  [[nodiscard]] error_kind kind() const noexcept { return kind_; }

 private:
  error_kind kind_;
};

/// A non-owning view of one reply (or one element of an array reply).
class reply_view {
 public:
  explicit reply_view(const redisReply* r) noexcept : r_(r) {}

  [[nodiscard]] bool is_nil() const noexcept { return r_->type == REDIS_REPLY_NIL; }
  [[nodiscard]] bool is_string() const noexcept { return r_->type == REDIS_REPLY_STRING; }
  [[nodiscard]] bool is_status() const noexcept { return r_->type == REDIS_REPLY_STATUS; }
  [[nodiscard]] bool is_integer() const noexcept { return r_->type == REDIS_REPLY_INTEGER; }
  [[nodiscard]] bool is_array() const noexcept { return r_->type == REDIS_REPLY_ARRAY; }
  [[nodiscard]] bool is_error() const noexcept { return r_->type == REDIS_REPLY_ERROR; }

  /// The integer of an integer reply. Throws redis_error (server) for another type.
  [[nodiscard]] long long integer() const {
    if (!is_integer()) throw unexpected("an integer");
    return r_->integer;
  }
  /// The bytes of a string, status or error reply (empty for nil). Throws
  /// redis_error (server) for an integer or array.
  [[nodiscard]] std::string_view str() const {
    if (is_nil()) return {};
    if (!is_string() && !is_status() && !is_error()) throw unexpected("a string");
    return {r_->str, r_->len};
  }
  /// Elements of an array reply (0 for every other type).
  [[nodiscard]] std::size_t size() const noexcept { return is_array() ? r_->elements : 0; }
  /// Element i of an array reply. Precondition: i < size().
  [[nodiscard]] reply_view operator[](std::size_t i) const noexcept {
    INTERLOCK_ASSERT(i < size(), "redis reply: element index out of range");
    return reply_view(r_->element[i]);
  }

 protected:
  redis_error unexpected(const char* wanted) const {
    return redis_error(
        redis_error::error_kind::server, "reply",
        std::string("expected ") + wanted + ", got reply type " + std::to_string(r_->type));
  }
  const redisReply* r_;
};

/// An owning reply: frees the hiredis reply tree when destroyed. Movable.
class reply : public reply_view {
 public:
  explicit reply(redisReply* r) noexcept : reply_view(r), owner_(r) {}

 private:
  struct deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
  };
  std::unique_ptr<redisReply, deleter> owner_;
};

namespace detail {

/// The longest expiry the primitives send (see "Expiry times" above).
inline constexpr std::chrono::milliseconds max_ttl{std::int64_t{1} << 40};

/// `ttl` clamped to [1 ms, max_ttl], in decimal milliseconds, as PX takes it.
inline std::string ttl_text(std::chrono::milliseconds ttl) {
  return std::to_string(std::clamp(ttl, std::chrono::milliseconds(1), max_ttl).count());
}

/// Blocks SIGPIPE in the calling thread for its lifetime and consumes a SIGPIPE raised
/// meanwhile (see "SIGPIPE" above; the technique of libpq's pq_block_sigpipe). Does
/// nothing when the process ignores SIGPIPE. Keeps errno. noexcept.
class sigpipe_suppressor {
 public:
  sigpipe_suppressor() noexcept {
    const int saved_errno = errno;
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN) {
      errno = saved_errno;
      return;  // ignored: a write fails with EPIPE and nothing is raised
    }
    already_pending_ = sigpipe_pending();
    const sigset_t pipe_only = only_sigpipe();
    active_ = ::pthread_sigmask(SIG_BLOCK, &pipe_only, &previous_) == 0;
    errno = saved_errno;
  }
  sigpipe_suppressor(const sigpipe_suppressor&) = delete;
  sigpipe_suppressor& operator=(const sigpipe_suppressor&) = delete;
  ~sigpipe_suppressor() {
    if (!active_) return;
    const int saved_errno = errno;
    if (!already_pending_ && sigpipe_pending()) {
      const sigset_t pipe_only = only_sigpipe();
      const timespec no_wait{0, 0};
      while (::sigtimedwait(&pipe_only, nullptr, &no_wait) < 0 && errno == EINTR) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
    errno = saved_errno;
  }

 private:
  static sigset_t only_sigpipe() noexcept {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    return set;
  }
  static bool sigpipe_pending() noexcept {
    sigset_t pending;
    return ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
  }

  sigset_t previous_{};
  bool already_pending_ = false;
  bool active_ = false;
};

/// key_prefix + key.
inline std::string prefixed_key(std::string_view prefix, std::string_view key) {
  std::string out;
  out.reserve(prefix.size() + key.size());
  out.append(prefix).append(key);
  return out;
}

}  // namespace detail

/// A Lua script and its SHA-1, for connection::eval. Immutable; thread-safe to share.
class script {
 public:
  explicit script(std::string source) : source_(std::move(source)), sha1_(sha1_hex(source_)) {}
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] const std::string& sha1() const noexcept { return sha1_; }

 private:
  static std::string sha1_hex(const std::string& text) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    if (EVP_Digest(text.data(), text.size(), out, &length, EVP_sha1(), nullptr) != 1) {
      throw std::runtime_error("interlock::redis::script: SHA-1 of the script failed (OpenSSL)");
    }
    static constexpr char digits[] = "0123456789abcdef";
    std::string hex(2 * length, '0');
    for (unsigned int i = 0; i < length; ++i) {
      hex[2 * i] = digits[out[i] >> 4];
      hex[2 * i + 1] = digits[out[i] & 15];
    }
    return hex;
  }
  std::string source_;
  std::string sha1_;
};

namespace detail {
/// A script that is never destroyed, for the stores' function-local statics. A static
/// script would be destroyed at exit in reverse order of its first use, which may come
/// before a guard with static storage duration that still releases through it (a
/// process-wide lease released at exit read the freed SHA-1 and left the lease held).
inline const script& lasting_script(const char* source) {
  return *new script(source);  // reachable through the caller's static reference
}
}  // namespace detail

/// One connection to one server. Connects on first use (and again after an I/O
/// error), not in the constructor, so constructing never fails on the network.
/// Thread-safety: one thread at a time. Progress: every call blocks for at most about
/// connect_timeout + command_timeout.
class connection {
 public:
  explicit connection(connection_options options = {}) : options_(std::move(options)) {}
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { close(); }

  [[nodiscard]] const connection_options& options() const noexcept { return options_; }
  /// key_prefix + key.
  [[nodiscard]] std::string key(std::string_view k) const {
    return detail::prefixed_key(options_.key_prefix, k);
  }
  [[nodiscard]] bool connected() const noexcept { return ctx_ != nullptr; }

  /// Connects now if not connected. Throws redis_error (io) when the connect, AUTH or
  /// SELECT fails.
  void connect() {
    if (ctx_ != nullptr) return;
    const std::string where = "connect " + options_.host + ":" + std::to_string(options_.port);
    redisContext* c = redisConnectWithTimeout(options_.host.c_str(), options_.port,
                                              to_timeval(options_.connect_timeout));
    if (c == nullptr) throw redis_error(redis_error::error_kind::io, where, "out of memory");
    if (c->err != 0) {
      std::string message = c->errstr;
      redisFree(c);
      throw redis_error(redis_error::error_kind::io, where, message);
    }
    if (redisSetTimeout(c, to_timeval(options_.command_timeout)) != REDIS_OK) {
      redisFree(c);
      throw redis_error(redis_error::error_kind::io, where, "cannot set the command timeout");
    }
    ctx_ = c;
    try {
      if (!options_.password.empty()) {
        if (options_.username.empty()) {
          checked({"AUTH", options_.password});
        } else {
          checked({"AUTH", options_.username, options_.password});
        }
      }
      if (options_.database != 0) checked({"SELECT", std::to_string(options_.database)});
    } catch (const redis_error& e) {
      close();
      throw redis_error(redis_error::error_kind::io, where, e.what());
    } catch (...) {  // bad_alloc: never leave a connection without its AUTH or SELECT
      close();
      throw;
    }
  }

  /// Closes the connection (the next call reconnects). noexcept.
  void close() noexcept {
    if (ctx_ != nullptr) redisFree(ctx_);
    ctx_ = nullptr;
  }

  /// Closes the connection if the server dropped it while it sat idle (the server's
  /// `timeout`, a proxy, a restart), so the next command reconnects instead of failing
  /// on a dead socket without having reached Redis. raw() calls it before every
  /// command. Progress: never blocks (one poll() with a zero timeout; one recv(MSG_PEEK)
  /// when the socket is readable). noexcept.
  void close_if_dropped() noexcept {
    if (ctx_ != nullptr && dropped_by_server(ctx_->fd)) close();
  }

  /// Sends one command (binary-safe arguments) and returns its reply, which may be an
  /// error reply (is_error()). First, when the server dropped the connection while it
  /// was idle, reconnects (see close_if_dropped). Throws redis_error (io) when the
  /// connection fails; the connection is then closed and the next call reconnects.
  reply raw(std::span<const std::string_view> args) {
    close_if_dropped();
    connect();
    constexpr std::size_t small = 16;
    std::array<const char*, small> argv_small{};
    std::array<std::size_t, small> lens_small{};
    std::vector<const char*> argv_big;
    std::vector<std::size_t> lens_big;
    const char** argv = argv_small.data();
    std::size_t* lens = lens_small.data();
    if (args.size() > small) {
      argv_big.resize(args.size());
      lens_big.resize(args.size());
      argv = argv_big.data();
      lens = lens_big.data();
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
      argv[i] = args[i].data();
      lens[i] = args[i].size();
    }
    void* r = nullptr;
    {
      const detail::sigpipe_suppressor no_sigpipe;  // a closed socket fails the write
      r = redisCommandArgv(ctx_, static_cast<int>(args.size()), argv, lens);
    }
    if (r == nullptr) {
      std::string message = ctx_->errstr[0] != '\0' ? ctx_->errstr : "no reply";
      close();
      throw redis_error(redis_error::error_kind::io, name_of(args), message);
    }
    return reply(static_cast<redisReply*>(r));
  }
  reply raw(std::initializer_list<std::string_view> args) {
    return raw(std::span<const std::string_view>(args.begin(), args.size()));
  }

  /// As raw, but an error reply throws redis_error (server) naming the command.
  reply command(std::span<const std::string_view> args) { return checked(args); }
  reply command(std::initializer_list<std::string_view> args) {
    return checked(std::span<const std::string_view>(args.begin(), args.size()));
  }

  /// Runs `s` with `keys` and `args` (EVALSHA; EVAL after NOSCRIPT). Throws
  /// redis_error as command() does (a script error is a server error).
  reply eval(const script& s, std::initializer_list<std::string_view> keys,
             std::initializer_list<std::string_view> args) {
    return eval(s, std::span<const std::string_view>(keys.begin(), keys.size()),
                std::span<const std::string_view>(args.begin(), args.size()));
  }
  reply eval(const script& s, std::span<const std::string_view> keys,
             std::span<const std::string_view> args) {
    std::vector<std::string_view> argv;
    argv.reserve(3 + keys.size() + args.size());
    const std::string count = std::to_string(keys.size());
    argv.push_back("EVALSHA");
    argv.push_back(s.sha1());
    argv.push_back(count);
    argv.insert(argv.end(), keys.begin(), keys.end());
    argv.insert(argv.end(), args.begin(), args.end());
    reply r = raw(argv);
    if (r.is_error() && r.str().starts_with("NOSCRIPT")) {
      argv[0] = "EVAL";
      argv[1] = s.source();
      return checked(argv);
    }
    if (r.is_error())
      throw redis_error(redis_error::error_kind::server, "EVALSHA", std::string(r.str()));
    return r;
  }

 private:
  reply checked(std::span<const std::string_view> args) {
    reply r = raw(args);
    if (r.is_error()) {
      throw redis_error(redis_error::error_kind::server, name_of(args), std::string(r.str()));
    }
    return r;
  }
  reply checked(std::initializer_list<std::string_view> args) {
    return checked(std::span<const std::string_view>(args.begin(), args.size()));
  }
  /// True when `fd`, with no command in flight, has reached end of stream or an error,
  /// or holds bytes nobody asked for (the next reply would be misread).
  static bool dropped_by_server(int fd) noexcept {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;  // nothing happened (or EINTR): usable
    if ((p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) return true;
    char byte = 0;
    const ssize_t peeked = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (peeked < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
    return true;  // 0: end of stream; > 0: unsolicited bytes; < 0: reset
  }
  static std::string name_of(std::span<const std::string_view> args) {
    return args.empty() ? std::string("(empty command)") : std::string(args[0]);
  }
  /// d as hiredis takes it: at least 1 ms, at most connection_options::max_timeout
  /// (hiredis rejects a connect timeout whose milliseconds overflow a long, and waits
  /// in int milliseconds anyway).
  static timeval to_timeval(std::chrono::milliseconds d) noexcept {
    const auto ms =
        std::clamp(d, std::chrono::milliseconds(1), connection_options::max_timeout).count();
    timeval tv{};
    tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms / 1000);
    tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms % 1000) * 1000);
    return tv;
  }

  connection_options options_;
  redisContext* ctx_ = nullptr;
};

/// A thread-safe pool of connections with the same options. acquire() returns a
/// handle that owns one connection until it is destroyed; a handle whose connection
/// failed (closed by an I/O error) goes back too and reconnects on its next use, and so
/// does one the server closed while it was idle in the pool (see
/// connection::close_if_dropped).
/// Progress: acquire() and the handle's return lock the pool's mutex briefly (never
/// across a network call).
class connection_pool {
 public:
  explicit connection_pool(connection_options options) : options_(std::move(options)) {}
  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;

  class handle {
   public:
    handle(handle&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}
    handle& operator=(handle&&) = delete;
    handle(const handle&) = delete;
    handle& operator=(const handle&) = delete;
    ~handle() {
      if (pool_ != nullptr) pool_->put_back(std::move(conn_));
    }
    connection& operator*() const noexcept { return *conn_; }
    connection* operator->() const noexcept { return conn_.get(); }

   private:
    friend class connection_pool;
    handle(connection_pool* pool, std::unique_ptr<connection> c) noexcept
        : pool_(pool), conn_(std::move(c)) {}
    connection_pool* pool_;
    std::unique_ptr<connection> conn_;
  };

  /// A connection for the calling thread's exclusive use. Throws std::bad_alloc only;
  /// connecting happens on the connection's first command.
  [[nodiscard]] handle acquire() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        return handle(this, std::move(c));
      }
    }
    return handle(this, std::make_unique<connection>(options_));
  }

  [[nodiscard]] const connection_options& options() const noexcept { return options_; }
  /// key_prefix + key.
  [[nodiscard]] std::string key(std::string_view k) const {
    return detail::prefixed_key(options_.key_prefix, k);
  }

 private:
  void put_back(std::unique_ptr<connection> c) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_.size() < options_.max_idle) {
      try {
        idle_.push_back(std::move(c));
      } catch (...) {  // bad_alloc: drop the connection (it closes itself)
      }
    }
  }

  connection_options options_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<connection>> idle_;
};

namespace detail {

/// A token unique to one grant or one execution: the process id (so forked children
/// never repeat their parent's tokens) and 128 random bits, in hex.
inline std::string unique_token() {
  thread_local std::mt19937_64 engine{[] {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }()};
  thread_local pid_t engine_pid = ::getpid();
  const pid_t pid = ::getpid();
  if (pid != engine_pid) {  // a forked child: reseed, or it repeats its parent's tokens
    std::random_device device;
    engine.seed((static_cast<std::uint64_t>(device()) << 32) ^ device() ^
                static_cast<std::uint64_t>(pid));
    engine_pid = pid;
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(48);
  auto append = [&out](std::uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) out.push_back(digits[(v >> (4 * i)) & 15]);
  };
  append(static_cast<std::uint64_t>(pid), 8);
  out.push_back('-');
  append(engine(), 16);
  append(engine(), 16);
  return out;
}

/// Parses a decimal integer reply value (Lua and INCR give decimal text or integers).
inline std::uint64_t to_u64(std::string_view text) {
  std::uint64_t v = 0;
  if (text.empty()) throw redis_error(redis_error::error_kind::server, "reply", "empty number");
  for (char c : text) {
    if (c < '0' || c > '9') {
      throw redis_error(redis_error::error_kind::server, "reply",
                        "not a number: " + std::string(text));
    }
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

/// The compare-and-delete script every store uses to give something up only if it is
/// still its own: KEYS[1] is deleted when its value equals ARGV[1]. Returns 1 when it
/// deleted, 0 otherwise.
inline const script& compare_and_delete_script() {
  static const script& s = detail::lasting_script(
      "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
      "  return redis.call('DEL', KEYS[1])\n"
      "end\n"
      "return 0\n");
  return s;
}

}  // namespace detail
}  // namespace redis
INTERLOCK_NAMESPACE_END

#endif  // INTERLOCK_REDIS_CONNECTION_HPP
