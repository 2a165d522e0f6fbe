#!/usr/bin/env bash
# The daily retention runs by itself in serve (common/daemon.c): at
# RETENTION_AT (UTC; set here a few seconds ahead, HH:MM:SS), not before, and
# once with two replicas of a service (the Redis claim
# ca:retention:<service>:<day>): two job-workers, one archives the old job,
# the other sees the claim. A billing-webhook on the same schedule applies its
# own rules. A bad RETENTION_AT exits 2 naming it; "off" runs nothing.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

BIN=$CA_BIN
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

export REDIS_URL=$TEST_REDIS_URL LISTEN_ADDR=127.0.0.1
export ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export GOOGLE_CLIENT_ID=test-client GOOGLE_CLIENT_SECRET=test-google-secret-xyz
export STRIPE_WEBHOOK_SECRET=whsec_test_secret_value
unset MIGRATION_DATABASE_URL
role_url() { echo "postgresql://ca_${1//-/_}@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME"; }
q() { psql -tA "$TEST_DATABASE_URL" -c "$1"; }

# bad values: exit 2, one line naming the variable
for bad in 25:00 2:00 02:60 02:00:61 0200 "02:00 " tomorrow; do
  RETENTION_AT=$bad PORT=$(free_port) DATABASE_URL=$(role_url job-worker) \
    timeout 10 "$BIN/job-worker" serve > /dev/null 2> "$work/err"; rc=$?
  check_eq "RETENTION_AT='$bad' exits 2" 2 "$rc"
  check "the error names RETENTION_AT ('$bad')" grep -q "^job-worker: RETENTION_AT: " "$work/err"
done
"$BIN/job-worker" --help > "$work/help" 2>&1
check "--help lists RETENTION_AT with its default" grep -q '^ *RETENTION_AT .*02:00' "$work/help"

uid=$(q "INSERT INTO users (google_id, email) VALUES ('g-ret', 'ret@example.com') RETURNING id" | head -1)
q "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status, created_at)
   VALUES ('$uid', 'old-file', 'old.jpg', 'f', 'portrait_pro', 'completed', timezone('UTC', now()) - interval '100 days'),
          ('$uid', 'new-file', 'new.jpg', 'f', 'portrait_pro', 'completed', timezone('UTC', now()) - interval '10 days')" >/dev/null
q "INSERT INTO webhook_events (event_id, event_type, payload, created_at)
   VALUES ('evt_old', 't', '{}', now() - interval '31 days'), ('evt_new', 't', '{}', now())" >/dev/null

at=$(( $(date +%s) + 10 ))
AT=$(date -u -d "@$at" +%H:%M:%S)
DAY=$(date -u -d "@$at" +%Y-%m-%d)
echo "# RETENTION_AT=$AT (day $DAY)"

start() { # start NAME SERVICE RETENTION_AT
  local port; port=$(free_port)
  HOSTNAME=$1 RETENTION_AT=$3 PORT=$port DATABASE_URL=$(role_url "$2") \
    "$BIN/$2" serve > "$work/$1.log" 2>&1 &
  pids+=($!)
  check "$1 ($2) is ready" wait_http "http://127.0.0.1:$port/readyz" 15
}
start replica-a job-worker "$AT"
start replica-b job-worker "$AT"
start billing billing-webhook "$AT"
start replica-off job-worker off

if [ "$(date +%s)" -lt $((at - 1)) ]; then
  check_eq "before RETENTION_AT the old job is still live" 1 "$(q "SELECT count(*) FROM jobs WHERE drive_file_id = 'old-file'")"
  check "before RETENTION_AT nothing ran" bash -c "! grep -q 'retention $DAY' '$work'/*.log"
else
  fail "the replicas took too long to start to check 'not before' (retry)"
fi

# wait for it: up to 20 s past the time
for _ in $(seq 1 200); do
  [ "$(q "SELECT count(*) FROM jobs_archive WHERE drive_file_id = 'old-file'")" = 1 ] &&
    [ "$(q "SELECT count(*) FROM webhook_events WHERE event_id = 'evt_old'")" = 0 ] &&
    [ "$(grep -h "retention $DAY" "$work"/replica-*.log | grep -c 'done in\|already claimed')" -ge 2 ] && break
  sleep 0.1
done
now=$(date +%s)
check "it ran at the time, not before (now $now >= $at)" [ "$now" -ge "$at" ]
check_eq "the old job is archived" 1 "$(q "SELECT count(*) FROM jobs_archive WHERE drive_file_id = 'old-file'")"
check_eq "the old job left jobs" 0 "$(q "SELECT count(*) FROM jobs WHERE drive_file_id = 'old-file'")"
check_eq "the recent job stays live" 1 "$(q "SELECT count(*) FROM jobs WHERE drive_file_id = 'new-file'")"
check_eq "billing-webhook's rules ran on the same schedule" "evt_new" "$(q "SELECT string_agg(event_id, ',') FROM webhook_events")"

runs=$(cat "$work"/replica-*.log | grep -c "retention $DAY: running the job-worker rules")
check_eq "exactly one job-worker replica ran the rules" 1 "$runs"
check_eq "exactly one finished them" 1 "$(cat "$work"/replica-*.log | grep -c "retention $DAY: done in")"
check_eq "the other saw the claim" 1 "$(cat "$work"/replica-*.log | grep -c "retention $DAY: already claimed by replica-")"
winner=$(grep -l "retention $DAY: running" "$work"/replica-a.log "$work"/replica-b.log | head -1)
winner=$(basename "${winner:-none}" .log)
claim=$(redis-cli -p "$TEST_REDIS_PORT" GET "ca:retention:job-worker:$DAY")
check "the Redis claim names the winner ($claim, $winner)" bash -c "[[ '$claim' == $winner-* ]]"
ttl=$(redis-cli -p "$TEST_REDIS_PORT" TTL "ca:retention:job-worker:$DAY")
check "the claim expires (TTL $ttl s, at most 2 days)" bash -c "[ '$ttl' -gt 86400 ] && [ '$ttl' -le 172800 ]"
# the log line carries when it started: not before RETENTION_AT
ts=$(grep -h "retention $DAY: running" "$work"/replica-*.log | head -1 | sed -E 's/.*"ts":"([^"]+)".*/\1/')
check "the run started at or after $AT UTC ($ts)" [ "$(date -u -d "$ts" +%s)" -ge "$at" ]
check "RETENTION_AT=off runs nothing" bash -c "! grep -q 'retention ' '$work/replica-off.log'"

# the replicas stop cleanly (the retention thread is joined)
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p"; rc=$?; check_eq "a replica exits 0 on SIGTERM" 0 "$rc"; done
pids=()
finish
