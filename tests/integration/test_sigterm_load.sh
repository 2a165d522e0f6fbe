#!/usr/bin/env bash
# SIGTERM under load (issue 17), as a rolling update or a scale-down meets it.
#
# The gateway, with wrk sending authenticated GET /api/me on 16 keep-alive
# connections. In Kubernetes the pod leaves the Service's endpoints when its
# deletion starts, at the same time as the preStop pause; SIGTERM comes after
# the pause. This test takes the worse case, where the load balancer still sends
# when SIGTERM arrives (the endpoint removal has not reached it yet): the test
# plays the load balancer, which stops sending to the pod once it sees /readyz
# answer 503 (a probe polls /readyz every 20 ms), then SIGTERM:
#   - /readyz answers 503 at once (within 250 ms of the signal), while the
#     listener still accepts (the probe gets 503, not a refused connection);
#   - no request fails: wrk sees no error status and no socket error (connect,
#     read, write, timeout) up to the moment the load balancer stops sending;
#   - the gateway exits 0 once idle.
# With the preStop pause (the usual case) the load balancer has stopped before
# SIGTERM: the first phase (wrk alone) shows nothing fails while it sends.
#
# The worker, with jobs in flight (the Google fake delays every download by
# 3 s; 12 photos, 2 at a time): with WORKER_DRAIN_SECONDS=1 SIGTERM hands the
# jobs in flight back to the queue; a second worker with WORKER_DRAIN_SECONDS=10
# finishes them before it exits; each exits 0, no job is left processing, and a
# third worker completes every job, each exactly once (one output per photo).
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

command -v wrk > /dev/null || { echo "wrk is missing (make deps)"; echo "0 passed, 1 failed"; exit 1; }
work=$(mktemp -d /tmp/ca-sigterm.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT
unset MIGRATION_DATABASE_URL
BIN=$CA_BIN

drive=$work/drive
mkdir -p "$drive"
"$CA_ROOT/tests/fakes/run" google --port 0 --data-dir "$drive" > "$work/google.log" 2>&1 &
pids+=($!)
disown $!
G=
for _ in $(seq 1 100); do
  G=$(sed -n 's/^.*listening on 127\.0\.0\.1:\([0-9]*\).*$/\1/p' "$work/google.log" | head -1)
  [ -n "$G" ] && break
  sleep 0.1
done
check "the Google fake is up" [ -n "$G" ]
G=http://127.0.0.1:$G

export REDIS_URL=$TEST_REDIS_URL LISTEN_ADDR=127.0.0.1 LOG_LEVEL=info RETENTION_AT=off
ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64)
export ENCRYPTION_KEY SESSION_SECRET=sigterm-session-secret-0123456789
export GOOGLE_CLIENT_ID=test-client GOOGLE_CLIENT_SECRET=test-google-secret-xyz
export GOOGLE_AUTH_URL=$G/o/oauth2/v2/auth GOOGLE_TOKEN_URL=$G/token GOOGLE_USERINFO_URL=$G/v1/userinfo
export GOOGLE_REVOKE_URL=$G/revoke DRIVE_API_URL=$G/drive/v3 DRIVE_UPLOAD_URL=$G/upload/drive/v3
export RATE_LIMIT_PER_MINUTE_IP=100000000 RATE_LIMIT_PER_MINUTE_SESSION=100000000
export POLL_INTERVAL_SECONDS=1 WORKER_PREVIEW_CONCURRENCY=0
role_url() { echo "postgresql://ca_${1//-/_}@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME"; }
start() { # NAME SERVICE PORT [VAR=value...]: prints nothing; pid in pid_NAME
  local name=$1 svc=$2 p=$3
  shift 3
  env PORT="$p" DATABASE_URL="$(role_url "$svc")" "$@" "$BIN/$svc" serve >> "$work/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_${name//-/_}=$!"
  check "$name is ready" wait_http "http://127.0.0.1:$p/readyz" 20
}
ms() { date +%s%3N; }
json() { node -e "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{const v=JSON.parse(d||'null');console.log(eval(process.argv[1]))})" "$1"; }

