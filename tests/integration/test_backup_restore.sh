#!/usr/bin/env bash
# The backup and restore drill (issue 17), on the real PostgreSQL of tests/run,
# with the scripts installed by `make install DESTDIR=...` as the image has them:
#   1. the product populates its database itself: a user signs in through Google
#      (the fake), watches a Drive folder, a photo is processed (a job completes,
#      usage is counted);
#   2. ca-backup (the backup CronJob's command) dumps it while the daemons run:
#      one checked dump with the documented name, nothing else left, no password
#      printed; retention deletes only its own dumps older than BACKUP_KEEP_DAYS;
#      a failed pg_dump (no database; one that dies half-way) leaves no dump file,
#      exits non-zero and deletes nothing;
#   3. ca-restore into a new, empty database (a non-empty one is refused), then
#      ca-migrate applies nothing; owners, row-level security and grants survive;
#   4. the four daemons on the restored database: the session signs in still
#      (/api/me 200, same user), usage and jobs are intact, a new photo is processed.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

work=$(mktemp -d /tmp/ca-drill.XXXXXX)
chmod 755 "$work"
pids=()
RESTORED=${TEST_DATABASE_NAME}_restored
SU="postgresql://postgres@127.0.0.1:$TEST_PG_PORT"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  psql -q "$SU/postgres" -c "DROP DATABASE IF EXISTS $RESTORED WITH (FORCE)" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
unset MIGRATION_DATABASE_URL BACKUP_DATABASE_URL RESTORE_DATABASE_URL BACKUP_DIR BACKUP_KEEP_DAYS

# ---- the install, as the image has it ----
root=$work/root
make -s -C "$CA_ROOT" install BUILD="${CA_BIN%/bin}" SANITIZE="${SANITIZE:-}" DESTDIR="$root" PREFIX=/usr/local \
  > "$work/install.log" 2>&1
check "make install DESTDIR=... PREFIX=/usr/local" test -x "$root/usr/local/bin/ca-backup"
BIN=$root/usr/local/bin

# ---- the fake Google (Drive on disk) and the four daemons ----
drive=$work/drive
mkdir -p "$drive"
"$CA_ROOT/tests/fakes/run" google --port 0 --data-dir "$drive" > "$work/google.log" 2>&1 &
pids+=($!)
disown $! # killed at the end without a word from bash
G=
for _ in $(seq 1 100); do
  G=$(sed -n 's/^.*listening on 127\.0\.0\.1:\([0-9]*\).*$/\1/p' "$work/google.log" | grep -v '^$' | head -1)
  [ -n "$G" ] && break
  sleep 0.1
done
check "the Google fake is up" [ -n "$G" ]
G=http://127.0.0.1:$G

export REDIS_URL=$TEST_REDIS_URL LISTEN_ADDR=127.0.0.1 LOG_LEVEL=info
export ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64) SESSION_SECRET=drill-session-secret-0123456789
export GOOGLE_CLIENT_ID=test-client GOOGLE_CLIENT_SECRET=test-google-secret-xyz
export GOOGLE_AUTH_URL=$G/o/oauth2/v2/auth GOOGLE_TOKEN_URL=$G/token GOOGLE_USERINFO_URL=$G/v1/userinfo
export GOOGLE_REVOKE_URL=$G/revoke DRIVE_API_URL=$G/drive/v3 DRIVE_UPLOAD_URL=$G/upload/drive/v3
export STRIPE_WEBHOOK_SECRET=whsec_drill_secret STRIPE_SECRET_KEY=sk_test_drill STRIPE_API_URL=http://127.0.0.1:9
# Short leases: the dump is made while the daemons run, so it may hold a
# folder's poll lease (or a job's) of that moment; on the restored database
# that folder is polled again only when the lease runs out (docs/operations.md,
# "Restore"), which must come well within wait_job's 60 s (at the default
# 120 s it did not: a poll caught running in the dump, under ASan).
export POLL_INTERVAL_SECONDS=1 RETENTION_AT=off WORKER_CONCURRENCY=1 POLL_LEASE_SECONDS=5 WORKER_LEASE_SECONDS=10
declare -A port pid
for s in api-gateway billing-webhook drive-poller job-worker; do port[$s]=$(free_port); done
GW=http://127.0.0.1:${port[api-gateway]}
export PUBLIC_URL=$GW

