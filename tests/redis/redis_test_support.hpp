// Helpers of the Redis tests: where the server is, per-test key prefixes, running a
// function in several OS processes, and a private server that a test may stop and
// start again.
//
// The server: INTERLOCK_REDIS_PORT (a port on 127.0.0.1), or else the port written in
// the file named by INTERLOCK_REDIS_PORT_FILE (the CTest fixture writes one). Without
// either, or when nothing answers there, each test WARNs and returns (skips).
#ifndef INTERLOCK_TESTS_REDIS_SUPPORT_HPP
#define INTERLOCK_TESTS_REDIS_SUPPORT_HPP

#include <interlock/redis/connection.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace redis_test {

namespace r = interlock::redis;

#if defined(__SANITIZE_ADDRESS__) || INTERLOCK_TSAN
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif

/// fork() in a TSan-instrumented multithreaded program is unreliable: under TSan the
/// multi-process tests run their workers as threads instead (each with its own pool).
inline constexpr bool use_processes = !INTERLOCK_TSAN;

inline std::optional<int> configured_port() {
  if (const char* p = std::getenv("INTERLOCK_REDIS_PORT"); p != nullptr && *p != '\0') {
    return std::atoi(p);
  }
  if (const char* f = std::getenv("INTERLOCK_REDIS_PORT_FILE"); f != nullptr && *f != '\0') {
    std::ifstream in(f);
    int port = 0;
    if (in >> port && port > 0) return port;
  }
  return std::nullopt;
}

inline bool answers(int port) {
  r::connection_options o;
  o.port = port;
  r::connection c(o);
  try {
    return c.command({"PING"}).str() == "PONG";
  } catch (const r::redis_error&) {
    return false;
  }
}

/// A unique key prefix for one test in one run (parallel runs never collide).
inline std::string unique_prefix(const std::string& name) {
  static std::atomic<int> counter{0};
  return "itest:" + std::to_string(::getpid()) + ":" + std::to_string(++counter) + ":" + name + ":";
}

/// The options of the test server with a fresh key prefix, or empty (after a WARN)
/// when there is no server.
inline std::optional<r::connection_options> server(const std::string& name) {
  const auto port = configured_port();
  if (!port) {
    WARN("no Redis server configured (set INTERLOCK_REDIS_PORT): Redis test skipped");
    return std::nullopt;
  }
  if (!answers(*port)) {
    WARN("no Redis server answers on 127.0.0.1:" << *port << ": Redis test skipped");
    return std::nullopt;
  }
  r::connection_options o;
  o.port = *port;
  o.key_prefix = unique_prefix(name);
  // A loaded CI machine (a sanitizer, another test job) can stall the server for
  // longer than the 1 s default; tests about timeouts set their own.
  o.command_timeout = std::chrono::seconds(10);
  return o;
}

/// Runs fn(i) for i in [0, n) in n child processes (or threads under TSan) and
/// returns their statuses: fn's return value, 100 for an exception, 200 + signal for
/// a process killed by a signal. Children _exit() without running the parent's
/// destructors or Catch2's handlers.
inline std::vector<int> run_workers(int n, const std::function<int(int)>& fn) {
  std::vector<int> statuses(static_cast<std::size_t>(n), -1);
  auto guarded = [&fn](int i) {
    try {
      return fn(i);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker %d: %s\n", i, e.what());
      return 100;
    } catch (...) {
      return 100;
    }
  };
  if constexpr (use_processes) {
    std::vector<pid_t> pids;
    for (int i = 0; i < n; ++i) {
      std::fflush(nullptr);
      const pid_t pid = ::fork();
      if (pid == 0) ::_exit(guarded(i));
      if (pid < 0) break;
      pids.push_back(pid);
    }
    for (std::size_t i = 0; i < pids.size(); ++i) {
      int status = 0;
      if (::waitpid(pids[i], &status, 0) == pids[i]) {
        statuses[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 200 + WTERMSIG(status);
      }
    }
  } else {
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] { statuses[static_cast<std::size_t>(i)] = guarded(i); });
    }
    for (auto& t : threads) t.join();
  }
  return statuses;
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

/// The redis-server executable: INTERLOCK_REDIS_SERVER, or the first on PATH.
inline std::optional<std::string> server_executable() {
  if (const char* p = std::getenv("INTERLOCK_REDIS_SERVER"); p != nullptr && *p != '\0') {
    return std::string(p);
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/usr/local/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = dirs.find(':', start);
    const std::string dir =
        dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::string candidate = (dir.empty() ? "." : dir) + "/redis-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return std::nullopt;
}

/// A redis-server owned by one test: started on a free port with its own data
/// directory, stopped with SHUTDOWN SAVE (so a restart keeps the data) and started
/// again on the same port. The destructor kills it if it still runs.
class private_server {
 public:
  explicit private_server(std::string executable)
      : executable_(std::move(executable)), port_(free_port()) {
    char tmpl[] = "/tmp/interlock_redis_XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    dir_ = d != nullptr ? d : "/tmp";
  }
  private_server(const private_server&) = delete;
  private_server& operator=(const private_server&) = delete;
  ~private_server() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::remove((dir_ + "/dump.rdb").c_str());
    ::rmdir(dir_.c_str());
  }

  [[nodiscard]] int port() const noexcept { return port_; }

  /// Starts the server and waits until it answers (true) or 10 s pass (false).
  bool start() {
    const std::string port = std::to_string(port_);
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, 1);
        ::dup2(null, 2);
      }
      ::execl(executable_.c_str(), executable_.c_str(), "--port", port.c_str(), "--bind",
              "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir_.c_str(),
              "--dbfilename", "dump.rdb", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 1000; ++i) {
      if (answers(port_)) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  /// SHUTDOWN SAVE (the data is written to dump.rdb and loaded by the next start),
  /// then waits for the process to exit.
  void stop() {
    r::connection_options o;
    o.port = port_;
    r::connection c(o);
    try {
      (void)c.raw({"SHUTDOWN", "SAVE"});
    } catch (const r::redis_error&) {  // expected: the server closes the connection
    }
    if (pid_ > 0) {
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  std::string executable_;
  std::string dir_;
  int port_;
  pid_t pid_ = -1;
};

}  // namespace redis_test

#endif
