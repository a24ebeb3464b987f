#!/usr/bin/env bash
# Start PostgreSQL and Redis if they are not answering on their usual ports.
# Tests create (and drop) their own databases and use their own Redis key prefix.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  echo "$2 did not come up on port $1" >&2; return 1
}

if ! port_open 5432; then
  echo "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  elif command -v pg_ctl >/dev/null 2>&1; then
    pg_ctl -D "${PGDATA:?set PGDATA to your cluster}" -l /tmp/llmqueue-pg.log start
  else
    echo "PostgreSQL is not running and not installed: install it (apt-get install postgresql) or set LLMQUEUE_TEST_PG" >&2
    exit 1
  fi
  wait_port 5432 PostgreSQL
fi

if ! port_open 6379; then
  echo "starting Redis"
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  else
    echo "Redis is not running and not installed: install it (apt-get install redis-server) or set LLMQUEUE_TEST_REDIS" >&2
    exit 1
  fi
  wait_port 6379 Redis
fi
