#!/usr/bin/env bash
# The one-machine runner behind `make run`: PostgreSQL, Redis, the fakes of
# Google, Stripe and SMTP, and the four daemons, all under ./var/ (kept between
# runs; `make run-clean` wipes it). Ctrl-C stops everything.
#
#   CA_RUN_EXIT_WHEN_READY=1 deploy/local/run.sh   start, check, stop
#   CA_RUN_DEMO_EXIT=1 deploy/local/run.sh         start, process the samples, stop (tests)
#   CA_RUN_NO_DEMO=1 deploy/local/run.sh           start, seed the Stripe fake, stay up (browser tests)
#   CA_VAR=/tmp/x  CA_*_PORT=...  CA_BIN=...          another data folder, ports, binaries (tests)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VAR=${CA_VAR:-$ROOT/var}
BIN=${CA_BIN:-$ROOT/build/bin}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

PG_PORT=${CA_PG_PORT:-55432}
REDIS_PORT=${CA_REDIS_PORT:-56379}
GATEWAY_PORT=${CA_GATEWAY_PORT:-8080}
BILLING_PORT=${CA_BILLING_PORT:-8081}
POLLER_PORT=${CA_POLLER_PORT:-9102}
WORKER_PORT=${CA_WORKER_PORT:-9103}
GOOGLE_PORT=${CA_GOOGLE_PORT:-9201}
STRIPE_PORT=${CA_STRIPE_PORT:-9202}
SMTP_PORT=${CA_SMTP_PORT:-9203}
SMTP_ADMIN_PORT=${CA_SMTP_ADMIN_PORT:-9204}

mkdir -p "$VAR/logs" "$VAR/run" "$VAR/drive"
pids=()

say() { printf '\033[1m[run]\033[0m %s\n' "$*"; }

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# ---- secrets, generated once and kept in var/ ----
if [ ! -f "$VAR/secrets.env" ]; then
  umask 077
  cat > "$VAR/secrets.env" <<SECRETS
ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
SESSION_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')
GOOGLE_CLIENT_ID=creator-automation-local
GOOGLE_CLIENT_SECRET=local-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
STRIPE_SECRET_KEY=sk_test_local$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
STRIPE_WEBHOOK_SECRET=whsec_local$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
SECRETS
  umask 022
  say "development secrets generated in $VAR/secrets.env"
fi
set -a; . "$VAR/secrets.env"; set +a

stop_all() {
  trap '' INT TERM   # a second Ctrl-C or SIGTERM does not cut the stop short
  trap - EXIT
  say "stopping…"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  as_pg "$PGBIN/pg_ctl" -D "$VAR/pg" -m fast -w stop >/dev/null 2>&1 || true
  say "stopped. Data is kept in $VAR (make run-clean wipes ./var)."
  exit "${1:-0}"
}
trap 'stop_all 0' INT TERM
trap 'stop_all $?' EXIT

# ---- PostgreSQL ----
if [ ! -d "$VAR/pg/base" ]; then
  mkdir -p "$VAR/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$VAR/pg"; chmod 755 "$VAR"; fi
  as_pg "$PGBIN/initdb" -D "$VAR/pg" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$VAR/logs/initdb.log"
  echo "unix_socket_directories = '$VAR/pg'" >> "$VAR/pg/postgresql.conf"
fi
as_pg "$PGBIN/pg_ctl" -D "$VAR/pg" -l "$VAR/pg/server.log" -w \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1" start >/dev/null
say "PostgreSQL 15 on 127.0.0.1:$PG_PORT (data in $VAR/pg)"
ADMIN_URL="postgresql://postgres@127.0.0.1:$PG_PORT/creator_automation"
if ! psql -tA "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" -c "SELECT 1 FROM pg_database WHERE datname='creator_automation'" | grep -q 1; then
  psql -q "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" -c "CREATE DATABASE creator_automation"
fi

# ---- Redis ----
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$VAR" \
  --logfile "$VAR/logs/redis.log" --appendonly yes --appendfilename redis.aof >/dev/null
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
say "Redis on 127.0.0.1:$REDIS_PORT"

