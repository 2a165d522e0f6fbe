#!/usr/bin/env bash
# `make run`'s script, as a newcomer meets it (issue 8): it comes up, signs in
# the demo user through OAuth, processes the sample photos; a photo copied into
# the inbox on disk gets its output; Ctrl-C stops
# everything cleanly; a second run reuses the data. Own ports and data folder,
# so it never touches ./var.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"
cd "$CA_ROOT"

var=$(mktemp -d /tmp/ca-localrun.XXXXXX)
chmod 755 "$var"
export CA_VAR=$var POLL_INTERVAL_SECONDS=2 CA_DEMO_TIMEOUT=120
for v in PG REDIS GATEWAY BILLING POLLER WORKER GOOGLE STRIPE SMTP SMTP_ADMIN; do
  export "CA_${v}_PORT=$(free_port)"
done
unset DATABASE_URL REDIS_URL PORT
run_pid=
cleanup() {
  [ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
  rm -rf "$var"
}
trap cleanup EXIT

deploy/local/run.sh > "$var/run1.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 240); do
  grep -q 'Ctrl-C stops everything' "$var/run1.log" && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.5
done
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$var/run1.log")
check "the run reaches ready" grep -q '^\[run\] ready: all four daemons answer /readyz' <<<"$plain"
check "the demo user signs in through OAuth" grep -q 'signed in as demo@example.com' <<<"$plain"
check "the samples are processed" grep -q 'the samples are processed' <<<"$plain"
inbox="$var/drive/demo@example.com/Inbox"
for f in astronaut coffee chelsea; do
  out="$inbox/Processed/${f}_portrait_pro.jpg"
  check "$f: output exists" [ -s "$out" ]
  check "$f: output differs from the input" bash -c "! cmp -s '$inbox/$f.png' '$out'"
  check "$f: the run printed its input and output paths" grep -q "output: $out" <<<"$plain"
  check "$f: the output is a JPEG" bash -c "head -c 3 '$out' | od -An -tx1 | grep -q 'ff d8 ff'"
done
check "logs are kept per process" bash -c "[ -s '$var/logs/job-worker.log' ] && [ -s '$var/logs/drive-poller.log' ]"
check "the terminal shows one stream with process names" grep -q '^\[job-worker\] {' <<<"$plain"

# A photo dropped on disk gets its output (how fast is bench_poller's and
# bench_pipeline's business; a generous deadline here).
vips black "$var/new.v" 640 480 --bands 3 >/dev/null 2>&1 && vips linear "$var/new.v" "$var/new.jpg" 1 90 >/dev/null 2>&1 \
  || cp "$inbox/coffee.png" "$var/new.jpg"
cp "$var/new.jpg" "$inbox/holiday.jpg"
for _ in $(seq 1 480); do
  [ -s "$inbox/Processed/holiday_portrait_pro.jpg" ] && break
  sleep 0.25
done
check "a photo copied into the inbox is processed" [ -s "$inbox/Processed/holiday_portrait_pro.jpg" ]
# Drive push notifications are routed to the local poller (issue 18): its
# channel is registered and the fake's change messages are accepted.
check "make run says push notifications are on" grep -q '^\[run\] Drive push notifications on' <<<"$plain"
check "the poller registered a push channel" grep -q 'push: channel .* registered' "$var/logs/drive-poller.log"
check "the poller accepted change notifications" bash -c "curl -sf http://127.0.0.1:$CA_POLLER_PORT/metrics | grep -Eq '^ca_poller_push_notifications_total\{state=\"change\"\} [1-9]'"

# Upgrade through Stripe (Checkout on the fake → signed webhooks → billing).
up=$(deploy/local/upgrade.sh creator 2>&1)
check "upgrade.sh moves the demo user to creator" grep -q 'plan now: creator, 100 images a month' <<<"$up"

# Ctrl-C stops everything cleanly (SIGTERM here: a background job of a script
# ignores SIGINT, which bash cannot un-ignore; the trap handles both alike).
kill -TERM "$run_pid"
wait "$run_pid"; rc=$?
run_pid=
check_eq "stopped: the run exits 0" 0 "$rc"
for _ in $(seq 1 50); do pgrep -f "$var" >/dev/null || break; sleep 0.1; done
left=$(pgrep -af "$var" | grep -v pgrep)
check "nothing is left running${left:+: $left}" [ -z "$left" ]
check "every daemon stopped on SIGTERM" [ "$(grep -c '"msg":"stopped"' "$var/run1.log")" -ge 4 ]

# Again: the data is reused (same user, same jobs, nothing reprocessed).
CA_RUN_DEMO_EXIT=1 deploy/local/run.sh > "$var/run2.log" 2>&1; rc=$?
check_eq "a second run succeeds" 0 "$rc"
check "the second run reuses the data" grep -q 'processed on an earlier run' "$var/run2.log"
n=$(ls "$inbox/Processed" | wc -l)
check_eq "no sample was processed twice" 4 "$n"
if [ "$_fail" -gt 0 ]; then
  echo "----- run1.log (last 80 lines) -----"; tail -n 80 "$var/run1.log" | cut -c1-400
  echo "----- run2.log (last 30 lines) -----"; tail -n 30 "$var/run2.log" 2>/dev/null | cut -c1-400
fi
finish
