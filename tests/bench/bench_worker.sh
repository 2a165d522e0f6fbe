#!/usr/bin/env bash
# Benchmark: the job-worker (issue 4, "Speed and memory").
#
# 1. portrait_pro on a 12 MP JPEG with `job-worker render` against, in the same
#    run: `vips copy` of the same file (decode + encode; target: render <= 1.5x)
#    and ImageMagick `convert` doing the same operations (resize to a 3000 px
#    long edge, auto-levels, warmth, sharpen, vignette, JPEG 90; target: render
#    >= 5x faster). Best of BENCH_REPEAT runs (ImageMagick: one). Peak RSS of render from
#    /usr/bin/time -v (target <= 150 MB).
# 2. A pass-through preset (LoadImage -> SaveImage) through the whole queue with
#    the Google fake: BENCH_JOBS jobs pushed at once, jobs/s until all are
#    completed, against pgbench running the worker's commits per job (the claim
#    with its usage reservation, the completion: 2 short write transactions)
#    with the same number of clients (target: ratio >= 0.5).
#
# A run is valid only when every command succeeded, every render wrote its
# output, every job completed with its output in the fake's Drive and the fake
# answered every call 2xx: jobs that failed are not counted in jobs/s, and any
# of these fails the bench after its figures.
#
#   BENCH_REPEAT (3)  BENCH_JOBS (200)  BENCH_CONCURRENCY (2)
#   BENCH_PARTS ("render queue"): the sections to run
#   BENCH_STEPS (0): 1 runs the worker with LOG_LEVEL=debug and prints its mean time per step
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
REPEAT=${BENCH_REPEAT:-3}
NJOBS=${BENCH_JOBS:-200}
CONC=${BENCH_CONCURRENCY:-2}
PARTS=${BENCH_PARTS:-render queue}
KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=

. tests/lib/bench.sh
[ -x "$BIN/job-worker" ] || bench_fail "$BIN/job-worker is missing (make first)"

bench_start bench_worker
if [[ " $PARTS " == *" render "* ]] && ! convert -version 2>/dev/null | grep ImageMagick >/dev/null; then
  echo "bench_worker: installing imagemagick (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq imagemagick >/dev/null 2>&1 || true
  convert -version 2>/dev/null | grep ImageMagick >/dev/null ||
    bench_fail "ImageMagick's convert is missing (apt-get install imagemagick)"
fi
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo "met"; else echo "MISSED"; fi; }

# best wall time (s) of $REPEAT runs of a command (ImageMagick: one run, it is
# slow); a run that fails ends the bench with its output.
best() {
  local b=999999 t0 t1 d
  for _ in $(seq "$REPEAT"); do
    t0=$(date +%s.%N)
    "$@" > "$W/best.out" 2>&1 || { cat "$W/best.out" >&2; bench_fail "failed: $*"; }
    t1=$(date +%s.%N)
    d=$(echo "$t1 - $t0" | bc -l)
    if [ "$(echo "$d < $b" | bc -l)" = 1 ]; then b=$d; fi
  done
  printf '%.3f' "$b"
}

# ---------------------------------------------------------------- 1. one 12 MP JPEG
if [[ " $PARTS " == *" render "* ]]; then
# A real photo (tests/fixtures/astronaut.png, public domain) scaled to 4000x3000.
vips resize tests/fixtures/astronaut.png "$W/big.v" 7.8125 --vscale 5.859375 --kernel cubic
what="astronaut.png scaled"
vips copy "$W/big.v" "$W/in.jpg[Q=92]"
size=$(vipsheader "$W/in.jpg")
echo "input: $size ($what), $(stat -c %s "$W/in.jpg") bytes"