# ---- migrations, in slice order ----
for s in api-gateway billing-webhook job-worker drive-poller; do
  MIGRATION_DATABASE_URL=$ADMIN_URL DATABASE_URL=$ADMIN_URL LOG_LEVEL=warn "$BIN/$s" migrate \
    >>"$VAR/logs/migrate.log" 2>&1 || { cat "$VAR/logs/migrate.log"; exit 1; }
done
say "schema migrated (each slice owned by its service's role)"

# start NAME CMD...: runs a process with its output in var/logs/NAME.log and,
# prefixed with its name, on this terminal.
start() {
  local name=$1; shift
  "$@" > >(tee -a "$VAR/logs/$name.log" | sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)   # the process itself, so Ctrl-C can stop it with SIGTERM
}

# ---- the fakes of what cannot be reached from here ----
if [ -x tests/fakes/run ] && [ -f tests/fakes/google.js ]; then
  # the consent page offers the demo's account to a newcomer's browser
  google_user=()
  if [ "${CA_RUN_NO_DEMO:-0}" != 1 ]; then google_user=(--default-user "${CA_DEMO_EMAIL:-demo@example.com}"); fi
  start google tests/fakes/run google --port "$GOOGLE_PORT" --data-dir "$VAR/drive" \
    --client-id "$GOOGLE_CLIENT_ID" --client-secret "$GOOGLE_CLIENT_SECRET" "${google_user[@]}"
fi
if [ -x tests/fakes/run ] && [ -f tests/fakes/stripe.js ]; then
  start stripe tests/fakes/run stripe --port "$STRIPE_PORT" --api-key "$STRIPE_SECRET_KEY" \
    --webhook-url "http://127.0.0.1:$BILLING_PORT/webhooks/stripe" --webhook-secret "$STRIPE_WEBHOOK_SECRET"
fi
if [ -x tests/fakes/run ] && [ -f tests/fakes/smtp.js ]; then
  start smtp tests/fakes/run smtp --port "$SMTP_PORT" --admin-port "$SMTP_ADMIN_PORT"
fi

