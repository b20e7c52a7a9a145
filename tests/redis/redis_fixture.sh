#!/usr/bin/env bash
# The CTest fixture of the Redis tests.
#   redis_fixture.sh start DIR   start redis-server on a free 127.0.0.1 port (no
#                                persistence, daemonized, data and log in DIR), wait
#                                until it answers, write the port to DIR/port
#   redis_fixture.sh stop DIR    stop it (SHUTDOWN NOSAVE, then SIGTERM by pid file)
# REDIS_SERVER and REDIS_CLI name the executables (default: from PATH).
set -u
command="${1:-}"
dir="${2:-}"
server="${REDIS_SERVER:-redis-server}"
cli="${REDIS_CLI:-redis-cli}"
[ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

alive() { [ -s "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; }

case "$command" in
  start)
    mkdir -p "$dir"
    rm -f "$dir/port" "$dir/redis.pid"
    base=$((20000 + ($$ % 20000)))
    for offset in $(seq 0 40); do
      port=$((base + offset * 7))
      # A port where something already answers belongs to someone else.
      if "$cli" -p "$port" ping >/dev/null 2>&1; then continue; fi
      rm -f "$dir/redis.pid"
      "$server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" || continue
      for _ in $(seq 1 100); do
        if [ -s "$dir/redis.pid" ] && ! alive; then break; fi  # it exited (port taken)
        if "$cli" -p "$port" ping 2>/dev/null | grep -q PONG; then
          pid="$(cat "$dir/redis.pid" 2>/dev/null)"
          answering="$("$cli" -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')"
          if [ -n "$pid" ] && [ "$answering" = "$pid" ]; then
            echo "$port" >"$dir/port"
            echo "redis-server (pid $pid) listens on 127.0.0.1:$port"
            exit 0
          fi
          break  # another server won this port in the meantime
        fi
        sleep 0.05
      done
      alive && kill "$(cat "$dir/redis.pid")" 2>/dev/null
    done
    echo "could not start $server on a free port" >&2
    exit 1
    ;;
  stop)
    if [ -s "$dir/port" ]; then
      "$cli" -p "$(cat "$dir/port")" shutdown nosave >/dev/null 2>&1 || true
    fi
    for _ in $(seq 1 40); do alive || break; sleep 0.05; done
    alive && kill "$(cat "$dir/redis.pid")" 2>/dev/null
    rm -f "$dir/port" "$dir/redis.pid"
    echo "redis-server stopped"
    exit 0
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
