#!/usr/bin/env bash
# The four binaries as an operator meets them: --help, --version, bad config
# (exit 2 naming the variable), serve with /healthz, /readyz and /metrics,
# readiness following PostgreSQL and Redis, SIGTERM, migrate and cleanup.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

BIN=$CA_BIN
SERVICES="api-gateway drive-poller job-worker billing-webhook"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

KEY=$(head -c 32 /dev/urandom | base64)
export DATABASE_URL=$TEST_DATABASE_URL REDIS_URL=$TEST_REDIS_URL
export ENCRYPTION_KEY=$KEY SESSION_SECRET=test-session-secret-0123456789
export GOOGLE_CLIENT_ID=test-client GOOGLE_CLIENT_SECRET=test-google-secret-xyz
export STRIPE_WEBHOOK_SECRET=whsec_test_secret_value LISTEN_ADDR=127.0.0.1
unset MIGRATION_DATABASE_URL

for s in $SERVICES; do
  out=$("$BIN/$s" --version); rc=$?
  check "$s --version exits 0" [ "$rc" -eq 0 ]
  check "$s --version names the service" grep -q "^$s " <<<"$out"
  "$BIN/$s" --help > "$work/help" 2>&1; rc=$?
  check "$s --help exits 0" [ "$rc" -eq 0 ]
  check "$s --help lists DATABASE_URL" grep -q DATABASE_URL "$work/help"
  check "$s --help lists PORT" grep -q '^ *PORT' "$work/help"
  check "$s --help prints no secret value" bash -c "! grep -q -e '$KEY' -e test-google-secret-xyz '$work/help'"
  PORT=notanumber "$BIN/$s" serve > "$work/out" 2> "$work/err"; rc=$?
  check_eq "$s PORT=notanumber exits 2" 2 "$rc"
  check "$s names PORT in one line" bash -c "[ \$(wc -l < '$work/err') -eq 1 ] && grep -q PORT '$work/err'"
  "$BIN/$s" bogus > /dev/null 2>&1; rc=$?
  check_eq "$s unknown command exits 2" 2 "$rc"
done

(unset SESSION_SECRET; "$BIN/api-gateway" serve > /dev/null 2> "$work/err"); rc=$?
check_eq "api-gateway without SESSION_SECRET exits 2" 2 "$rc"
check "the error names SESSION_SECRET" grep -q SESSION_SECRET "$work/err"
ENCRYPTION_KEY=short "$BIN/job-worker" serve > /dev/null 2> "$work/err"; rc=$?
check_eq "job-worker with a short ENCRYPTION_KEY exits 2" 2 "$rc"
check "the error names ENCRYPTION_KEY, not its value" bash -c "grep -q ENCRYPTION_KEY '$work/err' && ! grep -q short '$work/err'"
# The job-worker's tuning variables go through the table like the others.
"$BIN/job-worker" --help > "$work/help" 2>&1
for v in WORKER_RETRY_MAX_MS WORKER_DRAIN_SECONDS; do
  check "job-worker --help lists $v" grep -q "^ *$v " "$work/help"
  for bad in 0 abc 99999999; do
    env "$v=$bad" "$BIN/job-worker" serve > /dev/null 2> "$work/err"; rc=$?
    check_eq "job-worker $v=$bad exits 2" 2 "$rc"
    check "the error names $v" grep -q "^job-worker: $v: " "$work/err"
  done
done

role_url() { echo "postgresql://ca_${1//-/_}@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME"; }

# serve refuses to run as a superuser (row-level security would not apply):
# exit 1 with one clear line, before it serves anything.
for s in $SERVICES; do
  PORT=$(free_port) timeout 20 "$BIN/$s" serve > "$work/su.log" 2>&1; rc=$?
  check_eq "$s serve as a superuser exits 1" 1 "$rc"
  check "$s says why (superuser or BYPASSRLS)" grep -q 'refusing to serve as database role \\"postgres\\": it is a superuser or has BYPASSRLS' "$work/su.log"