# Wait until the fakes answer.
for pair in google:$GOOGLE_PORT stripe:$STRIPE_PORT smtp:$SMTP_ADMIN_PORT; do
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:${pair##*:}/__admin/health" && break
    sleep 0.1
  done
done
say "fakes of Google (Drive backed by $VAR/drive), Stripe and SMTP are up"

# ---- the four daemons, each as its own database role ----
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" LISTEN_ADDR=127.0.0.1
export PUBLIC_URL="http://localhost:$GATEWAY_PORT"
export GOOGLE_AUTH_URL="http://127.0.0.1:$GOOGLE_PORT/o/oauth2/v2/auth"
export GOOGLE_TOKEN_URL="http://127.0.0.1:$GOOGLE_PORT/token"
export GOOGLE_USERINFO_URL="http://127.0.0.1:$GOOGLE_PORT/v1/userinfo"
export GOOGLE_REVOKE_URL="http://127.0.0.1:$GOOGLE_PORT/revoke"
export DRIVE_API_URL="http://127.0.0.1:$GOOGLE_PORT/drive/v3"
export DRIVE_UPLOAD_URL="http://127.0.0.1:$GOOGLE_PORT/upload/drive/v3"
export STRIPE_API_URL="http://127.0.0.1:$STRIPE_PORT"
export STRIPE_PRICE_CREATOR=price_creator_local STRIPE_PRICE_STUDIO=price_studio_local
export SMTP_URL="smtp://127.0.0.1:$SMTP_PORT" POLL_INTERVAL_SECONDS=${POLL_INTERVAL_SECONDS:-5}
# Retention (jobs older than 90 days archived, old webhook events, usage and
# audit rows deleted) runs inside each daemon every day at RETENTION_AT (UTC),
# as in production; `RETENTION_AT=off make run` turns it off.
export RETENTION_AT=${RETENTION_AT:-02:00}
db() { echo "postgresql://$1@127.0.0.1:$PG_PORT/creator_automation"; }
start api-gateway env PORT=$GATEWAY_PORT DATABASE_URL="$(db ca_api_gateway)" "$BIN/api-gateway" serve
start billing-webhook env PORT=$BILLING_PORT DATABASE_URL="$(db ca_billing_webhook)" "$BIN/billing-webhook" serve
# Drive push notifications, routed locally: the Google fake POSTs each change
# to the poller's own /webhooks/drive (http is allowed to a loopback host), so a
# photo dropped into the Inbox is picked up in about a second instead of at the
# next poll. CA_RUN_NO_PUSH=1: polling only, as in production without the URL.
push_env=()
if [ "${CA_RUN_NO_PUSH:-0}" != 1 ]; then
  push_env=(DRIVE_WEBHOOK_URL="http://127.0.0.1:$POLLER_PORT/webhooks/drive")
fi
start drive-poller env PORT=$POLLER_PORT DATABASE_URL="$(db ca_drive_poller)" "${push_env[@]}" "$BIN/drive-poller" serve
start job-worker env PORT=$WORKER_PORT DATABASE_URL="$(db ca_job_worker)" "$BIN/job-worker" serve

ready=1
for pair in api-gateway:$GATEWAY_PORT billing-webhook:$BILLING_PORT drive-poller:$POLLER_PORT job-worker:$WORKER_PORT; do
  name=${pair%%:*}; port=${pair##*:}; ok=0
  for _ in $(seq 1 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; then ok=1; break; fi
    sleep 0.1
  done
  if [ "$ok" -eq 1 ]; then say "$name ready on :$port"; else say "$name is NOT ready on :$port"; ready=0; fi
done
[ "$ready" -eq 1 ] || exit 1
say "ready: all four daemons answer /readyz (retention daily at $RETENTION_AT UTC)"
if [ "${#push_env[@]}" -gt 0 ]; then
  say "Drive push notifications on: the Google fake posts changes to http://127.0.0.1:$POLLER_PORT/webhooks/drive (polling every ${POLL_INTERVAL_SECONDS} s stays as the safety net)"
else
  say "Drive push notifications off (CA_RUN_NO_PUSH=1): polling every ${POLL_INTERVAL_SECONDS} s"
fi
# Prices the Stripe fake sells, so Checkout works for the tiers.
curl -sf -o /dev/null -X POST "http://127.0.0.1:$STRIPE_PORT/__admin/seed" -H 'Content-Type: application/json' \
  -d '{"prices":[{"id":"'$STRIPE_PRICE_CREATOR'","nickname":"Creator","unit_amount":2900,"recurring":{"interval":"month"},"product":"prod_creator"},
                 {"id":"'$STRIPE_PRICE_STUDIO'","nickname":"Studio","unit_amount":9900,"recurring":{"interval":"month"},"product":"prod_studio"}]}' || true

if [ "${CA_RUN_EXIT_WHEN_READY:-0}" = 1 ]; then exit 0; fi
if [ "${CA_RUN_NO_DEMO:-0}" = 1 ]; then
  say "dashboard: http://localhost:$GATEWAY_PORT (no demo user; Ctrl-C stops everything)"
  wait
  exit 0
fi

# ---- the demo: a photographer signs in, watches Inbox, drops photos ----
DEMO_EMAIL=${CA_DEMO_EMAIL:-demo@example.com}
GW="http://127.0.0.1:$GATEWAY_PORT"
ORIGIN="Origin: http://localhost:$GATEWAY_PORT"
JAR="$VAR/run/demo.cookies"
INBOX="$VAR/drive/$DEMO_EMAIL/Inbox"
json() { node -e "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{const v=JSON.parse(d);console.log(eval(process.argv[1]))})" "$1"; }

# Sign in through the real OAuth flow: gateway → Google fake (consents as the
# demo user) → callback → session cookie.
rm -f "$JAR"
auth_url=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$JAR" -b "$JAR" "$GW/auth/google/login?login_hint=$DEMO_EMAIL")
callback=$(curl -s -o /dev/null -w '%{redirect_url}' "$auth_url")
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$JAR" -b "$JAR" "${callback/localhost/127.0.0.1}")
[ "$code" = 302 ] || { say "sign-in failed (HTTP $code)"; exit 1; }
api() { curl -s -b "$JAR" -H "$ORIGIN" -H 'Content-Type: application/json' "$@"; }
say "signed in as $DEMO_EMAIL through Google OAuth (the fake)"

# The Inbox folder, on disk in the fake Drive, watched with portrait_pro.
mkdir -p "$INBOX"
folder_id=""
for _ in $(seq 1 50); do
  folder_id=$(api "$GW/api/drive/folders" | json '(v.folders||[]).filter(f=>f.name==="Inbox").map(f=>f.id)[0]||""')
  [ -n "$folder_id" ] && break
  sleep 0.2
done
[ -n "$folder_id" ] || { say "the fake Drive did not show Inbox"; exit 1; }
api -o /dev/null -X PATCH "$GW/api/me" -d '{"default_preset":"portrait_pro"}'
watch_status=$(api -o /dev/null -w '%{http_code}' -X PUT "$GW/api/watch" -d "{\"folder_id\":\"$folder_id\"}")
[ "$watch_status" = 200 ] || { say "watching Inbox failed (HTTP $watch_status)"; exit 1; }
say "watching $INBOX with portrait_pro (outputs land in $INBOX/Processed)"

# Sample photos: scikit-image's freely licensed ones, checked in under
# tests/fixtures (astronaut: public domain; coffee, chelsea: CC0; see its README.md).
SAMPLES="$ROOT/tests/fixtures"
dropped=()
for f in astronaut coffee chelsea; do
  if [ ! -f "$INBOX/$f.png" ]; then
    cp "$SAMPLES/$f.png" "$INBOX/$f.png"; dropped+=("$f.png")
  fi
done
if [ "${#dropped[@]}" -gt 0 ]; then
  say "dropped ${dropped[*]} into the inbox"
  declare -A seen result
  deadline=$(( $(date +%s) + ${CA_DEMO_TIMEOUT:-180} ))
  while :; do
    listing=$(api "$GW/api/jobs?limit=100")
    lines=$(echo "$listing" | json '(v.jobs||[]).map(j=>[j.drive_file_name,j.status,j.preset_name,j.processing_time_ms,j.output_file_name,j.error_code].join("|")).join("\n")')
    finished=0
    while IFS='|' read -r name status preset ms out errc; do
      [ -n "$name" ] || continue
      case " ${dropped[*]} " in *" $name "*) ;; *) continue ;; esac
      if [ "${seen[$name]:-}" != "$status" ]; then
        seen[$name]=$status
        say "job $name: $status${errc:+ ($errc)}"
      fi
      case "$status" in
        completed)
          finished=$((finished + 1))
          result[$name]=$(printf '  %s\n    input:  %s\n    output: %s\n    preset: %s, processed in %s ms' \
            "$name" "$INBOX/$name" "$INBOX/Processed/$out" "$preset" "$ms") ;;
        failed)
          finished=$((finished + 1))
          result[$name]=$(printf '  %s\n    failed: %s' "$name" "$errc") ;;
      esac
    done <<< "$lines"
    [ "$finished" -ge "${#dropped[@]}" ] && break
    if [ "$(date +%s)" -gt "$deadline" ]; then say "the samples did not finish in time"; exit 1; fi
    sleep 1
  done
  say "the samples are processed:"
  for name in "${dropped[@]}"; do echo "${result[$name]}"; done
  for name in "${dropped[@]}"; do
    [ -n "${result[$name]##*failed:*}" ] || { say "a sample failed"; exit 1; }
  done
else
  say "the samples were processed on an earlier run (see $INBOX/Processed)"
fi

cat <<NEXT

  Creator Automation is running on this machine.

  Gateway:        http://localhost:$GATEWAY_PORT   (health: /healthz, metrics: /metrics)
  Stripe webhook: http://localhost:$BILLING_PORT/webhooks/stripe
  Logs:           $VAR/logs/<process>.log (and here, prefixed with the process name)
  Data:           $VAR (PostgreSQL, Redis, the fake Drive in $VAR/drive/)

  Dashboard:      http://localhost:$GATEWAY_PORT  (signed in as $DEMO_EMAIL: open
                  http://localhost:$GATEWAY_PORT/auth/google/login?login_hint=$DEMO_EMAIL)
  Drop photos in: $INBOX
                  (outputs appear in $INBOX/Processed within a poll or two)
  Upgrade the plan through Stripe (the fake) with a signed test event:
                  deploy/local/upgrade.sh creator
  Ctrl-C stops everything.

NEXT

if [ "${CA_RUN_EXIT_WHEN_READY:-0}" = 1 ] || [ "${CA_RUN_DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
wait
