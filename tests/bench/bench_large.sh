#!/usr/bin/env bash
# Benchmark: full-size camera files through the job-worker (issue 18).
#
# For 12 MP (4000x3000), 24 MP (6000x4000) and 45 MP (8256x5504) JPEGs made
# with vips from tests/fixtures/coffee.png (scaled up, plus a little sensor-like
# grain so the files weigh what camera JPEGs weigh), one job each of
#   portrait_pro   the product's preset (long edge 3000, JPEG 90: a multipart upload)
#   passthrough    LoadImage -> SaveImage at full size (JPEG 92: over 5 MB, a
#                  resumable upload)
# runs through a fresh job-worker (WORKER_CONCURRENCY=1) against the Google
# fake, the worker started under /usr/bin/time -v: its peak RSS (the process,
# worker threads and libvips included) is the figure, with the idle worker's RSS
# and the largest RssAnon (heap: what the kernel cannot drop) sampled every
# 50 ms beside it. The input file comes through a temporary file mapped
# read-only (its pages are page cache, counted in RSS as RssFile).
#
# Printed beside the pod's memory limit (BENCH_POD_MB, 1024: the Kubernetes
# worker limit, 1 GiB) with the default concurrency (BENCH_POD_JOBS, 2):
# idle + jobs x (peak - idle) must fit, with 128 MB kept free.
#
# Valid only when every command succeeded, every job completed, its output is
# in the fake's Drive at the expected size, and the fake answered every call
# 2xx (the 308s of resumable uploads included as answers, not errors).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
POD_MB=${BENCH_POD_MB:-1024}
POD_JOBS=${BENCH_POD_JOBS:-2}
KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=

. tests/lib/bench.sh
[ -x "$BIN/job-worker" ] || bench_fail "$BIN/job-worker is missing (make first)"
[ -x /usr/bin/time ] || bench_fail "/usr/bin/time is missing (apt-get install time)"
command -v vips >/dev/null || bench_fail "vips is missing (apt-get install libvips-tools)"

bench_start bench_large
bench_database
bench_google

