// The installed `redis` component: compiles against the installed Redis headers, links
// hiredis through interlock::redis, and runs a command against a port where nothing
// listens, which must fail with redis_error (no server is needed for this test).
#include <interlock/redis/keyed_mutex.hpp>

#include <cstdio>

int main() {
  interlock::redis::connection_options options;
  options.port = 1;  // nothing listens on port 1 of the loopback
  options.connect_timeout = std::chrono::milliseconds(500);
  interlock::redis::connection connection(options);
  try {
    (void)connection.command({"PING"});
  } catch (const interlock::redis::redis_error& e) {
    std::printf("redis component: %s\n", e.what());
    return 0;
  }
  std::printf("redis component: a PING to port 1 succeeded\n");
  return 1;
}