start_all() { # DB: the four daemons, each as its own role
  local s
  for s in api-gateway billing-webhook drive-poller job-worker; do
    PORT=${port[$s]} DATABASE_URL="postgresql://ca_${s//-/_}@127.0.0.1:$TEST_PG_PORT/$1" \
      "$BIN/$s" serve >> "$work/$s.log" 2>&1 &
    pid[$s]=$!
    pids+=($!)
  done
  for s in api-gateway billing-webhook drive-poller job-worker; do
    check "$s serves on $1 (/readyz)" wait_http "http://127.0.0.1:${port[$s]}/readyz" 20
  done
}
stop_all() {
  local s rc
  for s in api-gateway billing-webhook drive-poller job-worker; do kill -TERM "${pid[$s]}" 2>/dev/null; done
  for s in api-gateway billing-webhook drive-poller job-worker; do
    wait "${pid[$s]}"; rc=$?
    check_eq "$s stops with exit 0" 0 "$rc"
  done
}

json() { node -e "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{const v=JSON.parse(d||'null');console.log(eval(process.argv[1]))})" "$1"; }
JAR=$work/cookies
api() { curl -s -b "$JAR" -H "Origin: $GW" -H 'Content-Type: application/json' "$@"; }
csrf=
capi() { api -H "X-CSRF-Token: $csrf" "$@"; }
q() { psql -X -qtA "$SU/$1" -c "$2"; }

# wait_job NAME: the job of that Drive file completes (60 s); prints its status
wait_job() {
  local st=
  for _ in $(seq 1 240); do
    st=$(api "$GW/api/jobs?limit=100" | json "((v&&v.jobs)||[]).filter(j=>j.drive_file_name==='$1').map(j=>j.status)[0]||''")
    case "$st" in completed|failed) break ;; esac
    sleep 0.25
  done
  echo "$st"
}

start_all "$TEST_DATABASE_NAME"

# ---- 1. the product fills its database ----
EMAIL=drill@example.com
auth=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$JAR" -b "$JAR" "$GW/auth/google/login?login_hint=$EMAIL")
callback=$(curl -s -o /dev/null -w '%{redirect_url}' "$auth")
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$JAR" -b "$JAR" "$callback")
check_eq "sign-in through Google (the fake) sets a session" 302 "$code"
api "$GW/api/me" > "$work/me.before"
uid=$(json 'v.id' < "$work/me.before")
csrf=$(json 'v.csrf_token' < "$work/me.before")
check "GET /api/me names the user" grep -q "\"email\":\"$EMAIL\"" "$work/me.before"

mkdir -p "$drive/$EMAIL/Inbox"
folder=
for _ in $(seq 1 50); do
  folder=$(api "$GW/api/drive/folders" | json '((v&&v.folders)||[]).filter(f=>f.name==="Inbox").map(f=>f.id)[0]||""')
  [ -n "$folder" ] && break
  sleep 0.2
done
check "the Drive folder is listed" [ -n "$folder" ]
code=$(capi -o /dev/null -w '%{http_code}' -X PATCH "$GW/api/me" -d '{"default_preset":"portrait_pro"}')
check_eq "default preset set" 200 "$code"
code=$(capi -o /dev/null -w '%{http_code}' -X PUT "$GW/api/watch" -d "{\"folder_id\":\"$folder\"}")
check_eq "the folder is watched" 200 "$code"
cp "$CA_ROOT/tests/fixtures/astronaut.png" "$drive/$EMAIL/Inbox/astronaut.png"
check_eq "a photo dropped in the folder is processed (job completed)" completed "$(wait_job astronaut.png)"
api "$GW/api/usage" > "$work/usage.before"
used=$(json 'JSON.stringify(v)' < "$work/usage.before")
echo "# usage before the backup: $used"
n=$(q "$TEST_DATABASE_NAME" "SELECT coalesce(sum(images_processed), 0) FROM usage_tracking WHERE user_id = '$uid'")
check "usage_tracking counts the processed photo (got $n)" [ "$n" -ge 1 ]

