#!/usr/bin/env bash
# Benchmark: Stripe webhook events verified and recorded per second by
# billing-webhook, against pgbench doing single-row INSERTs on the same
# PostgreSQL, in the same run. Both run at each concurrency of the sweep
# (8 and 32 connections by default: Stripe delivers an endpoint's events over
# many connections at once); the ratio is printed per concurrency and, as the
# figure for the target (>= 0.5), best against best: the webhook's highest
# rate over pgbench's highest. The daemon runs with its own defaults (its
# PostgreSQL pool of 4, group commit).
#
# The events are signed before the clock starts (HMAC-SHA256 of "t.payload"
# with the endpoint secret, as Stripe does) and replayed by wrk over
# keep-alive connections, so the driver takes little CPU from the daemon and
# PostgreSQL. Each event has a new id and is a customer.subscription.updated
# for a customer we do not know, so each one is verified, parsed, looked up
# and inserted into webhook_events.
#
#   BENCH_SECONDS (10)  BENCH_CONCURRENCY ("8 32")  BENCH_WRK_THREADS (2)
#   BENCH_EVENTS (15000 per second of run)  BENCH_POOL (the daemon's default)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
SECONDS_RUN=${BENCH_SECONDS:-10}
CONCS=${BENCH_CONCURRENCY:-8 32}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
WRK_THREADS=${BENCH_WRK_THREADS:-2}

if ! command -v wrk >/dev/null; then
  echo "bench_billing: installing wrk (Debian package)"
  { apt-get install -y wrk || sudo apt-get install -y wrk; } >/dev/null 2>&1 ||
    { echo "bench_billing: wrk is missing (apt-get install wrk)"; exit 1; }
fi

for b in api-gateway billing-webhook; do
  [ -x "$BIN/$b" ] || { echo "bench_billing: $BIN/$b is missing (make first)"; exit 1; }
done

eval "$(tests/lib/services.sh start)"
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  tests/lib/services.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

admin_url="postgresql://postgres@127.0.0.1:$TEST_PG_PORT"
psql -q "$admin_url/postgres" -c "CREATE DATABASE bench" >/dev/null
# billing's slice needs the gateway's users table; a later gateway migration
# that fails does not matter here, billing's own must succeed.
DATABASE_URL="$admin_url/bench" LOG_LEVEL=error "$BIN/api-gateway" migrate >/dev/null 2>&1 ||
  echo "(api-gateway migrate reported an error; continuing with its applied files)"
DATABASE_URL="$admin_url/bench" LOG_LEVEL=warn "$BIN/billing-webhook" migrate >/dev/null

# ---- baseline: pgbench single-row inserts ----
psql -q "$admin_url/bench" -c "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY,
  k TEXT UNIQUE NOT NULL, payload JSONB NOT NULL, created_at TIMESTAMP DEFAULT NOW())" >/dev/null
