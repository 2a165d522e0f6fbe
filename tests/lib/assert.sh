# Tiny assertions for shell tests. Source it; call `finish` at the end, which
# prints "N passed, N failed" and exits non-zero on any failure.
_pass=0
_fail=0
ok()   { _pass=$((_pass + 1)); echo "ok   - $1"; }
fail() { _fail=$((_fail + 1)); echo "FAIL - $1"; }
check() { # check "description" command...
  local desc=$1; shift
  if "$@"; then ok "$desc"; else fail "$desc"; fi
}
check_eq() { # check_eq "description" expected actual
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}
finish() {
  echo "$_pass passed, $_fail failed"
  [ "$_fail" -eq 0 ]
}
free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
# wait_http URL [seconds] [expected-status]: polls until the URL answers that status.
wait_http() {
  local url=$1 secs=${2:-10} want=${3:-200} i code
  for i in $(seq 1 $((secs * 10))); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    [ "$code" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}
