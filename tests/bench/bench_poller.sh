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
# A run is valid only when every step succeeded, every folder of a cycle was
# polled successfully and the fake answered every Drive call 2xx; otherwise the
# bench fails without figures.
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

. tests/lib/bench.sh
[ -x "$BIN/drive-poller" ] || bench_fail "$BIN/drive-poller is missing (make first)"

bench_start bench_poller
bench_database # every slice (psql, as docs/schema.md shows)
bench_google

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

[ "$(grep -c . "$W/users.tsv")" = "$N" ] || bench_fail "seeded $(grep -c . "$W/users.tsv") users, want $N"
# seal the tokens with the real envelope (common/crypto)
cut -f3 "$W/users.tsv" | bench_seal "$KEY" > "$W/access.sealed"
cut -f4 "$W/users.tsv" | bench_seal "$KEY" > "$W/refresh.sealed"
paste <(cut -f1,2 "$W/users.tsv") "$W/access.sealed" "$W/refresh.sealed" <(cut -f5 "$W/users.tsv") \
  > "$W/sealed.tsv"
[ "$(grep -c . "$W/sealed.tsv")" = "$N" ] || bench_fail "sealed $(grep -c . "$W/sealed.tsv") users, want $N"
start_token=$(curl -sf -H "Authorization: Bearer $(head -1 "$W/users.tsv" | cut -f3)" \
  "$G/drive/v3/changes/startPageToken" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).startPageToken))')
[ -n "$start_token" ] || bench_fail "no changes start token from the fake"

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
seeded=$(psql -qtA "$DB" -c "SELECT count(*) FROM drive_polls WHERE active")
[ "$seeded" = "$N" ] || bench_fail "$seeded watches in PostgreSQL, want $N"
seed_s=$(echo "$(date +%s.%N) - $t_seed" | bc)
echo "seeded $N users/folders in ${seed_s}s (changes token $start_token)"

# ---- the poller ----
PPORT=$(bench_free_port)
DATABASE_URL="postgresql://ca_drive_poller@127.0.0.1:$TEST_PG_PORT/bench" REDIS_URL=$TEST_REDIS_URL \
  PORT=$PPORT LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn ENCRYPTION_KEY=$KEY \
  GOOGLE_CLIENT_ID=bench-client GOOGLE_CLIENT_SECRET=x GOOGLE_TOKEN_URL=$G/token \
  DRIVE_API_URL=$G/drive/v3 POLL_INTERVAL_SECONDS=$INTERVAL POLLER_CONCURRENCY=$CONC \
  "$BIN/drive-poller" serve > "$W/poller.log" 2>&1 &
poller_pid=$!
bench_track "$poller_pid"
bench_wait_ready "http://127.0.0.1:$PPORT/readyz" "$W/poller.log"

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$poller_pid/stat"; }

# cycle K: makes folders 1..K due at once; sets WALL, CPU, CALLS, OTHER.
# Fails the run when the cycle does not finish, a folder's poll failed or the
# fake answered a Drive call with anything but 2xx.
cycle() {
  local k=$1 t0 c0 c1 s0 s1 left counts errors bad
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
  counts=$(curl -sf "$G/__admin/requests" | node -e '
    let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{
      const r = JSON.parse(s).requests.filter((x) => x.path.startsWith("/drive/v3/"));
      const ch = r.filter((x) => x.method === "GET" && x.path === "/drive/v3/changes").length;
      console.log(ch, r.length - ch); })')
  read -r CALLS OTHER <<<"$counts"
  [ "$left" = 0 ] || bench_fail "cycle over $k folders did not finish ($left left)" "$W/poller.log"
  errors=$(bench_fake_errors "$G")
  [ "$errors" = 0 ] || bench_fail "the fake answered $errors Drive calls with other than 2xx" "$W/poller.log"
  bad=$(psql -qtA "$DB" -c "SELECT count(*) FROM drive_polls WHERE poll_status <> 'success'")
  [ "$bad" = 0 ] || bench_fail "$bad folders failed" "$W/poller.log"
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
