// Overbooking across processes: four OS processes sign people up for one event role
// with 10 seats, through one Redis server. The naive code reads the count (GET) and
// writes count + 1 (SET), so two processes that read together both take the last
// seat. With interlock::redis::keyed_mutex the check and the write for the role run
// one process at a time. The demo starts a private redis-server on a free loopback port
// when `redis-server` is on PATH, and stops it afterwards.
#include "scenario.hpp"

#if INTERLOCK_DEMO_HAVE_REDIS

#include <interlock/redis/keyed_mutex.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace r = interlock::redis;

constexpr int processes = 4;
constexpr int attempts = 150;  // per process; the exit status carries the seats it took
constexpr int seats = 10;

std::optional<std::string> find_redis_server() {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin";
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = dirs.find(':', start);
    const std::string dir =
        dirs.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const std::string candidate = (dir.empty() ? "." : dir) + "/redis-server";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) return std::nullopt;
    start = end + 1;
  }
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

/// A redis-server child process, killed when this goes out of scope.
struct private_server {
  pid_t pid = -1;
  int port = 0;
  ~private_server() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
  bool start(const std::string& exe) {
    port = free_port();
    const std::string p = std::to_string(port);
    std::fflush(nullptr);
    pid = ::fork();
    if (pid == 0) {
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, 1);
        ::dup2(null, 2);
      }
      ::execl(exe.c_str(), exe.c_str(), "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    r::connection_options o;
    o.port = port;
    for (int i = 0; i < 500; ++i) {
      r::connection c(o);
      try {
        if (c.command({"PING"}).str() == "PONG") return true;
      } catch (const r::redis_error&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

/// Runs signup(connection&) -> bool `attempts` times in each of `processes` processes;
/// returns the seats taken in all.
int run_processes(const r::connection_options& o,
                  const std::function<bool(r::connection&, const std::string&)>& signup) {
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      int taken = 0;
      try {
        r::connection c(o);
        const std::string count_key = c.key("role:lead:count");
        for (int i = 0; i < attempts; ++i) taken += signup(c, count_key) ? 1 : 0;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "redis signup worker: %s\n", e.what());
        ::_exit(255);
      }
      ::_exit(taken);
    }
    children.push_back(pid);
  }
  int total = 0;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    total += WIFEXITED(status) && WEXITSTATUS(status) != 255 ? WEXITSTATUS(status) : 10000;
  }
  return total;
}

bool naive_signup(r::connection& c, const std::string& count_key) {
  const r::reply count = c.command({"GET", count_key});  // check ...
  const long long n = count.is_nil() ? 0 : std::stoll(std::string(count.str()));
  if (n >= seats) return false;
  std::this_thread::yield();                                   // (the window any real code has)
  (void)c.command({"SET", count_key, std::to_string(n + 1)});  // ... then write
  return true;
}

demo::row redis_signup() {
  demo::row row;
  row.scenario = "redis signup, 4 processes";
  const auto exe = find_redis_server();
  private_server server;
  if (!exe || !server.start(*exe)) {
    // Without a server there is nothing to compare; the row says so and does not fail
    // the demo (interlock_correct = true means "nothing went wrong", not "verified").
    std::printf("redis signup scenario: skipped (no redis-server on PATH)\n");
    row.naive = {"skipped: no redis-server", 0};
    row.interlock = {"skipped: no redis-server", 0};
    row.interlock_correct = true;
    return row;
  }
  r::connection_options o;
  o.port = server.port;
  o.key_prefix = "demo:naive:";
  auto [naive, naive_ms] = demo::timed([&] { return run_processes(o, naive_signup); });
  o.key_prefix = "demo:interlock:";
  auto [locked, locked_ms] = demo::timed([&] {
    return run_processes(o, [&o](r::connection& c, const std::string& count_key) {
      // One lock per process (built after fork: each process has its own connections).
      static r::keyed_mutex locks(o);
      return locks.with_lock("signup:42:lead", [&] { return naive_signup(c, count_key); });
    });
  });
  auto overbooked = [](int taken) { return taken > seats ? taken - seats : 0; };
  row.naive = {std::to_string(overbooked(naive)) + " seats overbooked", naive_ms};
  row.interlock = {std::to_string(overbooked(locked)) + " seats overbooked", locked_ms};
  row.interlock_correct = locked == seats;
  return row;
}

}  // namespace

static demo::registration reg{60, [] { return redis_signup(); }};

#else  // !INTERLOCK_DEMO_HAVE_REDIS

namespace {
// Built without hiredis (INTERLOCK_WITH_REDIS off): the row says so plainly and does not
// fail the demo (interlock_correct = true means "nothing went wrong", not "verified").
demo::row redis_signup_skipped() {
  demo::row row;
  row.scenario = "redis signup, 4 processes";
  row.naive = {"skipped: built without hiredis", 0};
  row.interlock = {"skipped: built without hiredis", 0};
  row.interlock_correct = true;
  return row;
}
}  // namespace

static demo::registration reg{60, [] { return redis_signup_skipped(); }};

#endif