# each output must be there, a JPEG of the expected size (render: long edge 3000)
expect_jpeg() { # FILE WIDTH HEIGHT
  local got
  got=$(vipsheader -f width "$1")x$(vipsheader -f height "$1") || bench_fail "$1 is not an image"
  [ "$got" = "$2x$3" ] || bench_fail "$1 is $got, want $2x$3"
}
rm -f "$W/out.jpg" "$W/copy.jpg" "$W/im.jpg"
t_render=$(best "$BIN/job-worker" render portrait_pro "$W/in.jpg" "$W/out.jpg")
expect_jpeg "$W/out.jpg" 3000 2250
t_vips=$(best vips copy "$W/in.jpg" "$W/copy.jpg[Q=90]")
expect_jpeg "$W/copy.jpg" 4000 3000
t_im=$(REPEAT=1 best convert "$W/in.jpg" -resize '3000x3000>' -contrast-stretch 0.3%x0.3% \
  -color-matrix '1.06 0 0 0 1.0 0 0 0 0.94' -unsharp 0x1+0.08+0 \
  -background black -vignette 0x400+0+0 -quality 90 "$W/im.jpg")
expect_jpeg "$W/im.jpg" 3000 2250
/usr/bin/time -v -o "$W/time.txt" "$BIN/job-worker" render portrait_pro "$W/in.jpg" "$W/out.jpg" \
  > "$W/render.out" 2>&1 || { cat "$W/render.out" >&2; bench_fail "render under /usr/bin/time failed"; }
rss_kb=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/time.txt")
[ -n "$rss_kb" ] || bench_fail "no peak RSS from /usr/bin/time" "$W/time.txt"
rss_mb=$(echo "$rss_kb / 1024" | bc -l)
r_vips=$(echo "$t_render / $t_vips" | bc -l)
r_im=$(echo "$t_im / $t_render" | bc -l)
printf 'render portrait_pro: %ss   vips copy: %ss   ImageMagick: %ss\n' "$t_render" "$t_vips" "$t_im"
printf '  render / vips copy  = %.2fx (target <= 1.5x: %s)\n' "$r_vips" "$(verdict "$r_vips <= 1.5")"
printf '  ImageMagick / render = %.2fx (target >= 5x: %s)\n' "$r_im" "$(verdict "$r_im >= 5")"
printf '  peak RSS of render  = %.0f MB (target <= 150 MB: %s)\n' "$rss_mb" "$(verdict "$rss_mb <= 150")"
fi
[[ " $PARTS " == *" queue "* ]] || exit 0


# ---------------------------------------------------------------- 2. through the queue
bench_database
bench_google