gw_port=$(free_port)
GW=http://127.0.0.1:$gw_port
export PUBLIC_URL=$GW
start api-gateway api-gateway "$gw_port"

# a user, signed in through Google (the fake)
JAR=$work/cookies
EMAIL=load@example.com
auth=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$JAR" -b "$JAR" "$GW/auth/google/login?login_hint=$EMAIL")
callback=$(curl -s -o /dev/null -w '%{redirect_url}' "$auth")
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$JAR" -b "$JAR" "$callback")
check_eq "sign-in sets a session" 302 "$code"
cookie="ca_session=$(awk '$6 == "ca_session" { print $7 }' "$JAR")"
check_eq "GET /api/me with the session is 200" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$GW/api/me")"

# ---- the gateway: wrk, then SIGTERM while it still sends ----
wrk_out=$work/wrk.txt
wrk -t2 -c16 -d60s --latency -H "Cookie: $cookie" "$GW/api/me" > "$wrk_out" 2>&1 &
wrk_pid=$!
pids+=("$wrk_pid")
probe() { # polls /readyz every 20 ms: "ms code" lines, stamped when the answer came (000: none)
  local code
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$GW/readyz")
    echo "$(ms) $code"
    sleep 0.02
  done
}
probe > "$work/probe" 2>/dev/null &
probe_pid=$!
pids+=("$probe_pid")
sleep 3 # the preStop window: the pod serves normally under load
check "wrk is running" kill -0 "$wrk_pid"
# Requests in flight at SIGTERM: the Drive folder list, which waits 1.5 s on
# Google (a delay fault on the fake); they must be answered.
curl -s -o /dev/null -X POST "$G/__admin/faults" -H 'Content-Type: application/json' \
  -d '{"match":{"method":"GET","path":"/drive/v3/files"},"action":"delay","delay_ms":1500}'
slow_pids=()
for i in 1 2 3 4; do
  (curl -s -o /dev/null -w "%{http_code} $(ms)" -H "Cookie: $cookie" "$GW/api/drive/folders"; echo " $(ms)") > "$work/slow$i" &
  slow_pids+=($!)
done
sleep 0.3
t_term=$(ms)
kill -TERM "$pid_api_gateway"
# the load balancer: stops sending when /readyz says 503
t_lb=
for _ in $(seq 1 500); do
  if awk -v t="$t_term" '$1 >= t && $2 == "503" { f = 1 } END { exit f ? 0 : 1 }' "$work/probe"; then
    kill -INT "$wrk_pid"; t_lb=$(ms); break
  fi
  sleep 0.01
done
wait "$wrk_pid"
for p in "${slow_pids[@]}"; do wait "$p"; done
wait "$pid_api_gateway"; rc=$?
t_exit=$(ms)
sleep 0.1
kill "$probe_pid" 2>/dev/null; wait "$probe_pid" 2>/dev/null
curl -s -X DELETE "$G/__admin/faults" > /dev/null
check_eq "the gateway exits 0 after SIGTERM" 0 "$rc"
first503=$(awk -v t="$t_term" '$1 >= t && $2 == "503" { print $1; exit }' "$work/probe")
first000=$(awk -v t="$t_term" '$1 >= t && $2 == "000" { print $1; exit }' "$work/probe")
echo "# SIGTERM at +0 ms; /readyz 503 answered at +$((${first503:-0} - t_term)) ms; load balancer stopped at +$((${t_lb:-0} - t_term)) ms;"
echo "# gateway exited at +$((t_exit - t_term)) ms; first refused /readyz at +$((${first000:-$t_exit} - t_term)) ms"
sed 's/^/# wrk: /' "$wrk_out"
check "/readyz answered 503 within 250 ms of SIGTERM" [ -n "$first503" ] && [ $((first503 - t_term)) -le 250 ]
check "/readyz was 200 before SIGTERM" \
  awk -v t="$t_term" '$1 < t && $2 == "200" { f = 1 } $1 < t && $2 != "200" { b = 1 } END { exit (f && !b) ? 0 : 1 }' "$work/probe"