done
psql -q "$TEST_DATABASE_URL" -c "CREATE ROLE ca_test_bypass LOGIN BYPASSRLS" >/dev/null 2>&1
PORT=$(free_port) DATABASE_URL="postgresql://ca_test_bypass@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME" \
  timeout 20 "$BIN/job-worker" serve > "$work/su.log" 2>&1; rc=$?
check_eq "serve as a BYPASSRLS role exits 1" 1 "$rc"
check "it names the role" grep -q 'ca_test_bypass' "$work/su.log"

# serve: every binary answers its probes, then stops on SIGTERM.
declare -A port
for s in $SERVICES; do
  port[$s]=$(free_port)
  # each as its own role: serve refuses a superuser (checked below)
  PORT=${port[$s]} DATABASE_URL=$(role_url "$s") "$BIN/$s" serve > "$work/$s.log" 2>&1 &
  pids+=($!)
  eval "pid_${s//-/_}=$!"
done
for s in $SERVICES; do
  p=${port[$s]}
  check "$s /healthz 200" wait_http "http://127.0.0.1:$p/healthz" 10 200
  check "$s /readyz 200" wait_http "http://127.0.0.1:$p/readyz" 10 200
  body=$(curl -s "http://127.0.0.1:$p/metrics")
  check "$s /metrics is Prometheus text" grep -q '^# TYPE ' <<<"$body"
  check_eq "$s unknown route 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/nope")"
done

p=${port[drive-poller]}
"$CA_ROOT/tests/lib/services.sh" stop-pg
check "/readyz 503 while PostgreSQL is down" wait_http "http://127.0.0.1:$p/readyz" 30 503
check "/healthz still 200 while PostgreSQL is down" wait_http "http://127.0.0.1:$p/healthz" 2 200
"$CA_ROOT/tests/lib/services.sh" start-pg
check "/readyz 200 again after PostgreSQL returns" wait_http "http://127.0.0.1:$p/readyz" 30 200
"$CA_ROOT/tests/lib/services.sh" stop-redis
check "/readyz 503 while Redis is down" wait_http "http://127.0.0.1:$p/readyz" 30 503
"$CA_ROOT/tests/lib/services.sh" start-redis
check "/readyz 200 again after Redis returns" wait_http "http://127.0.0.1:$p/readyz" 30 200

# SIGTERM: each exits 0 within the pods' grace period (35 s, then SIGKILL).
for s in $SERVICES; do
  v="pid_${s//-/_}"; pid=${!v}
  kill -TERM "$pid"
  for _ in $(seq 1 350); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid"; rc=$?
  check_eq "$s exits 0 on SIGTERM within the grace period" 0 "$rc"
  check "$s logged a ready line" grep -q '"msg":"ready: ' "$work/$s.log"
  check "$s logs are JSON lines" node -e '
    const lines=require("fs").readFileSync(process.argv[1],"utf8").split("\n").filter(Boolean);
    for (const l of lines) JSON.parse(l);
    if (!lines.length) process.exit(1);' "$work/$s.log"
  check "$s logs hold no secret" bash -c "! grep -q -e '$KEY' -e test-google-secret-xyz -e whsec_test_secret_value '$work/$s.log'"
done

# migrate: again, applying nothing new.
for s in $SERVICES; do
  "$BIN/$s" migrate > "$work/m1" 2>&1; rc=$?
  check_eq "$s migrate again exits 0" 0 "$rc"
  check "$s migrate again applies nothing" grep -q '"msg":"migrate: 0 file(s) applied' "$work/m1"
done

