#!/usr/bin/env bash
# The install layout against the Kubernetes manifests: `make install DESTDIR=$tmp
# PREFIX=/usr/local` lays out a root like the image's; then the migration Job's command, the
# four Deployments (init container wait-schema, then serve) and the CronJobs' commands run
# from $tmp/usr/local/bin with only the environment the rendered dev overlay gives each
# container (deploy/k8s/overlays/dev). The Secrets' values are filled in here (the test's
# PostgreSQL and Redis, as the four service roles). Deviations, each needed to run on a
# shared machine and never to reach the outside: PORT (a free port), LISTEN_ADDR=127.0.0.1,
# the Google/Stripe URLs (the local fakes, tests/fakes), BACKUP_DIR (the PVC's mount point
# /backup becomes a temporary folder), PATH.
# Checks: ca-migrate migrates an empty database and is a no-op the second time; wait-schema
# then exits 0; probes answer; `/` serves the installed dashboard; each cleanup runs (an
# audit_log row older than a year is deleted); ca-backup writes a dump that pg_restore
# reads; SIGTERM stops each daemon within its terminationGracePeriodSeconds.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

work=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done; }
trap 'stop_all; rm -rf "$work"' EXIT
root=$work/root
bindir=$root/usr/local/bin
SERVICES="api-gateway billing-webhook job-worker drive-poller"

# ---- install ----
# -o all: install what tests/run's build made (under $BUILD, perhaps with sanitizers), never
# rebuild it here with other flags
make -C "$CA_ROOT" -s -o all install BUILD="${BUILD:-build}" DESTDIR="$root" PREFIX=/usr/local > "$work/install.log" 2>&1
rc=$?
check_eq "make install DESTDIR=... PREFIX=/usr/local exits 0" 0 "$rc"
[ "$rc" -eq 0 ] || { cat "$work/install.log"; finish; exit 1; }
for f in api-gateway billing-webhook job-worker drive-poller ca-migrate ca-backup ca-restore; do
  check "$f is installed in /usr/local/bin" [ -x "$bindir/$f" ]
done
web=$root/usr/local/share/creator-automation/web
check "the dashboard is installed" [ -f "$web/index.html" ]
# a marker only in the installed copy: `/` must serve these files, not the checkout's
marker="installed-copy-$RANDOM$RANDOM"
echo "<!-- $marker -->" >> "$web/index.html"

# ---- the rendered dev overlay ----
kubectl kustomize "$CA_ROOT/deploy/k8s/overlays/dev" > "$work/dev.yaml" 2> "$work/kustomize.err"
check "kubectl kustomize deploy/k8s/overlays/dev renders" [ -s "$work/dev.yaml" ]

# A database of its own, empty: ca-migrate creates every slice in it.
db=ca_contract_$$
admin_url="postgresql://postgres@127.0.0.1:$TEST_PG_PORT"
psql -q "$admin_url/postgres" -c "CREATE DATABASE $db" > /dev/null
trap 'stop_all; psql -q "$admin_url/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1; rm -rf "$work"' EXIT
role_url() { echo "postgresql://ca_${1//-/_}@127.0.0.1:$TEST_PG_PORT/$db"; }

# ---- fakes ----
start_fake() { # NAME VAR: starts the fake, sets VAR to its port (not in a subshell:
  # its pid must reach stop_all, or the fake outlives the test)
  local log=$work/fake-$1.log i
  "$CA_ROOT/tests/fakes/run" "$1" --port 0 > "$log" 2>&1 &
  pids+=($!)
  printf -v "$2" '%s' ''
  for i in $(seq 1 100); do
    if grep -q 'listening on 127.0.0.1:' "$log"; then
      printf -v "$2" '%s' "$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)"
      return 0
    fi
    sleep 0.1
  done
  return 1
}
start_fake google google_port || true
start_fake stripe stripe_port || true
check "the Google and Stripe fakes started" test -n "$google_port" -a -n "$stripe_port"

# The Secrets' values (deploy/k8s/secrets/*.example.yaml, filled in for this test).
key=$(head -c 32 /dev/urandom | base64)
cat > "$work/secrets.json" <<EOF
{
  "ca-api-gateway": {"DATABASE_URL": "$(role_url api-gateway)", "REDIS_URL": "$TEST_REDIS_URL",
    "ENCRYPTION_KEY": "$key", "ENCRYPTION_KEYS_OLD": "", "SESSION_SECRET": "contract-session-secret-0123456789",
    "GOOGLE_CLIENT_SECRET": "contract-google-secret", "STRIPE_SECRET_KEY": "sk_test_contract"},
  "ca-billing-webhook": {"DATABASE_URL": "$(role_url billing-webhook)", "REDIS_URL": "$TEST_REDIS_URL",
    "STRIPE_WEBHOOK_SECRET": "whsec_contract_new,whsec_contract_old", "STRIPE_SECRET_KEY": "sk_test_contract"},
  "ca-job-worker": {"DATABASE_URL": "$(role_url job-worker)", "REDIS_URL": "$TEST_REDIS_URL",
    "ENCRYPTION_KEY": "$key", "ENCRYPTION_KEYS_OLD": "", "GOOGLE_CLIENT_SECRET": "contract-google-secret"},
  "ca-drive-poller": {"DATABASE_URL": "$(role_url drive-poller)", "REDIS_URL": "$TEST_REDIS_URL",
    "ENCRYPTION_KEY": "$key", "ENCRYPTION_KEYS_OLD": "", "GOOGLE_CLIENT_SECRET": "contract-google-secret"},
  "ca-migrate": {"MIGRATION_DATABASE_URL": "$admin_url/$db"},
  "ca-backup": {"BACKUP_DATABASE_URL": "$admin_url/$db"}
}
EOF