# the queue's input: a 200x150 JPEG (the astronaut, scaled)
vips resize tests/fixtures/astronaut.png "$W/small.v" 0.390625 --vscale 0.29296875
vips copy "$W/small.v" "$W/small.jpg[Q=85]"
node - "$G" "$NJOBS" "$W/small.jpg" > "$W/seed.tsv" <<'JS'
const [base, n, img] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const content_base64 = require('fs').readFileSync(img).toString('base64');
async function post(path, body) {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${path} ${r.status} ${await r.text()}`);
  return r.json();
}
(async () => {
  const email = 'bench.worker@example.com';
  const u = await post('/__admin/users', { email, client_id: 'bench-client' });
  const inbox = await post('/__admin/files', { email, name: 'Inbox', folder: true, parents: [u.root_id] });
  const out = await post('/__admin/files', { email, name: 'Processed', folder: true, parents: [inbox.id] });
  console.log(['U', email, u.sub, u.access_token, u.refresh_token, inbox.id, out.id].join('\t'));
  let next = 0;
  const ids = new Array(n);
  async function worker() {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const f = await post('/__admin/files', { email, name: `b${i}.jpg`, mimeType: 'image/jpeg', parents: [inbox.id], content_base64 });
      ids[i] = f.id;
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker));
  for (const id of ids) console.log(['F', id].join('\t'));
})().catch((e) => { console.error(e); process.exit(1); });
JS

user_line=$(grep '^U' "$W/seed.tsv")
IFS=$'\t' read -r _ email sub access refresh inbox processed <<<"$user_line"
sa=$(bench_seal "$KEY" <<<"$access")
sr=$(bench_seal "$KEY" <<<"$refresh")
grep '^F' "$W/seed.tsv" | cut -f2 > "$W/files.txt"
[ "$(grep -c . "$W/files.txt")" = "$NJOBS" ] || bench_fail "seeded $(grep -c . "$W/files.txt") files, want $NJOBS"
psql -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (google_id, email, drive_access_token, drive_refresh_token, drive_token_expires_at,
                   watched_folder_id, output_folder_id)
  VALUES ('$sub', '$email', '$sa', '$sr', timezone('UTC', now()) + interval '50 minutes', '$inbox', '$processed');
INSERT INTO subscriptions (user_id, tier, status, monthly_limit)
  SELECT id, 'studio', 'active', 100000 FROM users WHERE email = '$email';
INSERT INTO presets (created_by_user_id, name, workflow_json)
  SELECT id, 'passthrough', '{"1":{"class_type":"LoadImage","inputs":{"image":"x.jpg"}},
    "2":{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"p"}}}'
  FROM users WHERE email = '$email';
CREATE TEMP TABLE f (id text);
\copy f FROM '$W/files.txt'
SELECT count(*) FROM f, users u, LATERAL jobs_create_for_drive_file(u.id, f.id, f.id || '.jpg',
  '$inbox', 1000, 'image/jpeg', 'passthrough') WHERE u.email = '$email';
SQL

WPORT=$(bench_free_port)
DATABASE_URL="postgresql://ca_job_worker@127.0.0.1:$TEST_PG_PORT/bench" REDIS_URL=$TEST_REDIS_URL \
  PORT=$WPORT LISTEN_ADDR=127.0.0.1 LOG_LEVEL=$([ "${BENCH_STEPS:-0}" = 1 ] && echo debug || echo warn) ENCRYPTION_KEY=$KEY WORKER_CONCURRENCY=$CONC \
  GOOGLE_CLIENT_ID=bench-client GOOGLE_CLIENT_SECRET=x GOOGLE_TOKEN_URL=$G/token \
  DRIVE_API_URL=$G/drive/v3 DRIVE_UPLOAD_URL=$G/upload/drive/v3 \
  "$BIN/job-worker" > "$W/worker.log" 2>&1 &
worker_pid=$!
bench_track "$worker_pid"
bench_wait_ready "http://127.0.0.1:$WPORT/readyz" "$W/worker.log"

psql -At "$DB" -c "SELECT id FROM jobs" > "$W/jobs.txt"
[ "$(grep -c . "$W/jobs.txt")" = "$NJOBS" ] || bench_fail "$(grep -c . "$W/jobs.txt") jobs created, want $NJOBS"
cpu_s() { bench_cpu_s "$1"; }
# PostgreSQL: the postmaster with its reaped children (cutime, cstime) plus the
# live backends, so backends that end during the run are counted too.
pm_pid=$(head -1 "$W/pg/postmaster.pid")
pg_cpu_s() {
  local hz; hz=$(getconf CLK_TCK)
  # a backend may end between the listing and the read: skip it (set -e, pipefail)
  { cat "/proc/$pm_pid/stat"; for c in $(cat "/proc/$pm_pid/task/$pm_pid/children" 2>/dev/null); do
      { cat "/proc/$c/stat" 2>/dev/null || true; } | sed 's/$/ self/'; done; } |
    awk -v hz="$hz" '{ t += $14 + $15; if ($NF != "self") t += $16 + $17 } END { printf "%.2f", t / hz }'
}
redis_pid=$(cat "$W/redis.pid")
w_cpu0=$(cpu_s "$worker_pid")
f_cpu0=$(cpu_s "$fake_pid")
p_cpu0=$(pg_cpu_s)
r_cpu0=$(cpu_s "$redis_pid")
t0=$(date +%s.%N)
# The legacy list ca:jobs (still read by the worker, taken as the free tier): one
# user here, so the fair queue would serve the same order.
xargs -n 500 redis-cli -p "$TEST_REDIS_PORT" LPUSH ca:jobs < "$W/jobs.txt" >/dev/null
# The end is the last completed_at (UTC, the same clock), so the poll can be
# slow and cheap: a psql every 50 ms would take CPU from the 2 cores measured.
deadline=$(( $(date +%s) + 600 ))
while :; do
  left=$(psql -At "$DB" -c "SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed')")
  [ "$left" = 0 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || bench_fail "$left jobs still unfinished after 600 s" "$W/worker.log"
  sleep 0.5
done
t1=$(psql -At "$DB" -c "SELECT extract(epoch FROM max(completed_at)) FROM jobs WHERE status = 'completed'")
w_cpu=$(echo "$(cpu_s "$worker_pid") - $w_cpu0" | bc -l)
f_cpu=$(echo "$(cpu_s "$fake_pid") - $f_cpu0" | bc -l)
p_cpu=$(echo "$(pg_cpu_s) - $p_cpu0" | bc -l)
r_cpu=$(echo "$(cpu_s "$redis_pid") - $r_cpu0" | bc -l)
done_ok=$(psql -At "$DB" -c "SELECT count(*) FROM jobs WHERE status = 'completed'")
done_failed=$((NJOBS - done_ok))
[ "$done_ok" -gt 0 ] || bench_fail "no job completed" "$W/worker.log"
wall=$(echo "$t1 - $t0" | bc -l)
jobs_s=$(echo "$done_ok / $wall" | bc -l) # completed jobs only
# where the Drive time went: the fake's request log, per call
node - "$G" "$wall" > "$W/calls.txt" <<'JS' || true
const [base, wall] = [process.argv[2], Number(process.argv[3])];
(async () => {
  const { requests } = await (await fetch(base + '/__admin/requests')).json();
  const by = new Map();
  for (const r of requests) {
    const k = `${r.method} ${r.path.replace(/\/files\/[^/]+/, '/files/ID')}`;
    const e = by.get(k) || { n: 0, ms: 0 };
    e.n++; e.ms += r.duration_ms || 0; by.set(k, e);
  }
  let tot = 0;
  for (const [k, e] of [...by].sort((a, b) => b[1].ms - a[1].ms)) {
    tot += e.ms;
    console.log(`  fake ${k}: ${e.n} calls, ${(e.ms / e.n).toFixed(2)} ms each`);
  }
  console.log(`  fake busy (sum of request durations): ${(tot / 1000).toFixed(2)} s of ${wall.toFixed(2)} s wall`);
})();
JS
# the outputs: one file per completed job in the Processed folder of the fake's Drive
outputs=$(node - "$G" "$access" "$processed" <<'JS'
const [base, token, folder] = process.argv.slice(2);
(async () => {
  let n = 0, page = '';
  do {
    const url = new URL(base + '/drive/v3/files');
    url.searchParams.set('q', `'${folder}' in parents and trashed = false`);
    url.searchParams.set('pageSize', '1000');
    if (page) url.searchParams.set('pageToken', page);
    const r = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    if (r.status !== 200) throw new Error(`files.list ${r.status} ${await r.text()}`);
    const j = await r.json();
    n += j.files.length;
    page = j.nextPageToken || '';
  } while (page);
  console.log(n);
})().catch((e) => { console.error(e); process.exit(1); });
JS
)
fake_errors=$(bench_fake_errors "$G")

# pgbench: the same 2 commits per job (claim + reservation in one statement,
# completion in one statement), the same number of clients
psql -q "$DB" -c "CREATE TABLE bench_jobs (id int PRIMARY KEY, status text, attempt int, n int);
  INSERT INTO bench_jobs SELECT g, 'queued', 0, 0 FROM generate_series(1, $NJOBS) g;" >/dev/null
cat > "$W/job.sql" <<'SQL'
\set id random(1, :njobs)
UPDATE bench_jobs SET status = 'processing', attempt = attempt + 1, n = n + 1 WHERE id = :id;
UPDATE bench_jobs SET status = 'completed' WHERE id = :id;
SQL
pb_pg0=$(pg_cpu_s)
pgbench -n -c "$CONC" -j "$CONC" -t $((NJOBS / CONC)) -D njobs="$NJOBS" -f "$W/job.sql" \
  "postgresql://postgres@127.0.0.1:$TEST_PG_PORT/bench" > "$W/pgbench.txt" 2>&1 ||
  bench_fail "pgbench failed" "$W/pgbench.txt"
tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$W/pgbench.txt" | head -1)
[ -n "$tps" ] || bench_fail "no tps from pgbench" "$W/pgbench.txt"
grep -q '^number of failed transactions: 0 ' "$W/pgbench.txt" || bench_fail "pgbench had failed transactions" "$W/pgbench.txt"
pb_pg=$(echo "$(pg_cpu_s) - $pb_pg0" | bc -l)
pg_jobs_s=$tps # one script = one job = 2 autocommitted statements
ratio=$(echo "$jobs_s / $pg_jobs_s" | bc -l)
printf 'queue: %d/%d jobs completed (%d failed, not counted) in %.2fs = %.1f jobs/s (%d threads)\n' \
  "$done_ok" "$NJOBS" "$done_failed" "$wall" "$jobs_s" "$CONC"
printf '  pgbench, 2 commits per job: %.1f jobs/s (PostgreSQL CPU %.2f ms a job)\n' "$pg_jobs_s" \
  "$(echo "$pb_pg * 1000 / $NJOBS" | bc -l)"
cat "$W/calls.txt"
printf '  CPU used: worker %.2f s (%.1f ms a job), Google fake %.2f s (%.1f ms a job); load average %s\n' \
  "$w_cpu" "$(echo "$w_cpu * 1000 / $NJOBS" | bc -l)" "$f_cpu" "$(echo "$f_cpu * 1000 / $NJOBS" | bc -l)" \
  "$(cut -d' ' -f1 /proc/loadavg)"
printf '  CPU used: PostgreSQL %.2f s (%.1f ms a job, the end-of-run polls included), Redis %.2f s (%.2f ms a job)\n' \
  "$p_cpu" "$(echo "$p_cpu * 1000 / $NJOBS" | bc -l)" "$r_cpu" "$(echo "$r_cpu * 1000 / $NJOBS" | bc -l)"
if [ "${BENCH_STEPS:-0}" = 1 ]; then
  sed -n 's/.*"msg":"steps (ms): \([^"]*\)".*/\1/p' "$W/worker.log" | tr ' ' '\n' |
    awk -F= '{ s[$1] += $2; n[$1]++; if (!($1 in o)) { o[$1] = ++k; name[k] = $1 } }
      END { for (i = 1; i <= k; i++) { t += s[name[i]] / n[name[i]]; printf "  worker step %s: %.2f ms\n", name[i], s[name[i]] / n[name[i]] }
            printf "  worker steps total: %.2f ms per job\n", t }'
fi
printf '  worker / pgbench = %.2f (target >= 0.5: %s)\n' "$ratio" "$(verdict "$ratio >= 0.5")"

# a run with failures is no measurement
[ "$done_failed" = 0 ] || bench_fail "$done_failed of $NJOBS jobs failed" "$W/worker.log"
[ "$outputs" = "$done_ok" ] || bench_fail "$outputs outputs in Processed for $done_ok completed jobs" "$W/worker.log"
[ "$fake_errors" = 0 ] || bench_fail "the fake answered $fake_errors calls with other than 2xx" "$W/worker.log"