# The rows the restore must bring back (the daemons keep running after the
# backup: compare the tables they do not touch while idle).
TABLES="users jobs usage_tracking subscriptions presets schema_migrations"
snapshot() { # DB
  local t
  for t in $TABLES; do
    echo "$t $(q "$1" "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM $t x")"
  done
}

# ---- 2. ca-backup ----
backups=$work/backups
mkdir -p "$backups"
PW=drill-Secret-pw-4711
BURL="postgresql://postgres:$PW@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME"
# The dump is made while the daemons run; make it hold a poll lease of a
# poller instance that will be gone (as a poll caught running would), 20 s
# long: the restored product must poll that folder again once it runs out.
q "$TEST_DATABASE_NAME" "UPDATE drive_polls SET lease_owner = 'drill-gone', lease_expires_at = timezone('UTC', now()) + interval '20 seconds' WHERE active" > /dev/null
snapshot "$TEST_DATABASE_NAME" > "$work/snap.source"
BACKUP_DATABASE_URL=$BURL BACKUP_DIR=$backups "$BIN/ca-backup" > "$work/backup.out" 2>&1; rc=$?
check_eq "ca-backup exits 0" 0 "$rc"
dumps=$(ls "$backups")
check "one dump named creator-automation-<UTC YYYYmmddTHHMMSSZ>.dump (got: $dumps)" \
  bash -c "[[ '$dumps' =~ ^creator-automation-[0-9]{8}T[0-9]{6}Z\\.dump$ ]]"
dump=$backups/$dumps
check "the dump reads back (pg_restore --list)" bash -c "pg_restore --list '$dump' > /dev/null"
check "the dump holds the jobs' data" bash -c "pg_restore --list '$dump' | grep -q 'TABLE DATA public jobs'"
check "ca-backup prints no password" bash -c "! grep -q '$PW' '$work/backup.out'"
check "ca-backup names the file it wrote" grep -q "wrote $dump" "$work/backup.out"
check "the dump is readable by its owner only (umask 077)" bash -c "[ \"\$(stat -c %a '$dump')\" = 600 ]"

# retention: its own dumps older than BACKUP_KEEP_DAYS go, nothing else
touch -d '20 days ago' "$backups/creator-automation-20200101T000000Z.dump" "$backups/notes-20-days-old.txt"
touch -d '10 days ago' "$backups/creator-automation-20200111T000000Z.dump"
sleep 1.1 # a new second: a new name
BACKUP_DATABASE_URL=$BURL BACKUP_DIR=$backups BACKUP_KEEP_DAYS=14 "$BIN/ca-backup" > "$work/backup2.out" 2>&1; rc=$?
check_eq "a second ca-backup exits 0" 0 "$rc"
check "retention deleted the 20-day-old dump" test ! -e "$backups/creator-automation-20200101T000000Z.dump"
check "retention kept the 10-day-old dump (BACKUP_KEEP_DAYS=14)" test -e "$backups/creator-automation-20200111T000000Z.dump"
check "retention kept a file that is not a dump" test -e "$backups/notes-20-days-old.txt"
check "retention logged what it deleted" grep -q 'deleted old dump .*creator-automation-20200101T000000Z.dump' "$work/backup2.out"
check_eq "two fresh dumps and the kept one" 3 "$(ls "$backups" | grep -c '^creator-automation-.*\.dump$')"

# a failed pg_dump: no dump file, non-zero, retention not run
touch -d '20 days ago' "$backups/creator-automation-20200102T000000Z.dump"
before=$(ls -a "$backups" | sort)
sleep 1.1
BACKUP_DATABASE_URL="postgresql://postgres:$PW@127.0.0.1:$TEST_PG_PORT/no_such_database" BACKUP_DIR=$backups \
  "$BIN/ca-backup" > "$work/backup3.out" 2>&1; rc=$?