# Empty databases of our own, as the superuser.
admin_url="postgresql://postgres@127.0.0.1:$TEST_PG_PORT"
new_db() { # new_db NAME: creates an empty database, prints its URL
  psql -q "$admin_url/postgres" -c "CREATE DATABASE $1" >/dev/null && echo "$admin_url/$1"
}
slice_files=$(( $(ls "$CA_ROOT"/sql/api-gateway/*.sql | wc -l) + 1 )) # + sql/000_roles.sql
recorded() { psql -tA "$1" -c "SELECT count(*) FROM schema_migrations WHERE service = 'api-gateway'" 2>/dev/null; }

# Three replicas migrating one empty database at once: every one exits 0
# (the advisory lock makes the others wait), each file is applied once.
race_url=$(new_db "${TEST_DATABASE_NAME}_race")
mpids=()
for i in 1 2 3; do
  DATABASE_URL=$race_url "$BIN/api-gateway" migrate > "$work/mp$i" 2>&1 &
  mpids+=($!)
done
for i in 1 2 3; do
  wait "${mpids[$((i - 1))]}"; rc=$?
  check_eq "concurrent migrate $i of 3 exits 0" 0 "$rc"
  [ "$rc" -eq 0 ] || cat "$work/mp$i"
done
applied=$(cat "$work/mp1" "$work/mp2" "$work/mp3" | grep -c '"msg":"migration applied: ')
check_eq "the three applied each file once between them" "$slice_files" "$applied"
check_eq "each file recorded once" "$slice_files" "$(recorded "$race_url")"

# MIGRATION_DATABASE_URL: migrate connects there when it is set, else to
# DATABASE_URL.
target_url=$(new_db "${TEST_DATABASE_NAME}_mtarget")
decoy_url=$(new_db "${TEST_DATABASE_NAME}_mdecoy")
DATABASE_URL=$decoy_url MIGRATION_DATABASE_URL=$target_url "$BIN/api-gateway" migrate > "$work/mm" 2>&1; rc=$?
check_eq "migrate with MIGRATION_DATABASE_URL exits 0" 0 "$rc"
check_eq "MIGRATION_DATABASE_URL's database is migrated" "$slice_files" "$(recorded "$target_url")"
check_eq "DATABASE_URL's database is untouched" "f" \
  "$(psql -tA "$decoy_url" -c "SELECT to_regclass('schema_migrations') IS NOT NULL")"
(unset MIGRATION_DATABASE_URL; DATABASE_URL=$decoy_url "$BIN/api-gateway" migrate > "$work/mm" 2>&1); rc=$?
check_eq "migrate without MIGRATION_DATABASE_URL exits 0" 0 "$rc"
check_eq "without it, DATABASE_URL's database is migrated" "$slice_files" "$(recorded "$decoy_url")"

# cleanup: an old finished job moves to jobs_archive; a recent one stays.
uid=$(psql -tA "$TEST_DATABASE_URL" -c "INSERT INTO users (google_id, email) VALUES ('g-clean', 'clean@example.com') RETURNING id" | head -1)
psql -q "$TEST_DATABASE_URL" -c "
  INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name, status, created_at)
  VALUES ('$uid', 'old-file', 'old.jpg', 'f', 'portrait_pro', 'completed', now() - interval '100 days'),
         ('$uid', 'new-file', 'new.jpg', 'f', 'portrait_pro', 'completed', now() - interval '10 days')"
"$BIN/job-worker" cleanup > "$work/c" 2>&1; rc=$?
check_eq "job-worker cleanup exits 0" 0 "$rc"
check_eq "the old job is archived" "1" "$(psql -tA "$TEST_DATABASE_URL" -c "SELECT count(*) FROM jobs_archive WHERE drive_file_id = 'old-file'")"
check_eq "the old job left jobs" "0" "$(psql -tA "$TEST_DATABASE_URL" -c "SELECT count(*) FROM jobs WHERE drive_file_id = 'old-file'")"
check_eq "the recent job stays" "1" "$(psql -tA "$TEST_DATABASE_URL" -c "SELECT count(*) FROM jobs WHERE drive_file_id = 'new-file'")"
psql -q "$TEST_DATABASE_URL" -c "
  INSERT INTO webhook_events (event_id, event_type, payload, created_at)
  VALUES ('evt_old', 't', '{}', now() - interval '31 days'), ('evt_new', 't', '{}', now())"
"$BIN/billing-webhook" cleanup > "$work/c" 2>&1; rc=$?
check_eq "billing-webhook cleanup exits 0" 0 "$rc"
check_eq "old webhook events removed, recent kept" "evt_new" "$(psql -tA "$TEST_DATABASE_URL" -c "SELECT string_agg(event_id, ',') FROM webhook_events")"
for s in api-gateway drive-poller; do
  "$BIN/$s" cleanup > "$work/c" 2>&1; rc=$?
  check_eq "$s cleanup exits 0" 0 "$rc"
done

finish