# container KIND NAME CONTAINER: writes $work/cmd (the command, one word a line) and
# $work/env (NAME=VALUE, NUL-separated) of that container as the manifests give it:
# env values, secretKeyRef from secrets.json (an optional key left out when absent),
# envFrom ConfigMaps from the rendered overlay. Exits non-zero on a reference it cannot fill.
container() {
  python3 - "$work/dev.yaml" "$work/secrets.json" "$1" "$2" "$3" "$work/cmd" "$work/env" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secrets = json.load(open(sys.argv[2]))
kind, name, cname, cmd_out, env_out = sys.argv[3:8]
obj = next(d for d in docs if d['kind'] == kind and d['metadata']['name'] == name)
spec = obj['spec']['jobTemplate']['spec']['template']['spec'] if kind == 'CronJob' else obj['spec']['template']['spec']
c = next(x for x in spec.get('initContainers', []) + spec['containers'] if x['name'] == cname)
env = {}
for ef in c.get('envFrom', []):
    ref = ef['configMapRef']['name']
    cm = next(d for d in docs if d['kind'] == 'ConfigMap' and d['metadata']['name'] == ref)
    env.update(cm.get('data', {}))
for e in c.get('env', []):
    if 'value' in e:
        env[e['name']] = e['value']
        continue
    ref = e['valueFrom']['secretKeyRef']
    vals = secrets.get(ref['name'], {})
    if ref['key'] in vals:
        env[e['name']] = vals[ref['key']]
    elif not ref.get('optional'):
        sys.exit(f"{kind}/{name}: no value for Secret {ref['name']} key {ref['key']}")
open(cmd_out, 'w').write('\n'.join(c.get('command', []) + c.get('args', [])) + '\n')
open(env_out, 'w').write(''.join(f'{k}={v}\0' for k, v in env.items()))
PY
}

