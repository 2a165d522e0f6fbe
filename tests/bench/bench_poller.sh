#!/usr/bin/env bash
# Benchmark: the cost of an IDLE poll cycle of drive-poller over many watched
# folders on the Google fake (issue 5, "Cost").
#
# Seeds BENCH_FOLDERS users (one watched folder each; one active watch per user
# is the schema's rule) in the fake and in PostgreSQL (tokens sealed with the
# real common/crypto), in steady state: a saved changes token and a recent full
# listing, nothing due. Then makes a subset due at once and measures until
# every folder of it has been polled:
#   - Drive calls per folder (the fake's request log): must be 1 (changes.list);
#   - wall time of the cycle against POLL_INTERVAL_SECONDS (must fit: < 1);
#   - CPU of the poller process (utime+stime from /proc/<pid>/stat) over the
#     cycle's wall time, in cores (must be < 1).
# Baseline in the same run: the same cycle over BENCH_BASELINE folders; the
# ratio of per-folder wall and CPU shows how the cost scales.
#
#   BENCH_FOLDERS (10000)  BENCH_BASELINE (1000)  BENCH_INTERVAL (60)
#   BENCH_CONCURRENCY (8, POLLER_CONCURRENCY)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
N=${BENCH_FOLDERS:-10000}
NB=${BENCH_BASELINE:-1000}
INTERVAL=${BENCH_INTERVAL:-60}
CONC=${BENCH_CONCURRENCY:-8}
KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=

[ -x "$BIN/drive-poller" ] || { echo "bench_poller: $BIN/drive-poller is missing (make first)"; exit 1; }
[ -f build/lib/libcommon.a ] || { echo "bench_poller: build/lib/libcommon.a is missing (make first)"; exit 1; }

