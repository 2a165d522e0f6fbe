#!/usr/bin/env bash
# Benchmark: Stripe webhook events verified and recorded per second by
# billing-webhook, against pgbench doing single-row INSERTs at the same
# concurrency on the same PostgreSQL, in the same run. Prints the ratio
# (target: >= 0.5).
#
# The driver (node) signs every event itself (HMAC-SHA256 of "t.payload" with
# the endpoint secret, as Stripe does; this is load, not a test of our
# verification) and POSTs them over keep-alive connections. Each event has a
# new id and is a customer.subscription.updated for a customer we do not know,
# so each one is verified, parsed, inserted into webhook_events and run
# through the apply function (which looks the customer up).
#
#   BENCH_SECONDS (10)  BENCH_CONCURRENCY (8)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
SECONDS_RUN=${BENCH_SECONDS:-10}
CONC=${BENCH_CONCURRENCY:-8}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

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
pgbench_out=$("$PGBIN/pgbench" -n -c "$CONC" -j 2 -T "$SECONDS_RUN" -f "$script" "$admin_url/bench" 2>&1)
pg_tps=$(echo "$pgbench_out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
[ -n "$pg_tps" ] || { echo "pgbench failed:"; echo "$pgbench_out"; exit 1; }

# ---- billing-webhook ----
secret=whsec_bench_secret
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
DATABASE_URL="postgresql://ca_billing_webhook@127.0.0.1:$TEST_PG_PORT/bench" \
  REDIS_URL=$TEST_REDIS_URL PORT=$port LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn \
  STRIPE_WEBHOOK_SECRET=$secret STRIPE_PRICE_CREATOR=price_c STRIPE_PRICE_STUDIO=price_s \
  WEBHOOK_PG_POOL_SIZE=$CONC "$BIN/billing-webhook" serve > "$CA_TEST_DIR/billing.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

result=$(node - "$port" "$secret" "$CONC" "$SECONDS_RUN" <<'JS'
const http = require('http');
const crypto = require('crypto');
const [port, secret, conc, secs] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
const agent = new http.Agent({ keepAlive: true, maxSockets: conc });
let n = 0, ok = 0, bad = 0, seq = 0;
const deadline = Date.now() + secs * 1000;
function event() {
  const id = `evt_bench_${process.pid}_${seq++}`;
  const created = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({
    id, object: 'event', api_version: '2025-03-31.basil', created, type: 'customer.subscription.updated',
    data: { object: { id: `sub_bench_${seq % 997}`, object: 'subscription', customer: `cus_bench_${seq % 997}`,
      status: 'active', cancel_at_period_end: false, metadata: {},
      items: { data: [{ price: { id: 'price_c' }, current_period_start: created, current_period_end: created + 2592000 }] } } },
    livemode: false, pending_webhooks: 1,
  });
  const sig = crypto.createHmac('sha256', secret).update(`${created}.${body}`).digest('hex');
  return { body, header: `t=${created},v1=${sig}` };
}
function worker() {
  return new Promise((resolve) => {
    const next = () => {
      if (Date.now() >= deadline) return resolve();
      const ev = event();
      const req = http.request({ host: '127.0.0.1', port, path: '/webhooks/stripe', method: 'POST', agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(ev.body), 'Stripe-Signature': ev.header } },
        (res) => { res.resume(); res.on('end', () => { n++; if (res.statusCode === 200) ok++; else bad++; next(); }); });
      req.on('error', () => { bad++; next(); });
      req.end(ev.body);
    };
    next();
  });
}
const t0 = process.hrtime.bigint();
Promise.all(Array.from({ length: conc }, worker)).then(() => {
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`${(ok / s).toFixed(1)} ${ok} ${bad}`);
  agent.destroy();
});
JS
)
read -r ev_rate ev_ok ev_bad <<<"$result"
recorded=$(psql -tA "$admin_url/bench" -c "SELECT count(*) FROM webhook_events")
ratio=$(awk -v a="$ev_rate" -v b="$pg_tps" 'BEGIN { printf "%.2f", a / b }')
echo "concurrency $CONC, ${SECONDS_RUN}s each"
echo "pgbench single-row INSERT: $pg_tps tps"
echo "webhook verified+recorded: $ev_rate events/s ($ev_ok answered 200, $ev_bad other; $recorded rows in webhook_events)"
echo "ratio webhook/pgbench: $ratio (target >= 0.5)"
if [ "$ev_bad" != "0" ] || [ "$recorded" != "$ev_ok" ]; then
  echo "bench_billing: some events were not recorded"; tail -20 "$CA_TEST_DIR/billing.log"; exit 1
fi