# ---------------------------------------------------------------- the inputs
declare -A DIMS=([12]=4000x3000 [24]=6000x4000 [45]=8256x5504)
SIZES="12 24 45"
for mp in $SIZES; do
  w=${DIMS[$mp]%x*}
  h=${DIMS[$mp]#*x}
  src_w=$(vipsheader -f width tests/fixtures/coffee.png)
  src_h=$(vipsheader -f height tests/fixtures/coffee.png)
  vips resize tests/fixtures/coffee.png "$W/s$mp.v" "$(echo "$w / $src_w" | bc -l)" \
    --vscale "$(echo "$h / $src_h" | bc -l)" --kernel cubic
  vips gaussnoise "$W/n$mp.v" "$w" "$h" --mean 0 --sigma 8
  vips bandjoin "$W/n$mp.v $W/n$mp.v $W/n$mp.v" "$W/n3$mp.v"
  vips add "$W/s$mp.v" "$W/n3$mp.v" "$W/g$mp.v"
  vips cast "$W/g$mp.v" "$W/in$mp.jpg[Q=92]" uchar
  got=$(vipsheader -f width "$W/in$mp.jpg")x$(vipsheader -f height "$W/in$mp.jpg")
  [ "$got" = "${DIMS[$mp]}" ] || bench_fail "in$mp.jpg is $got, want ${DIMS[$mp]}"
  rm -f "$W/s$mp.v" "$W/n$mp.v" "$W/n3$mp.v" "$W/g$mp.v"
  echo "input ${mp} MP: $got, $(stat -c %s "$W/in$mp.jpg") bytes"
done

# ---------------------------------------------------------------- the user and files
node - "$G" "$W" $SIZES > "$W/seed.tsv" <<'JS'
const [base, dir, ...sizes] = process.argv.slice(2);
const fs = require('fs');
async function post(path, body) {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${path} ${r.status} ${await r.text()}`);
  return r.json();
}
(async () => {
  const email = 'bench.large@example.com';
  const u = await post('/__admin/users', { email, client_id: 'bench-client' });
  const inbox = await post('/__admin/files', { email, name: 'Inbox', folder: true, parents: [u.root_id] });
  const out = await post('/__admin/files', { email, name: 'Processed', folder: true, parents: [inbox.id] });
  console.log(['U', email, u.sub, u.access_token, u.refresh_token, inbox.id, out.id].join('\t'));
  for (const mp of sizes) {
    const content_base64 = fs.readFileSync(`${dir}/in${mp}.jpg`).toString('base64');
    for (const preset of ['portrait_pro', 'passthrough']) { // a job per (file, preset): one file each
      const f = await post('/__admin/files', { email, name: `photo${mp}-${preset}.jpg`, mimeType: 'image/jpeg', parents: [inbox.id], content_base64 });
      console.log(['F', mp, preset, f.id].join('\t'));
    }
  }
})().catch((e) => { console.error(e); process.exit(1); });
JS
IFS=$'\t' read -r _ email sub access refresh inbox processed <<<"$(grep '^U' "$W/seed.tsv")"
sa=$(bench_seal "$KEY" <<<"$access")
sr=$(bench_seal "$KEY" <<<"$refresh")
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
SQL

# ---------------------------------------------------------------- one job, one worker
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# run_one MP PRESET: writes "peak_mb idle_mb anon_mb ms out_bytes" to $W/result
run_one() {
  local mp=$1 preset=$2 file job port tpid wpid idle anon a st ms out_size deadline
  file=$(awk -F'\t' -v mp="$mp" -v p="$preset" '$1 == "F" && $2 == mp && $3 == p { print $4 }' "$W/seed.tsv")
  [ -n "$file" ] || bench_fail "no Drive file for $mp MP"
  job=$(psql -At "$DB" -v ON_ERROR_STOP=1 -c "SELECT job_id FROM users u, LATERAL
    jobs_create_for_drive_file(u.id, '$file', 'photo$mp-$preset.jpg', '$inbox', 1000, 'image/jpeg',
    '$preset') WHERE u.email = '$email'")
  [ -n "$job" ] || bench_fail "no job created for $mp MP $preset"
  port=$(bench_free_port)
  mkdir -p "$W/tmp"
  DATABASE_URL="postgresql://ca_job_worker@127.0.0.1:$TEST_PG_PORT/bench" REDIS_URL=$TEST_REDIS_URL \
    PORT=$port LISTEN_ADDR=127.0.0.1 LOG_LEVEL=info ENCRYPTION_KEY=$KEY WORKER_CONCURRENCY=1 \
    WORKER_PREVIEW_CONCURRENCY=0 TMPDIR="$W/tmp" \
    GOOGLE_CLIENT_ID=bench-client GOOGLE_CLIENT_SECRET=x GOOGLE_TOKEN_URL=$G/token \
    DRIVE_API_URL=$G/drive/v3 DRIVE_UPLOAD_URL=$G/upload/drive/v3 \
    /usr/bin/time -v -o "$W/time-$mp-$preset.txt" "$BIN/job-worker" > "$W/worker-$mp-$preset.log" 2>&1 &
  tpid=$!
  bench_track "$tpid"
  bench_wait_ready "http://127.0.0.1:$port/readyz" "$W/worker-$mp-$preset.log"
  wpid=$(pgrep -P "$tpid" job-worker) || bench_fail "no job-worker under /usr/bin/time"
  sleep 0.5
  idle=$(status_kb "$wpid" VmRSS)
  anon=0
  redis-cli -p "$TEST_REDIS_PORT" LPUSH ca:jobs "$job" >/dev/null
  deadline=$(( $(date +%s) + 300 ))
  while :; do
    a=$(status_kb "$wpid" RssAnon)
    [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
    st=$(psql -At "$DB" -c "SELECT status FROM jobs WHERE id = '$job'")
    case $st in completed | failed) break ;; esac
    [ "$(date +%s)" -lt "$deadline" ] || bench_fail "$mp MP $preset still $st after 300 s" "$W/worker-$mp-$preset.log"
    sleep 0.05
  done
  [ "$(psql -At "$DB" -c "SELECT attempt FROM jobs WHERE id = '$job'")" = 1 ] ||
    bench_fail "$mp MP $preset: job $job was not run once by this worker"
  [ "$st" = completed ] || bench_fail "$mp MP $preset: $(psql -At "$DB" -c "SELECT error_code || ': ' || error_message FROM jobs WHERE id = '$job'")" "$W/worker-$mp-$preset.log"
  kill -TERM "$wpid"
  wait "$tpid" || bench_fail "the worker did not exit cleanly" "$W/worker-$mp-$preset.log"
  ms=$(psql -At "$DB" -c "SELECT processing_time_ms FROM jobs WHERE id = '$job'")
  out_size=$(psql -At "$DB" -c "SELECT output_drive_file_id FROM jobs WHERE id = '$job'" |
    xargs -I{} curl -sf -H "Authorization: Bearer $access" "$G/drive/v3/files/{}?fields=size" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).size))')
  [ -n "$out_size" ] && [ "$out_size" -gt 0 ] || bench_fail "$mp MP $preset: no output in Drive"
  [ -z "$(ls -A "$W/tmp")" ] || bench_fail "$mp MP $preset: files left in TMPDIR: $(ls "$W/tmp")"
  local peak
  peak=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$W/time-$mp-$preset.txt")
  [ -n "$peak" ] || bench_fail "no peak RSS from /usr/bin/time" "$W/time-$mp-$preset.txt"
  echo "$((peak / 1024)) $((idle / 1024)) $((anon / 1024)) $ms $out_size" > "$W/result"
}

printf '\n%-6s %-13s %9s %9s %9s %9s %12s %s\n' input preset peak_MB idle_MB anon_MB time_s output_B upload
worst=0
for mp in $SIZES; do
  for preset in portrait_pro passthrough; do
    run_one "$mp" "$preset"
    read -r peak idle anon ms out < "$W/result"
    how=multipart
    [ "$out" -gt $((5 * 1024 * 1024)) ] && how=resumable
    printf '%-6s %-13s %9d %9d %9d %9.2f %12d %s\n' "${mp}MP" "$preset" "$peak" "$idle" "$anon" \
      "$(echo "$ms / 1000" | bc -l)" "$out" "$how"
    job_mb=$((peak - idle))
    [ "$job_mb" -gt "$worst" ] && worst=$job_mb
    last_idle=$idle
  done
done

# every Drive answer 2xx (or the 308 of a resumable chunk)
bad=$(curl -sf "$G/__admin/requests" | node -e '
let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{
  const r = JSON.parse(s).requests.filter((x) => !(x.status >= 200 && x.status < 300) && x.status !== 308);
  console.log(r.length); for (const x of r) console.error(x.method, x.path, x.status); })')
[ "$bad" = 0 ] || bench_fail "the fake answered $bad call(s) with an error"

need=$((last_idle + POD_JOBS * worst + 128))
printf '\nper-job peak (worst, above the idle worker): %d MB\n' "$worst"
printf 'pod: idle %d MB + %d jobs x %d MB + 128 MB kept free = %d MB against a %d MB limit: %s\n' \
  "$last_idle" "$POD_JOBS" "$worst" "$need" "$POD_MB" "$([ "$need" -le "$POD_MB" ] && echo fits || echo "DOES NOT FIT")"
