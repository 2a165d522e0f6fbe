#!/usr/bin/env bash
# Benchmark: fair scheduling between users and tiers (issue 15).
#
# A studio user drops BENCH_STUDIO (500) small photos, a creator BENCH_CREATOR
# (100), then a free user 1, all pushed at once in that order, through the
# job-worker (BENCH_CONCURRENCY threads, 2) with the Google fake and a
# pass-through preset. Two runs in the same bench, with the same worker:
#   FIFO  the ids LPUSHed to the legacy list ca:jobs in that order (today's
#         single FIFO queue: the take script serves it as one list);
#   FAIR  the ids pushed to each user's list with the user's tier
#         (queue_push_user, as the poller does).
# A warm-up of 8 studio jobs runs first (not measured).
# Printed per run: the free user's wait (start - push) and each user's p95 wait
# in units of the mean job time (mean of completed_at - started_at), and the
# throughput (jobs / (last completion - first push)); FAIR against FIFO.
# Targets: FAIR's free photo starts within 3 mean job times; FAIR throughput
# >= 0.95x FIFO.
#
# A run is valid only when every command succeeded, every job completed with
# its output in the fake's Drive and the fake answered every call 2xx.
#
#   BENCH_STUDIO (500)  BENCH_CREATOR (100)  BENCH_CONCURRENCY (2)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
NSTUDIO=${BENCH_STUDIO:-500}
NCREATOR=${BENCH_CREATOR:-100}
CONC=${BENCH_CONCURRENCY:-2}
KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=

. tests/lib/bench.sh
[ -x "$BIN/job-worker" ] || bench_fail "$BIN/job-worker is missing (make first)"
[ -f build/lib/libcommon.a ] || bench_fail "build/lib/libcommon.a is missing (make first)"
for tool in vips node psql redis-cli bc; do
  command -v "$tool" >/dev/null || bench_fail "$tool is missing"
done
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo "met"; else echo "MISSED"; fi; }

bench_start bench_fair
bench_database
bench_google

# The pusher: lines "job_id user_id tier" on stdin, pushed in order with
# queue_push_user (tier "-": the legacy list, as today's LPUSH ca:jobs); prints
# "job_id push_ms" (Unix ms after the push).
cat > "$W/bench_push.c" <<'C'
#include "queue.h"
#include "now.h"
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv)
{
    char err[256], line[512], id[128], user[128], tier[32];
    redis_conn_t *r = argc == 2 ? redis_connect(argv[1], 5000, err, sizeof(err)) : NULL;
    if (r == NULL) {
        fprintf(stderr, "bench_push: %s\n", argc == 2 ? err : "usage: bench_push REDIS_URL");
        return 1;
    }
    while (fgets(line, sizeof(line), stdin) != NULL) {
        if (sscanf(line, "%127s %127s %31s", id, user, tier) != 3) {
            fprintf(stderr, "bench_push: bad line: %s", line);
            return 1;
        }
        int rc = strcmp(tier, "-") == 0 ? queue_push(r, id, err, sizeof(err))
                                        : queue_push_user(r, id, user, tier, err, sizeof(err));
        if (rc != 0) {
            fprintf(stderr, "bench_push: %s\n", err);
            return 1;
        }
        printf("%s %lld\n", id, (long long)now_wall_ms());
    }
    redis_close(r);
    return 0;
}
C
# shellcheck disable=SC2046  # pkg-config's words are the flags
cc -std=gnu11 -O1 -Icommon -o "$W/bench_push" "$W/bench_push.c" build/lib/libcommon.a \
  $(pkg-config --libs openssl libcjson libcurl libpq hiredis libevent libevent_pthreads) -lm -pthread

# the input: a 200x150 JPEG (the astronaut, scaled)
vips resize tests/fixtures/astronaut.png "$W/small.v" 0.390625 --vscale 0.29296875
vips copy "$W/small.v" "$W/small.jpg[Q=85]"