script=$CA_TEST_DIR/insert.sql
cat > "$script" <<'SQL'
INSERT INTO bench_rows (k, payload) VALUES (md5(random()::text || clock_timestamp()::text), '{"id":"evt","type":"customer.subscription.updated"}');
SQL
declare -A pg_tps ev_rate
for c in $CONCS; do
  pgbench_out=$("$PGBIN/pgbench" -n -c "$c" -j 2 -T "$SECONDS_RUN" -f "$script" "$admin_url/bench" 2>&1)
  pg_tps[$c]=$(echo "$pgbench_out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  [ -n "${pg_tps[$c]}" ] || { echo "pgbench failed:"; echo "$pgbench_out"; exit 1; }
done

# ---- billing-webhook ----
secret=whsec_bench_secret
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
DATABASE_URL="postgresql://ca_billing_webhook@127.0.0.1:$TEST_PG_PORT/bench" \
  REDIS_URL=$TEST_REDIS_URL PORT=$port LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn \
  STRIPE_WEBHOOK_SECRET=$secret STRIPE_PRICE_CREATOR=price_c STRIPE_PRICE_STUDIO=price_s \
  env ${BENCH_POOL:+WEBHOOK_PG_POOL_SIZE=$BENCH_POOL} "$BIN/billing-webhook" serve > "$CA_TEST_DIR/billing.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 ||
  { echo "bench_billing: billing-webhook did not get ready"; tail -20 "$CA_TEST_DIR/billing.log"; exit 1; }

# The load: N events signed before the clock starts (node's crypto, HMAC-SHA256
# of "t.payload" as Stripe does), one per line "header<TAB>body", replayed by
# wrk (C, little CPU) with a Lua script that gives each thread its own share.
# Every event has a new id, so each request is verified, parsed, recorded and
# applied; the rate is the rows recorded during the run divided by its length,
# so a wrap-around (a duplicate) could never count.
nevents=${BENCH_EVENTS:-$((SECONDS_RUN * 15000))}
run_webhook() { # concurrency → ev_rate[c], or exits
local c=$1
local events=$CA_TEST_DIR/events$c.tsv
node - "$secret" "$nevents" "$events" "$c" <<'JS'
const crypto = require('crypto');
const fs = require('fs');
const [secret, n, out, run] = [process.argv[2], +process.argv[3], process.argv[4], process.argv[5]];
const created = Math.floor(Date.now() / 1000);
const lines = [];
for (let seq = 0; seq < n; seq++) {
  const body = JSON.stringify({
    id: `evt_bench_${process.pid}_${run}_${seq}`, object: 'event', api_version: '2025-03-31.basil', created,
    type: 'customer.subscription.updated',
    data: { object: { id: `sub_bench_${seq % 997}`, object: 'subscription', customer: `cus_bench_${seq % 997}`,
      status: 'active', cancel_at_period_end: false, metadata: {},
      items: { data: [{ price: { id: 'price_c' }, current_period_start: created, current_period_end: created + 2592000 }] } } },
    livemode: false, pending_webhooks: 1,
  });
  const sig = crypto.createHmac('sha256', secret).update(`${created}.${body}`).digest('hex');
  lines.push(`t=${created},v1=${sig}\t${body}`);
}
fs.writeFileSync(out, lines.join('\n') + '\n');
JS
local lua=$CA_TEST_DIR/replay$c.lua
cat > "$lua" <<LUA
local threads = $WRK_THREADS
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local reqs, i, n = {}, 0, 0
function init(args)
  local k = 0
  for line in io.lines("$events") do
    if k % threads == tid then
      local tab = line:find("\t", 1, true)
      n = n + 1
      reqs[n] = wrk.format("POST", "/webhooks/stripe",
        { ["Content-Type"] = "application/json", ["Stripe-Signature"] = line:sub(1, tab - 1) },
        line:sub(tab + 1))
    end
    k = k + 1
  end
end
function request()
  i = i % n + 1
  return reqs[i]
end
LUA
local before after wrk_out wrk_reqs ev_n wrk_t wrk_unit ev_bad ev_ok recorded_run
before=$(psql -tA "$admin_url/bench" -c "SELECT count(*) FROM webhook_events")
wrk_out=$(wrk -t "$WRK_THREADS" -c "$c" -d "${SECONDS_RUN}s" -s "$lua" "http://127.0.0.1:$port" 2>&1)
sleep 0.5  # requests cut off by wrk's stop may still be finishing
after=$(psql -tA "$admin_url/bench" -c "SELECT count(*) FROM webhook_events")
wrk_reqs=$(echo "$wrk_out" | sed -n 's/^ *\([0-9]*\) requests in \([0-9.]*\)\(m\?s\).*/\1 \2 \3/p')
read -r ev_n wrk_t wrk_unit <<<"$wrk_reqs"
[ -n "$ev_n" ] || { echo "wrk failed:"; echo "$wrk_out"; exit 1; }
[ "$wrk_unit" = ms ] && wrk_t=$(awk -v t="$wrk_t" 'BEGIN { print t / 1000 }')
ev_bad=$(echo "$wrk_out" | sed -n 's/.*Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p')
ev_bad=${ev_bad:-0}
ev_ok=$((ev_n - ev_bad))
recorded_run=$((after - before))
ev_rate[$c]=$(awk -v r="$ev_ok" -v t="$wrk_t" 'BEGIN { printf "%.1f", r / t }')
if [ "$ev_n" -ge "$nevents" ]; then
  echo "bench_billing: wrk sent $ev_n requests for $nevents events (raise BENCH_EVENTS)"; exit 1
fi
echo "concurrency $c: pgbench single-row INSERT ${pg_tps[$c]} tps; webhook verified+recorded ${ev_rate[$c]} events/s ($ev_ok answered 200 in ${wrk_t}s, $ev_bad other; $recorded_run rows recorded); ratio $(awk -v a="${ev_rate[$c]}" -v b="${pg_tps[$c]}" 'BEGIN { printf "%.2f", a / b }')"
# every 200 is a recorded row; a few more rows may come from requests wrk cut off
if [ "$ev_bad" != "0" ] || [ "$recorded_run" -lt "$ev_ok" ] || [ "$recorded_run" -gt $((ev_ok + c)) ]; then
  echo "bench_billing: some events were not recorded"; tail -20 "$CA_TEST_DIR/billing.log"; exit 1
fi
}

echo "concurrency ${CONCS// /, }; ${SECONDS_RUN}s per run"
best_pg=0; best_ev=0
for c in $CONCS; do
  run_webhook "$c"
  best_pg=$(awk -v a="$best_pg" -v b="${pg_tps[$c]}" 'BEGIN { print (b > a) ? b : a }')
  best_ev=$(awk -v a="$best_ev" -v b="${ev_rate[$c]}" 'BEGIN { print (b > a) ? b : a }')
done
echo "best pgbench single-row INSERT: $best_pg tps"
echo "best webhook verified+recorded: $best_ev events/s"
echo "ratio webhook/pgbench (best against best): $(awk -v a="$best_ev" -v b="$best_pg" 'BEGIN { printf "%.2f", a / b }') (target >= 0.5)"
