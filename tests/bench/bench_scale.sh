#!/usr/bin/env bash
# Benchmark: horizontal scaling of the job-worker (issue 17, "N local worker
# processes give >= 0.8*N x the throughput of one, up to the core count").
#
# Each worker process stands for a one-CPU pod: it is pinned to one core with
# taskset and WORKER_CONCURRENCY is left unset, so the worker sizes itself
# from what it may use (common/sysres: 1 CPU -> 1 job thread, libvips 1
# thread); the bench checks its start-up line says so. For N = 1 .. cores
# (BENCH_MAX_WORKERS), BENCH_JOBS fresh jobs (portrait_pro on a 12 MP JPEG,
# through PostgreSQL, Redis and the Google fake) are pushed at once to N
# workers; jobs/s is completed jobs over the time to the last completion.
# Prints each N's jobs/s and its speed-up over N = 1 beside the 0.8*N target.
#
# A run is valid only when every job of every phase completed, each has its
# output in the fake's Processed folder, and the fake answered every call 2xx.
#
#   BENCH_JOBS (30)  BENCH_MAX_WORKERS (cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
NJOBS=${BENCH_JOBS:-30}
CORES=$(nproc)
MAXW=${BENCH_MAX_WORKERS:-$CORES}
KEY=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=

. tests/lib/bench.sh
[ -x "$BIN/job-worker" ] || bench_fail "$BIN/job-worker is missing (make first)"
command -v taskset >/dev/null || bench_fail "taskset is missing (util-linux)"
[ "$MAXW" -le "$CORES" ] || bench_fail "BENCH_MAX_WORKERS=$MAXW is above the $CORES cores"
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo "met"; else echo "MISSED"; fi; }

bench_start bench_scale
bench_database
bench_google

# 4000x3000 JPEG, a camera's size (tests/fixtures/astronaut.png, public domain, scaled)
vips resize tests/fixtures/astronaut.png "$W/in.v" 7.8125 --vscale 5.859375 --kernel cubic
vips copy "$W/in.v" "$W/in.jpg[Q=92]"
[ "$(vipsheader -f width "$W/in.jpg")x$(vipsheader -f height "$W/in.jpg")" = 4000x3000 ] ||
  bench_fail "the input is not 4000x3000"
bench_seed_user bench.scale@example.com $((NJOBS * MAXW)) "$W/in.jpg" "$KEY"
echo "input: 4000x3000 JPEG, $(stat -c %s "$W/in.jpg") bytes; $NJOBS jobs a phase, portrait_pro; $CORES cores"

declare -A rate
for n in $(seq 1 "$MAXW"); do
  # this phase's jobs: the next NJOBS files
  sed -n "$(((n - 1) * NJOBS + 1)),$((n * NJOBS))p" "$U_FILES" > "$W/phase$n.txt"
  psql -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TEMP TABLE f (id text);
\copy f FROM '$W/phase$n.txt'
SELECT count(*) FROM f, users u, LATERAL jobs_create_for_drive_file(u.id, f.id, f.id || '.jpg',
  '$U_INBOX', 1000, 'image/jpeg', 'portrait_pro') WHERE u.email = '$U_EMAIL';
SQL
  psql -At "$DB" -c "SELECT id FROM jobs WHERE status = 'queued'" > "$W/jobs$n.txt"
  [ "$(grep -c . "$W/jobs$n.txt")" = "$NJOBS" ] || bench_fail "phase $n: $(grep -c . "$W/jobs$n.txt") jobs queued, want $NJOBS"
  pids=()
  for i in $(seq 1 "$n"); do
    port=$(bench_free_port)
    DATABASE_URL="postgresql://ca_job_worker@127.0.0.1:$TEST_PG_PORT/bench" REDIS_URL=$TEST_REDIS_URL \
      PORT=$port LISTEN_ADDR=127.0.0.1 LOG_LEVEL=info ENCRYPTION_KEY=$KEY \
      WORKER_REPUSH_SECONDS=3600 WORKER_PREVIEW_CONCURRENCY=0 RETENTION_AT=off \
      GOOGLE_CLIENT_ID=bench-client GOOGLE_CLIENT_SECRET=x GOOGLE_TOKEN_URL=$G/token \
      DRIVE_API_URL=$G/drive/v3 DRIVE_UPLOAD_URL=$G/upload/drive/v3 \
      taskset -c $((i - 1)) "$BIN/job-worker" > "$W/worker$n-$i.log" 2>&1 &
    pids+=($!)
    bench_track $!
    bench_wait_ready "http://127.0.0.1:$port/readyz" "$W/worker$n-$i.log"
    grep -q '1 job thread(s): 1 usable CPU' "$W/worker$n-$i.log" ||
      bench_fail "worker $i did not size itself to its one CPU" "$W/worker$n-$i.log"
  done
  t0=$(date +%s.%N)
  xargs -n 500 redis-cli -p "$TEST_REDIS_PORT" LPUSH ca:jobs < "$W/jobs$n.txt" >/dev/null
  deadline=$(($(date +%s) + 900))
  while :; do
    left=$(psql -At "$DB" -c "SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed')")
    [ "$left" = 0 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || bench_fail "phase $n: $left jobs unfinished after 900 s" "$W/worker$n-1.log"
    sleep 0.5
  done
  t1=$(psql -At "$DB" -c "SELECT extract(epoch FROM max(completed_at)) FROM jobs WHERE status = 'completed'")
  failed=$(psql -At "$DB" -c "SELECT count(*) FROM jobs WHERE status = 'failed'")
  [ "$failed" = 0 ] || bench_fail "phase $n: $failed jobs failed" "$W/worker$n-1.log"
  kill -TERM "${pids[@]}"
  for p in "${pids[@]}"; do wait "$p" || bench_fail "phase $n: a worker exited non-zero on SIGTERM"; done
  # every worker took a share (a phase where one worker did everything measures one)
  for i in $(seq 1 "$n"); do
    grep -q 'completed in ' "$W/worker$n-$i.log" || bench_fail "phase $n: worker $i completed nothing" "$W/worker$n-$i.log"
  done
  wall=$(echo "$t1 - $t0" | bc -l)
  rate[$n]=$(echo "$NJOBS / $wall" | bc -l)
  printf '%d worker process(es): %d jobs in %.2f s = %.2f jobs/s\n' "$n" "$NJOBS" "$wall" "${rate[$n]}"
done

done_ok=$(psql -At "$DB" -c "SELECT count(*) FROM jobs WHERE status = 'completed'")
outputs=$(bench_drive_count "$U_ACCESS" "$U_PROCESSED")
fake_errors=$(bench_fake_errors "$G")
[ "$done_ok" = $((NJOBS * MAXW)) ] || bench_fail "$done_ok jobs completed, want $((NJOBS * MAXW))"
[ "$outputs" = "$done_ok" ] || bench_fail "$outputs outputs in Processed for $done_ok completed jobs"
[ "$fake_errors" = 0 ] || bench_fail "the fake answered $fake_errors calls with other than 2xx"
for n in $(seq 2 "$MAXW"); do
  s=$(echo "${rate[$n]} / ${rate[1]}" | bc -l)
  printf '  %d workers / 1 worker = %.2fx (target >= %.1fx: %s)\n' "$n" "$s" "$(echo "0.8 * $n" | bc -l)" \
    "$(verdict "$s >= 0.8 * $n")"
done