check "ca-backup of a missing database exits non-zero (got $rc)" [ "$rc" -ne 0 ]
check_eq "... and leaves the folder as it was (no dump, no partial, no deletion)" "$before" "$(ls -a "$backups" | sort)"
check "... and prints no password" bash -c "! grep -q '$PW' '$work/backup3.out'"
# pg_dump dying half-way (a stand-in that writes part of a dump, then fails)
mkdir -p "$work/fakebin"
cat > "$work/fakebin/pg_dump" <<'EOF'
#!/bin/sh
for a in "$@"; do case "$a" in --file=*) f=${a#--file=} ;; esac; done
printf 'PGDMP partial' > "$f"
echo "pg_dump: error: connection lost" >&2
exit 1
EOF
chmod +x "$work/fakebin/pg_dump"
sleep 1.1
PATH="$work/fakebin:$PATH" BACKUP_DATABASE_URL=$BURL BACKUP_DIR=$backups "$BIN/ca-backup" > "$work/backup4.out" 2>&1; rc=$?
check "a pg_dump that fails half-way: exit non-zero (got $rc)" [ "$rc" -ne 0 ]
check_eq "... and no file left (not even the partial one)" "$before" "$(ls -a "$backups" | sort)"
BACKUP_DATABASE_URL=$BURL BACKUP_DIR=$work/nonexistent "$BIN/ca-backup" > /dev/null 2>&1; rc=$?
check_eq "a BACKUP_DIR that does not exist: exit 2" 2 "$rc"
(unset BACKUP_DATABASE_URL; BACKUP_DIR=$backups "$BIN/ca-backup" > /dev/null 2>&1); rc=$?
check_eq "no BACKUP_DATABASE_URL: exit 2" 2 "$rc"

# ---- 3. restore into a new database, then ca-migrate ----
stop_all
q postgres "CREATE DATABASE $RESTORED TEMPLATE template0" > /dev/null
RURL="postgresql://postgres:$PW@127.0.0.1:$TEST_PG_PORT/$RESTORED"
RESTORE_DATABASE_URL=$RURL "$BIN/ca-restore" "$dump" > "$work/restore.out" 2>&1; rc=$?
check_eq "ca-restore into an empty database exits 0" 0 "$rc"
check "ca-restore prints no password" bash -c "! grep -q '$PW' '$work/restore.out'"
RESTORE_DATABASE_URL=$RURL "$BIN/ca-restore" "$dump" > "$work/restore2.out" 2>&1; rc=$?
check_eq "ca-restore into a database that is not empty: exit 2" 2 "$rc"
check "... saying so" grep -q 'not empty' "$work/restore2.out"
RESTORE_DATABASE_URL=$RURL "$BIN/ca-restore" "$work/google.log" > /dev/null 2>&1; rc=$?
check_eq "ca-restore of a file that is not a dump: exit 2" 2 "$rc"

MIGRATION_DATABASE_URL=$RURL "$BIN/ca-migrate" > "$work/migrate.out" 2>&1; rc=$?
check_eq "ca-migrate on the restored database exits 0" 0 "$rc"
check_eq "... and applies nothing in all four slices" 4 "$(grep -c '0 file(s) applied, schema up to date' "$work/migrate.out")"
check "ca-migrate prints no password" bash -c "! grep -q '$PW' '$work/migrate.out'"
snapshot "$RESTORED" > "$work/snap.restored"
check "users, jobs, usage, subscriptions, presets, schema_migrations: same rows" diff "$work/snap.source" "$work/snap.restored"
check_eq "owners kept: jobs belongs to ca_job_worker" ca_job_worker "$(q "$RESTORED" "SELECT tableowner FROM pg_tables WHERE tablename = 'jobs'")"
check_eq "owners kept: users belongs to ca_api_gateway" ca_api_gateway "$(q "$RESTORED" "SELECT tableowner FROM pg_tables WHERE tablename = 'users'")"
check_eq "row-level security kept on users" "$(q "$TEST_DATABASE_NAME" "SELECT relrowsecurity::text || relforcerowsecurity::text FROM pg_class WHERE oid = 'users'::regclass")" \
  "$(q "$RESTORED" "SELECT relrowsecurity::text || relforcerowsecurity::text FROM pg_class WHERE oid = 'users'::regclass")"
GRANTS="SELECT count(*) || ' ' || md5(string_agg(g, ',' ORDER BY g)) FROM (SELECT grantee || ':' || table_name || ':' || privilege_type AS g FROM information_schema.role_table_grants WHERE grantee LIKE 'ca\\_%') x"
check_eq "the service roles' table grants kept" "$(q "$TEST_DATABASE_NAME" "$GRANTS")" "$(q "$RESTORED" "$GRANTS")"
check_eq "no service role may CREATE in public after ca-migrate" 0 \
  "$(q "$RESTORED" "SELECT count(*) FROM unnest(ARRAY['ca_api_gateway','ca_billing_webhook','ca_job_worker','ca_drive_poller']) r WHERE has_schema_privilege(r, 'public', 'CREATE')")"
for s in api-gateway billing-webhook job-worker drive-poller; do
  DATABASE_URL="postgresql://ca_${s//-/_}@127.0.0.1:$TEST_PG_PORT/$RESTORED" WAIT_SCHEMA_SECONDS=5 \
    "$BIN/$s" wait-schema > /dev/null 2>&1; rc=$?
  check_eq "$s wait-schema (its own role) on the restored database: exit 0" 0 "$rc"
done

# ca-migrate stops at the first slice that fails (here a changed checksum in
# api-gateway's records), runs none after it, exits 1; without its URL, exit 2.
saved=$(q "$RESTORED" "SELECT checksum FROM schema_migrations WHERE service = 'api-gateway' AND version = '001'")
q "$RESTORED" "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE service = 'api-gateway' AND version = '001'" > /dev/null
MIGRATION_DATABASE_URL=$RURL "$BIN/ca-migrate" > "$work/migrate-fail.out" 2>&1; rc=$?
check_eq "ca-migrate with a failing first slice exits 1" 1 "$rc"
check "... names the slice that failed" grep -q 'api-gateway migrate failed' "$work/migrate-fail.out"
check "... and runs no slice after it" bash -c "! grep -q 'migrating billing-webhook' '$work/migrate-fail.out'"
q "$RESTORED" "UPDATE schema_migrations SET checksum = '$saved' WHERE service = 'api-gateway' AND version = '001'" > /dev/null
(unset MIGRATION_DATABASE_URL; "$BIN/ca-migrate" > /dev/null 2>&1); rc=$?
check_eq "ca-migrate without MIGRATION_DATABASE_URL exits 2" 2 "$rc"

# ---- 4. the product on the restored database ----
check_eq "the dump holds the gone poller's lease" 1 \
  "$(q "$RESTORED" "SELECT count(*) FROM drive_polls WHERE lease_owner = 'drill-gone'")"
start_all "$RESTORED"
api "$GW/api/me" > "$work/me.after"
check_eq "the session still signs in (/api/me, same user)" "$uid" "$(json 'v&&v.id' < "$work/me.after")"
check_eq "usage intact (GET /api/usage)" "$used" "$(api "$GW/api/usage" | json 'JSON.stringify(v)')"
check_eq "the completed job is listed" completed "$(wait_job astronaut.png)"
cp "$CA_ROOT/tests/fixtures/coffee.png" "$drive/$EMAIL/Inbox/coffee.png"
check_eq "a new photo is processed on the restored database (job completed)" completed "$(wait_job coffee.png)"
check_eq "the new job is in the restored database" 1 \
  "$(q "$RESTORED" "SELECT count(*) FROM jobs WHERE drive_file_name = 'coffee.png' AND status = 'completed'")"
check_eq "... not in the old one" 0 "$(q "$TEST_DATABASE_NAME" "SELECT count(*) FROM jobs WHERE drive_file_name = 'coffee.png'")"
n2=$(q "$RESTORED" "SELECT coalesce(sum(images_processed), 0) FROM usage_tracking WHERE user_id = '$uid'")
check_eq "usage counts on from the restored value" "$((n + 1))" "$n2"
stop_all
check "no sanitizer report in the daemons' logs" bash -c "! grep -qE 'Sanitizer|runtime error' '$work'/*.log"
if [ "$_fail" -gt 0 ]; then
  for f in "$work"/*.out "$work"/api-gateway.log "$work"/job-worker.log "$work"/drive-poller.log "$work/install.log"; do
    echo "----- $f (last 30 lines)"; tail -n 30 "$f" | cut -c1-400
  done
fi
finish