check "the listener still accepted after /readyz turned 503 (503 answered, not refused)" [ -n "$first503" ]
check "the load balancer stopped before the gateway closed its listener" [ -n "$t_lb" ] && [ "$t_lb" -le "${first000:-$t_exit}" ]
for i in 1 2 3 4; do
  read -r code t_start t_end < "$work/slow$i"
  check_eq "request $i in flight at SIGTERM (the Drive folder list) is answered 200" 200 "$code"
  check "request $i was in flight at SIGTERM and ended after it" [ "$t_start" -lt "$t_term" ] && [ "$t_end" -gt "$t_term" ]
done
check "the gateway exited after the requests in flight were answered" bash -c "[ $t_exit -ge \$(cat '$work'/slow? | awk '{print \$3}' | sort -n | tail -1) ]"
requests=$(awk '/requests in/ { print $1 }' "$wrk_out")
check "wrk sent requests (${requests:-0})" [ "${requests:-0}" -gt 100 ]
check "no error status (wrk: no Non-2xx line)" bash -c "! grep -q 'Non-2xx' '$wrk_out'"
check "no socket error: connect, read, write, timeout (wrk: no Socket errors line)" bash -c "! grep -q 'Socket errors' '$wrk_out'"
check "the gateway logged the drain" grep -q 'SIGTERM: draining' "$work/api-gateway.log"

# ---- the worker: jobs in flight at SIGTERM, none lost ----
start api-gateway api-gateway "$gw_port"
mkdir -p "$drive/$EMAIL/Inbox"
folder=
for _ in $(seq 1 50); do
  folder=$(curl -s -H "Cookie: $cookie" "$GW/api/drive/folders" | json '((v&&v.folders)||[]).filter(f=>f.name==="Inbox").map(f=>f.id)[0]||""')
  [ -n "$folder" ] && break
  sleep 0.2