eval "$(tests/lib/services.sh start)"
fake_pid=
poller_pid=
cleanup() {
  [ -n "$poller_pid" ] && kill "$poller_pid" 2>/dev/null && wait "$poller_pid" 2>/dev/null
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null && wait "$fake_pid" 2>/dev/null
  tests/lib/services.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
W=$CA_TEST_DIR

# ---- database: every slice (psql, as docs/schema.md shows) ----
admin_url="postgresql://postgres@127.0.0.1:$TEST_PG_PORT"
DB="$admin_url/bench"
psql -q "$admin_url/postgres" -c "CREATE DATABASE bench" >/dev/null
for s in api-gateway billing-webhook job-worker drive-poller; do
  psql -q "$DB" -v ON_ERROR_STOP=1 -1 -f sql/000_roles.sql >/dev/null 2>&1
  for f in sql/$s/*.sql; do
    psql -q "$DB" -v ON_ERROR_STOP=1 -1 -c "SET LOCAL ROLE ca_${s//-/_}" -f "$f" >/dev/null
  done
done

# ---- the Google fake ----
tests/fakes/run google --port 0 > "$W/google.log" 2>&1 &
fake_pid=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$W/google.log" 2>/dev/null && break
  sleep 0.1
done
GPORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$W/google.log" | head -1)
[ -n "$GPORT" ] || { echo "the Google fake did not start"; cat "$W/google.log"; exit 1; }
G=http://127.0.0.1:$GPORT

# ---- seed N users with a folder each (admin API, 32 at a time) ----
t_seed=$(date +%s.%N)
node - "$G" "$N" > "$W/users.tsv" <<'JS'
const [base, n] = [process.argv[2], Number(process.argv[3])];
async function post(path, body) {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${path} ${r.status} ${await r.text()}`);
  return r.json();
}
(async () => {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const email = `bench${i}@example.com`;
      const u = await post('/__admin/users', { email, client_id: 'bench-client' });
      const f = await post('/__admin/files', { email, name: 'Watched', folder: true, parents: [u.root_id] });
      out[i] = [email, u.sub, u.access_token, u.refresh_token, f.id].join('\t');
    }
  }
  await Promise.all(Array.from({ length: 32 }, worker));
  process.stdout.write(out.join('\n') + '\n');
})().catch((e) => { console.error(e); process.exit(1); });
JS

# seal the tokens with the real envelope (common/crypto)
cat > "$W/seal.c" <<'C'
#include "crypto.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
    char err[256], line[4096];
    crypto_keyring_t *kr = crypto_keyring_new(argv[1], NULL, err, sizeof(err));
    if (kr == NULL || argc < 2) { fprintf(stderr, "seal: %s\n", err); return 1; }
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *f[5]; char *save = NULL; int n = 0;
        for (char *t = strtok_r(line, "\t", &save); t && n < 5; t = strtok_r(NULL, "\t", &save)) f[n++] = t;
        if (n != 5) continue;
        char *a = crypto_envelope_seal(kr, f[2]), *r = crypto_envelope_seal(kr, f[3]);
        printf("%s\t%s\t%s\t%s\t%s\n", f[0], f[1], a, r, f[4]);
        free(a); free(r);
    }
    crypto_keyring_free(kr);
    return 0;
}
C
cc -std=gnu11 -O1 -Icommon -o "$W/seal" "$W/seal.c" build/lib/libcommon.a \
  $(pkg-config --libs openssl libcjson libcurl libpq hiredis libevent libevent_pthreads) -lm -pthread
"$W/seal" "$KEY" < "$W/users.tsv" > "$W/sealed.tsv"
start_token=$(curl -sf -H "Authorization: Bearer $(head -1 "$W/users.tsv" | cut -f3)" \
  "$G/drive/v3/changes/startPageToken" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).startPageToken))')

psql -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TEMP TABLE seed (email text, sub text, a text, r text, folder text);
\copy seed FROM '$W/sealed.tsv'
INSERT INTO users (google_id, email, drive_access_token, drive_refresh_token, drive_token_expires_at)
  SELECT sub, email, a, r, timezone('UTC', now()) + interval '50 minutes' FROM seed;
SELECT count(drive_polls_start_watch(u.id, s.folder, NULL, '$start_token'))
  FROM seed s JOIN users u ON u.email = s.email;
-- steady state: token saved, listed recently, nothing due
UPDATE drive_polls SET last_full_scan_at = timezone('UTC', now()),
  next_poll_at = timezone('UTC', now()) + interval '1 day';
SQL
seed_s=$(echo "$(date +%s.%N) - $t_seed" | bc)
echo "seeded $N users/folders in ${seed_s}s (changes token $start_token)"

# ---- the poller ----
PPORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
DATABASE_URL="postgresql://ca_drive_poller@127.0.0.1:$TEST_PG_PORT/bench" REDIS_URL=$TEST_REDIS_URL \
  PORT=$PPORT LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn ENCRYPTION_KEY=$KEY \
  GOOGLE_CLIENT_ID=bench-client GOOGLE_CLIENT_SECRET=x GOOGLE_TOKEN_URL=$G/token \
  DRIVE_API_URL=$G/drive/v3 POLL_INTERVAL_SECONDS=$INTERVAL POLLER_CONCURRENCY=$CONC \
  "$BIN/drive-poller" serve > "$W/poller.log" 2>&1 &
poller_pid=$!
for _ in $(seq 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PPORT/readyz")" = 200 ] && break
  sleep 0.1
done

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$poller_pid/stat"; }

# cycle K: makes folders 1..K due at once; sets WALL, CPU, CALLS, OTHER.
cycle() {
  local k=$1 t0 c0 c1 s0 s1 left
  curl -sf -X DELETE "$G/__admin/requests" >/dev/null
  t0=$(psql -qtA "$DB" -c "SELECT timezone('UTC', now())")
  c0=$(cpu_ticks)
  s0=$(date +%s.%N)
  psql -q "$DB" -c "UPDATE drive_polls SET next_poll_at = timezone('UTC', now())
    WHERE id IN (SELECT d.id FROM drive_polls d JOIN users u ON u.id = d.user_id
                 WHERE substring(u.email from 'bench([0-9]+)@')::int < $k)" >/dev/null
  for _ in $(seq 6000); do
    left=$(psql -qtA "$DB" -c "SELECT count(*) FROM drive_polls d JOIN users u ON u.id = d.user_id
      WHERE substring(u.email from 'bench([0-9]+)@')::int < $k AND d.last_poll_at < '$t0'")
    [ "$left" = 0 ] && break
    sleep 0.05
  done
  s1=$(date +%s.%N)
  c1=$(cpu_ticks)
  WALL=$(echo "$s1 - $s0" | bc -l)
  CPU=$(echo "($c1 - $c0) / $TCK" | bc -l)
  read -r CALLS OTHER < <(curl -sf "$G/__admin/requests" | node -e '
    let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{
      const r = JSON.parse(s).requests.filter((x) => x.path.startsWith("/drive/v3/"));
      const ch = r.filter((x) => x.method === "GET" && x.path === "/drive/v3/changes").length;
      console.log(ch, r.length - ch); })')
  [ "$left" = 0 ] || { echo "cycle over $k folders did not finish"; tail -20 "$W/poller.log"; exit 1; }
  bad=$(psql -qtA "$DB" -c "SELECT count(*) FROM drive_polls WHERE poll_status <> 'success'")
  [ "$bad" = 0 ] || { echo "$bad folders failed"; tail -20 "$W/poller.log"; exit 1; }
}

cycle "$NB"
b_wall=$WALL b_cpu=$CPU b_calls=$CALLS b_other=$OTHER
sleep 1
cycle "$N"

f() { printf '%.3f' "$1"; }
echo "idle cycle, baseline $NB folders: $b_calls changes.list + $b_other other Drive calls," \
     "wall $(f "$b_wall")s, cpu $(f "$b_cpu")s"
echo "idle cycle, $N folders: $CALLS changes.list + $OTHER other Drive calls," \
     "wall $(f "$WALL")s, cpu $(f "$CPU")s (interval ${INTERVAL}s, $CONC poll threads)"
calls_per=$(echo "($CALLS + $OTHER) / $N" | bc -l)
wall_ratio=$(echo "$WALL / $INTERVAL" | bc -l)
cores=$(echo "$CPU / $WALL" | bc -l)
scale_wall=$(echo "($WALL / $N) / ($b_wall / $NB)" | bc -l)
scale_cpu=$(echo "($CPU / $N) / ($b_cpu / $NB)" | bc -l)
echo "ratio drive_calls_per_folder_per_cycle = $(f "$calls_per") (target 1)"
echo "ratio cycle_wall / interval            = $(f "$wall_ratio") (target < 1)"
echo "ratio poller_cpu / cycle_wall (cores)  = $(f "$cores") (target < 1)"
echo "ratio per-folder wall, $N vs $NB       = $(f "$scale_wall") (1 = linear)"
echo "ratio per-folder cpu, $N vs $NB        = $(f "$scale_cpu") (1 = linear)"
echo "per folder: $(echo "$WALL * 1000 / $N" | bc -l | xargs printf '%.2f') ms wall," \
     "$(echo "$CPU * 1000000 / $N" | bc -l | xargs printf '%.0f') us cpu"
ok=1
[ "$OTHER" = 0 ] && [ "$CALLS" = "$N" ] || ok=0
[ "$(echo "$wall_ratio < 1" | bc -l)" = 1 ] || ok=0
[ "$(echo "$cores < 1" | bc -l)" = 1 ] || ok=0
[ $ok = 1 ] && echo "bench_poller: OK" || { echo "bench_poller: target missed"; exit 1; }
