#!/usr/bin/env bash
# Real PostgreSQL 15 and Redis for tests, on free ports in a temporary folder.
#
#   eval "$(tests/lib/services.sh start)"   # exports CA_TEST_DIR, TEST_DATABASE_URL, ...
#   tests/lib/services.sh stop-pg | start-pg | restart-pg
#   tests/lib/services.sh stop-redis | start-redis | restart-redis
#   tests/lib/services.sh logs             # print both servers' logs
#   tests/lib/services.sh stop             # stop both and remove the folder
#
# Every command but `start` reads CA_TEST_DIR. As root, PostgreSQL runs as the
# `postgres` user on a data folder it owns (it refuses to run as root).
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

state() { cat "$CA_TEST_DIR/$1"; }

start_pg() {
  local dir=$CA_TEST_DIR port
  port=$(state pg.port)
  as_pg "$PGBIN/pg_ctl" -D "$dir/pg" -l "$dir/pgsock/pg.log" -w -t 60 \
    -o "-p $port -k $dir/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
}

stop_pg() {
  as_pg "$PGBIN/pg_ctl" -D "$CA_TEST_DIR/pg" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

start_redis() {
  local dir=$CA_TEST_DIR port
  port=$(state redis.port)
  "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --daemonize yes \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --save '' --appendonly no >/dev/null
  for _ in $(seq 1 100); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "redis did not start" >&2; cat "$dir/redis.log" >&2; return 1
}

stop_redis() {
  local port
  port=$(state redis.port)
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  for _ in $(seq 1 100); do
    [ -f "$CA_TEST_DIR/redis.pid" ] && kill -0 "$(cat "$CA_TEST_DIR/redis.pid")" 2>/dev/null || return 0
    sleep 0.05
  done
}

cmd=${1:-}
case "$cmd" in
  start)
    CA_TEST_DIR=$(mktemp -d /tmp/ca-test.XXXXXX)
    chmod 755 "$CA_TEST_DIR"
    mkdir -p "$CA_TEST_DIR/pg" "$CA_TEST_DIR/pgsock"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$CA_TEST_DIR/pg" "$CA_TEST_DIR/pgsock"; fi
    free_port > "$CA_TEST_DIR/pg.port"
    free_port > "$CA_TEST_DIR/redis.port"
    as_pg "$PGBIN/initdb" -D "$CA_TEST_DIR/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$CA_TEST_DIR/initdb.log" 2>&1 \
      || { cat "$CA_TEST_DIR/initdb.log" >&2; exit 1; }
    cat >> "$CA_TEST_DIR/pg/postgresql.conf" <<CONF
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 400
shared_buffers = 256MB
log_min_messages = warning
CONF
    start_pg
    start_redis
    pgport=$(state pg.port)
    as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$pgport" -U postgres ca_test
    echo "export CA_TEST_DIR=$CA_TEST_DIR"
    echo "export TEST_PG_PORT=$pgport"
    echo "export TEST_REDIS_PORT=$(state redis.port)"
    echo "export TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:$pgport/ca_test"
    echo "export TEST_REDIS_URL=redis://127.0.0.1:$(state redis.port)/0"
    ;;
  stop)
    : "${CA_TEST_DIR:?}"
    stop_redis; stop_pg
    rm -rf "$CA_TEST_DIR"
    ;;
  start-pg) start_pg ;;
  stop-pg) stop_pg ;;
  restart-pg) stop_pg; start_pg ;;
  start-redis) start_redis ;;
  stop-redis) stop_redis ;;
  restart-redis) stop_redis; start_redis ;;
  logs)
    echo "----- postgresql log -----"; tail -n 100 "$CA_TEST_DIR/pgsock/pg.log" 2>/dev/null || true
    echo "----- redis log -----"; tail -n 50 "$CA_TEST_DIR/redis.log" 2>/dev/null || true
    ;;
  *) echo "usage: $0 start|stop|start-pg|stop-pg|restart-pg|start-redis|stop-redis|restart-redis|logs" >&2; exit 2 ;;
esac