# Three Google users, each with an Inbox and a Processed folder, and for each
# run (fifo, fair) its files: studio NSTUDIO, creator NCREATOR, free 1.
node - "$G" "$NSTUDIO" "$NCREATOR" "$W/small.jpg" > "$W/seed.tsv" <<'JS'
const [base, ns, nc, img] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const content_base64 = require('fs').readFileSync(img).toString('base64');
async function post(path, body) {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${path} ${r.status} ${await r.text()}`);
  return r.json();
}
(async () => {
  for (const [tier, n] of [['studio', ns], ['creator', nc], ['free', 1]]) {
    const email = `bench.fair.${tier}@example.com`;
    const u = await post('/__admin/users', { email, client_id: 'bench-client' });
    const inbox = await post('/__admin/files', { email, name: 'Inbox', folder: true, parents: [u.root_id] });
    const out = await post('/__admin/files', { email, name: 'Processed', folder: true, parents: [inbox.id] });
    console.log(['U', tier, email, u.sub, u.access_token, u.refresh_token, inbox.id, out.id].join('\t'));
    for (const run of ['warm', 'fifo', 'fair']) {
      const count = run === 'warm' ? (tier === 'studio' ? 8 : 0) : n;
      let next = 0;
      const ids = new Array(count);
      async function worker() {
        for (;;) {
          const i = next++;
          if (i >= count) return;
          const f = await post('/__admin/files', { email, name: `${run}-${tier}-${i}.jpg`, mimeType: 'image/jpeg', parents: [inbox.id], content_base64 });
          ids[i] = f.id;
        }
      }
      await Promise.all(Array.from({ length: 16 }, worker));
      for (const id of ids) console.log(['F', tier, run, id].join('\t'));
    }
  }
})().catch((e) => { console.error(e); process.exit(1); });
JS

grep '^U' "$W/seed.tsv" > "$W/users.tsv"
[ "$(grep -c . "$W/users.tsv")" = 3 ] || bench_fail "seeded $(grep -c . "$W/users.tsv") users, want 3"
while IFS=$'\t' read -r _ tier email sub access refresh inbox processed; do
  sa=$(bench_seal "$KEY" <<<"$access")
  sr=$(bench_seal "$KEY" <<<"$refresh")
  awk -F'\t' -v t="$tier" '$1 == "F" && $2 == t { print $3 "\t" $4 }' "$W/seed.tsv" > "$W/files-$tier.tsv"
  psql -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (google_id, email, drive_access_token, drive_refresh_token, drive_token_expires_at,
                   watched_folder_id, output_folder_id)
  VALUES ('$sub', '$email', '$sa', '$sr', timezone('UTC', now()) + interval '50 minutes', '$inbox', '$processed');
DELETE FROM subscriptions WHERE user_id = (SELECT id FROM users WHERE email = '$email');
INSERT INTO subscriptions (user_id, tier, status, monthly_limit)
  SELECT id, '$tier', 'active', 100000 FROM users WHERE email = '$email';
INSERT INTO presets (created_by_user_id, name, workflow_json)
  SELECT id, 'passthrough', '{"1":{"class_type":"LoadImage","inputs":{"image":"x.jpg"}},
    "2":{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"p"}}}'
  FROM users WHERE email = '$email';
CREATE TEMP TABLE f (run text, id text);
\copy f FROM '$W/files-$tier.tsv'
CREATE TABLE IF NOT EXISTS bench_runs (job_id uuid PRIMARY KEY, run text, tier text, seq int);
INSERT INTO bench_runs
  SELECT r.job_id, f.run, '$tier', row_number() OVER (ORDER BY f.id)
  FROM f, users u, LATERAL jobs_create_for_drive_file(u.id, f.id, f.id || '.jpg',
    '$inbox', 1000, 'image/jpeg', 'passthrough') AS r WHERE u.email = '$email';
SQL
done < "$W/users.tsv"
total=$((2 * (NSTUDIO + NCREATOR + 1) + 8))
[ "$(psql -At "$DB" -c "SELECT count(*) FROM jobs WHERE status = 'queued'")" = "$total" ] ||
  bench_fail "the jobs were not all created queued"

WPORT=$(bench_free_port)
# WORKER_REPUSH_SECONDS=3600: the recovery task must not push the queued jobs itself
DATABASE_URL="postgresql://ca_job_worker@127.0.0.1:$TEST_PG_PORT/bench" REDIS_URL=$TEST_REDIS_URL \
  PORT=$WPORT LISTEN_ADDR=127.0.0.1 LOG_LEVEL=warn ENCRYPTION_KEY=$KEY WORKER_CONCURRENCY=$CONC \
  WORKER_REPUSH_SECONDS=3600 \
  GOOGLE_CLIENT_ID=bench-client GOOGLE_CLIENT_SECRET=x GOOGLE_TOKEN_URL=$G/token \
  DRIVE_API_URL=$G/drive/v3 DRIVE_UPLOAD_URL=$G/upload/drive/v3 \
  "$BIN/job-worker" > "$W/worker.log" 2>&1 &
worker_pid=$!
bench_track "$worker_pid"
bench_wait_ready "http://127.0.0.1:$WPORT/readyz" "$W/worker.log"

# run MODE: pushes the run's ids (studio, creator, free, each in file order),
# waits for them all, loads the push times into bench_push_ms.
run() {
  local mode=$1 left deadline
  psql -At -F ' ' "$DB" -v ON_ERROR_STOP=1 -c "SELECT b.job_id, j.user_id,
      CASE WHEN '$mode' = 'fifo' THEN '-' ELSE b.tier END
    FROM bench_runs b JOIN jobs j ON j.id = b.job_id WHERE b.run = '$mode'
    ORDER BY CASE b.tier WHEN 'studio' THEN 0 WHEN 'creator' THEN 1 ELSE 2 END, b.seq" \
    > "$W/push-$mode.txt"
  "$W/bench_push" "$TEST_REDIS_URL" < "$W/push-$mode.txt" > "$W/pushed-$mode.txt"
  [ "$(grep -c . "$W/pushed-$mode.txt")" = "$(grep -c . "$W/push-$mode.txt")" ] ||
    bench_fail "$mode: not every id pushed"
  deadline=$(( $(date +%s) + 900 ))
  while :; do
    left=$(psql -At "$DB" -c "SELECT count(*) FROM jobs j JOIN bench_runs b ON b.job_id = j.id
      WHERE b.run = '$mode' AND j.status NOT IN ('completed', 'failed')")
    [ "$left" = 0 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || bench_fail "$mode: $left jobs still unfinished after 900 s" "$W/worker.log"
    sleep 0.5
  done
  psql -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE IF NOT EXISTS bench_push_ms (job_id uuid PRIMARY KEY, push_ms bigint);
\copy bench_push_ms FROM '$W/pushed-$mode.txt' WITH (DELIMITER ' ')
SQL
}

# report MODE: prints the run's figures; sets THROUGHPUT and FREE_WAIT (in mean job times).
report() {
  local mode=$1 failed
  failed=$(psql -At "$DB" -c "SELECT count(*) FROM jobs j JOIN bench_runs b ON b.job_id = j.id
    WHERE b.run = '$mode' AND j.status <> 'completed'")
  [ "$failed" = 0 ] || bench_fail "$mode: $failed jobs did not complete" "$W/worker.log"
  psql -At -F ' ' "$DB" -v ON_ERROR_STOP=1 > "$W/report-$mode.txt" <<SQL
WITH t AS (
  SELECT b.tier, p.push_ms / 1000.0 AS pushed, extract(epoch FROM j.started_at) AS started,
         extract(epoch FROM j.completed_at) AS completed
  FROM bench_runs b JOIN jobs j ON j.id = b.job_id JOIN bench_push_ms p ON p.job_id = b.job_id
  WHERE b.run = '$mode'),
m AS (SELECT avg(completed - started) AS job_s, min(pushed) AS t0, max(completed) AS t1,
             count(*) AS n FROM t)
SELECT 'M', round(m.job_s::numeric, 4)::text, round((m.n / (m.t1 - m.t0))::numeric, 2)::text,
       m.n::text FROM m
UNION ALL
SELECT 'T', t.tier, round((percentile_cont(0.95) WITHIN GROUP (ORDER BY (t.started - t.pushed)::float8)
         / (SELECT job_s FROM m)::float8)::numeric, 2)::text,
       round((max(t.started - t.pushed) / (SELECT job_s FROM m))::numeric, 2)::text
FROM t GROUP BY t.tier
UNION ALL
SELECT 'F', count(*)::text, round(((SELECT max(pushed) FROM t) - min(t.pushed))::numeric * 1000, 1)::text,
       round(((SELECT started - pushed FROM t WHERE tier = 'free') * 1000)::numeric, 1)::text
FROM t WHERE t.started < (SELECT pushed FROM t WHERE tier = 'free');
SQL
  local mline job_s n
  mline=$(grep '^M ' "$W/report-$mode.txt")
  read -r _ job_s THROUGHPUT n <<<"$mline"
  [ -n "$THROUGHPUT" ] || bench_fail "$mode: no figures" "$W/report-$mode.txt"
  FREE_WAIT=$(awk '$1 == "T" && $2 == "free" { print $4 }' "$W/report-$mode.txt")
  [ -n "$FREE_WAIT" ] || bench_fail "$mode: no wait for the free user" "$W/report-$mode.txt"
  printf '%s: %d jobs, %.1f jobs/s (%d threads), mean job time %.1f ms\n' \
    "$mode" "$n" "$THROUGHPUT" "$CONC" "$(echo "$job_s * 1000" | bc -l)"
  printf '  free user: waited %s mean job times\n' "$FREE_WAIT"
  awk '$1 == "F" { printf "  (pushing took %s ms; %s jobs started before the free push; the free job started %s ms after it)\n", $3, $2, $4 }' "$W/report-$mode.txt"
  psql -At "$DB" -c "SELECT string_agg(left(b.tier, 1), '' ORDER BY j.started_at) FROM jobs j
    JOIN bench_runs b ON b.job_id = j.id WHERE b.run = '$mode'" | sed 's/^/  start order: /' | cut -c1-120
  awk '$1 == "T" { printf "  %-7s p95 wait %s mean job times (max %s)\n", $2, $3, $4 }' "$W/report-$mode.txt"
}

run warm # 8 studio jobs first: connections, caches (not measured)
run fifo
report fifo
fifo_tp=$THROUGHPUT
run fair
report fair
fair_tp=$THROUGHPUT
fair_free=$FREE_WAIT
ratio=$(echo "$fair_tp / $fifo_tp" | bc -l)
printf 'fair: the late free photo started after %s mean job times (target <= 3: %s)\n' \
  "$fair_free" "$(verdict "$fair_free <= 3")"
printf 'fair / fifo throughput = %.3f (target >= 0.95: %s)\n' "$ratio" "$(verdict "$ratio >= 0.95")"

# a run with failures or lost outputs is no measurement
outputs=0
while IFS=$'\t' read -r _ tier _ _ access _ _ processed; do
  n=$(bench_drive_count "$access" "$processed")
  outputs=$((outputs + n))
done < "$W/users.tsv"
[ "$outputs" = "$total" ] || bench_fail "$outputs outputs in Processed for $total completed jobs" "$W/worker.log"
fake_errors=$(bench_fake_errors "$G")
[ "$fake_errors" = 0 ] || bench_fail "the fake answered $fake_errors calls with other than 2xx" "$W/worker.log"