# run_container KIND NAME CONTAINER [VAR=VALUE...] -- runs it in the foreground (the extra
# assignments are the deviations above); sets $rc, output in $work/out.
base_env() { # the deviations every container gets
  printf '%s\0' "PATH=$bindir:/usr/bin:/bin" "LISTEN_ADDR=127.0.0.1" \
    "GOOGLE_AUTH_URL=http://127.0.0.1:$google_port/o/oauth2/v2/auth" \
    "GOOGLE_TOKEN_URL=http://127.0.0.1:$google_port/token" \
    "GOOGLE_USERINFO_URL=http://127.0.0.1:$google_port/v1/userinfo" \
    "GOOGLE_REVOKE_URL=http://127.0.0.1:$google_port/revoke" \
    "DRIVE_API_URL=http://127.0.0.1:$google_port/drive/v3" \
    "DRIVE_UPLOAD_URL=http://127.0.0.1:$google_port/upload/drive/v3" \
    "STRIPE_API_URL=http://127.0.0.1:$stripe_port"
}
prepare() { # KIND NAME CONTAINER [VAR=VALUE...]: fills argv[] and envv[]
  local kind=$1 name=$2 cname=$3 prog
  shift 3
  if ! container "$kind" "$name" "$cname" 2> "$work/container.err"; then
    fail "$kind/$name $cname: $(cat "$work/container.err")"
    return 1
  fi
  mapfile -t argv < "$work/cmd"
  # /usr/local/bin/X in the image is $root/usr/local/bin/X here
  case "${argv[0]}" in
    /usr/local/bin/*) argv[0]=$root${argv[0]} ;;
    *) fail "$kind/$name $cname runs ${argv[0]}, not /usr/local/bin/..."; return 1 ;;
  esac
  prog=$(basename "${argv[0]}")
  # only the URL variables this program knows (the others would not be in its --help)
  mapfile -d '' envv < <(base_env | while IFS= read -r -d '' kv; do
    v=${kv%%=*}
    if [ "$v" = PATH ] || [ "$v" = LISTEN_ADDR ] || "$bindir/$prog" --help 2>/dev/null | grep -q "^  $v "; then
      printf '%s\0' "$kv"
    fi
  done; cat "$work/env"; [ $# -gt 0 ] && printf '%s\0' "$@")
}
run_fg() { # KIND NAME CONTAINER [VAR=VALUE...]
  prepare "$@" || { rc=99; return; }
  timeout 120 env -i "${envv[@]}" "${argv[@]}" > "$work/out" 2>&1
  rc=$?
}

# ---- the migration Job ----
run_fg Job ca-migrate migrate
check_eq "the Job ca-migrate's command migrates an empty database" 0 "$rc"
[ "$rc" -eq 0 ] || tail -20 "$work/out"
n=$(psql -tA "$admin_url/$db" -c "SELECT count(*) FROM schema_migrations")
check "schema_migrations holds the four slices' files ($n)" [ "${n:-0}" -gt 20 ]
run_fg Job ca-migrate migrate
check_eq "ca-migrate again (a re-run Job) is a no-op and exits 0" 0 "$rc"
check_eq "nothing new recorded by the re-run" "$n" "$(psql -tA "$admin_url/$db" -c "SELECT count(*) FROM schema_migrations")"

# ---- the Deployments: wait-schema, then serve ----
declare -A port pid
for s in $SERVICES; do
  run_fg Deployment "$s" wait-schema
  check_eq "$s's init container (wait-schema) exits 0 on the migrated schema" 0 "$rc"
  port[$s]=$(free_port)
  prepare Deployment "$s" "$s" "PORT=${port[$s]}" || continue
  env -i "${envv[@]}" "${argv[@]}" > "$work/$s.log" 2>&1 &
  pid[$s]=$!
  pids+=($!)
done
for s in $SERVICES; do
  p=${port[$s]}
  check "$s answers /healthz" wait_http "http://127.0.0.1:$p/healthz" 15 200
  check "$s answers /readyz 200 (PostgreSQL and Redis with the manifest's env)" wait_http "http://127.0.0.1:$p/readyz" 15 200
  if ! wait_http "http://127.0.0.1:$p/readyz" 1 200; then tail -20 "$work/$s.log"; fi
  check "$s serves /metrics" bash -c "curl -fsS 'http://127.0.0.1:$p/metrics' | grep '^http_connections' >/dev/null"
done
gw=${port[api-gateway]}
curl -sS "http://127.0.0.1:$gw/" > "$work/index.html"
check "/ serves the installed dashboard (share/creator-automation/web)" grep -q "$marker" "$work/index.html"
check "/ is the dashboard's HTML" grep -qi '<html' "$work/index.html"

# ---- the CronJobs ----
psql -q "$admin_url/$db" -c "INSERT INTO audit_log (actor, action, created_at) VALUES
  ('contract', 'old', timezone('UTC', now()) - interval '400 days'),
  ('contract', 'recent', timezone('UTC', now()) - interval '10 days')" > /dev/null
for s in $SERVICES; do
  run_fg CronJob "ca-cleanup-$s" cleanup
  check_eq "CronJob ca-cleanup-$s: $s cleanup exits 0" 0 "$rc"
  [ "$rc" -eq 0 ] || tail -5 "$work/out"
done
check_eq "the gateway's cleanup deleted the year-old audit_log row, kept the recent one" "recent" \
  "$(psql -tA "$admin_url/$db" -c "SELECT string_agg(action, ',') FROM audit_log WHERE actor = 'contract'")"

mkdir -p "$work/backup"
run_fg CronJob ca-backup backup "BACKUP_DIR=$work/backup"
check_eq "CronJob ca-backup: ca-backup exits 0" 0 "$rc"
[ "$rc" -eq 0 ] || tail -10 "$work/out"
dump=$(ls "$work/backup"/creator-automation-*.dump 2>/dev/null | head -1)
check "ca-backup wrote creator-automation-<UTC>.dump" [ -n "$dump" ]
check "pg_restore reads the dump, with audit_log in it" bash -c "pg_restore --list '$dump' | grep -q 'TABLE DATA public audit_log'"

# ---- SIGTERM: each daemon exits within its grace period (minus the preStop pause) ----
grace() { python3 - "$work/dev.yaml" "$1" <<'PY'
import sys, yaml
d = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d['kind'] == 'Deployment' and d['metadata']['name'] == sys.argv[2])
s = d['spec']['template']['spec']
pre = int(s['containers'][0]['lifecycle']['preStop']['exec']['command'][1])
print(s['terminationGracePeriodSeconds'] - pre)
PY
}
for s in $SERVICES; do
  limit=$(grace "$s")
  kill -TERM "${pid[$s]}"
  t0=$(date +%s)
  while kill -0 "${pid[$s]}" 2>/dev/null && [ $(($(date +%s) - t0)) -le "$limit" ]; do sleep 0.2; done
  if kill -0 "${pid[$s]}" 2>/dev/null; then
    fail "$s still runs ${limit} s after SIGTERM"
  else
    wait "${pid[$s]}"; rc=$?
    check_eq "$s exits 0 on SIGTERM within ${limit} s" 0 "$rc"
  fi
done

finish