done
check "the Drive folder is listed" [ -n "$folder" ]
csrf=$(curl -s -H "Cookie: $cookie" "$GW/api/me" | json 'v.csrf_token')
capi() { curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" -H "Origin: $GW" -H "X-CSRF-Token: $csrf" -H 'Content-Type: application/json' "$@"; }
check_eq "default preset set" 200 "$(capi -X PATCH "$GW/api/me" -d '{"default_preset":"portrait_pro"}')"
check_eq "the folder is watched" 200 "$(capi -X PUT "$GW/api/watch" -d "{\"folder_id\":\"$folder\"}")"
# creator tier: 12 photos fit the month's quota
psql -qtA "$TEST_DATABASE_URL" -c "UPDATE subscriptions SET tier = 'creator' WHERE user_id = (SELECT id FROM users WHERE email = '$EMAIL')" > /dev/null
start drive-poller drive-poller "$(free_port)"
# every single-file GET (the photo's download) waits 3 s: jobs stay in flight
curl -s -o /dev/null -X POST "$G/__admin/faults" -H 'Content-Type: application/json' \
  -d '{"match":{"method":"GET","path_regex":"^/drive/v3/files/[^/]+$"},"action":"delay","delay_ms":3000}'
w1_port=$(free_port)
start worker-1 job-worker "$w1_port" WORKER_CONCURRENCY=2 WORKER_DRAIN_SECONDS=1
N=12
fixtures=(astronaut coffee chelsea)
for i in $(seq -w 1 $N); do
  cp "$CA_ROOT/tests/fixtures/${fixtures[$((10#$i % 3))]}.png" "$drive/$EMAIL/Inbox/p$i.png"
done
q() { psql -qtA "$TEST_DATABASE_URL" -c "$1"; }
for _ in $(seq 1 300); do
  [ "$(q "SELECT count(*) FROM jobs WHERE status = 'processing'")" -ge 2 ] && break
  sleep 0.1
done
done_before=$(q "SELECT count(*) FROM jobs WHERE status = 'completed'")
check "two jobs in flight on the worker" [ "$(q "SELECT count(*) FROM jobs WHERE status = 'processing'")" -ge 2 ]
kill -TERM "$pid_worker_1"
wait "$pid_worker_1"; rc=$?
check_eq "the worker exits 0 after SIGTERM" 0 "$rc"
inflight=$(sed -n 's/.*draining: \([0-9]*\) job(s) in flight.*/\1/p' "$work/worker-1.log" | head -1)
handed=$(grep -c 'handed back job' "$work/worker-1.log")
echo "# at SIGTERM: ${inflight:-?} job(s) in flight, $done_before completed; $handed handed back after WORKER_DRAIN_SECONDS"
check "the worker had jobs in flight at SIGTERM (${inflight:-?})" [ "${inflight:-0}" -ge 1 ]
check "they were handed back to the queue after WORKER_DRAIN_SECONDS ($handed)" [ "$handed" -ge 1 ]
check_eq "... as queued" 0 "$(q "SELECT count(*) FROM jobs WHERE status NOT IN ('queued', 'completed')")"
check_eq "no job is left processing" 0 "$(q "SELECT count(*) FROM jobs WHERE status = 'processing'")"
# A second worker with time enough to finish (WORKER_DRAIN_SECONDS=10): the
# jobs in flight at its SIGTERM complete before it exits, none handed back.
start worker-2 job-worker "$(free_port)" WORKER_CONCURRENCY=2 WORKER_DRAIN_SECONDS=10
for _ in $(seq 1 300); do
  [ "$(q "SELECT count(*) FROM jobs WHERE status = 'processing'")" -ge 2 ] && break
  sleep 0.1
done
check "two jobs in flight on the second worker" [ "$(q "SELECT count(*) FROM jobs WHERE status = 'processing'")" -ge 2 ]
done_before=$(q "SELECT count(*) FROM jobs WHERE status = 'completed'")
kill -TERM "$pid_worker_2"
wait "$pid_worker_2"; rc=$?
done_after=$(q "SELECT count(*) FROM jobs WHERE status = 'completed'")
check_eq "the second worker exits 0 after SIGTERM" 0 "$rc"
echo "# second worker: $done_before completed at SIGTERM, $done_after when it exited"
check "the jobs in flight at its SIGTERM were finished ($done_before -> $done_after)" [ "$done_after" -ge $((done_before + 2)) ]
check "none was handed back" bash -c "! grep -q 'handed back job' '$work/worker-2.log'"
check_eq "no job is left processing" 0 "$(q "SELECT count(*) FROM jobs WHERE status = 'processing'")"
curl -s -X DELETE "$G/__admin/faults" > /dev/null
start worker-3 job-worker "$(free_port)" WORKER_CONCURRENCY=2
for _ in $(seq 1 240); do
  [ "$(q "SELECT count(*) FROM jobs WHERE status = 'completed'")" -ge "$N" ] && break
  sleep 0.25
done
check_eq "every photo has one job" "$N $N" "$(q "SELECT count(*) || ' ' || count(DISTINCT drive_file_id) FROM jobs")"
check_eq "every job completed" "$N" "$(q "SELECT count(*) FROM jobs WHERE status = 'completed'")"
outputs=$(find "$drive/$EMAIL/Inbox/Processed" -type f 2>/dev/null | wc -l)
check_eq "one output per photo (none lost, none twice)" "$N" "$outputs"
kill -TERM "$pid_worker_3" "$pid_drive_poller" "$pid_api_gateway"
for p in "$pid_worker_3" "$pid_drive_poller" "$pid_api_gateway"; do
  wait "$p"; rc=$?
  check_eq "a daemon (pid $p) exits 0" 0 "$rc"
done
check "no sanitizer report" bash -c "! grep -qE 'Sanitizer|runtime error' '$work'/*.log"
if [ "$_fail" -gt 0 ]; then
  for f in "$work"/*.log; do echo "----- $f (last 20 lines)"; tail -n 20 "$f" | cut -c1-300; done
fi
finish
