# Shared setup of the benchmarks that drive a daemon against the Google fake
# (tests/bench/bench_poller.sh, bench_pipeline.sh). Source it from the
# repository's root after `set -euo pipefail`:
#
#   . tests/lib/bench.sh
#   bench_start bench_pipeline        # PostgreSQL + Redis, cleanup at exit, $W
#   bench_database                    # $DB: database "bench", every slice applied
#   bench_google                      # the Google fake: $G (base URL), $fake_pid
#   sealed=$(bench_seal "$KEY" <<< "$token")
#   port=$(bench_free_port)
#   "$BIN/job-worker" ... & bench_track $!
#   bench_wait_ready "http://127.0.0.1:$port/readyz" "$W/worker.log"
#   bench_fail "what went wrong" [LOG]   # prints, shows LOG's tail, exits 1
#
# Like bench_billing.sh, a bench built on this checks every step: a command
# that fails ends the run (errexit reaches command substitutions too), a
# daemon that does not get ready ends it, and bench_fake_errors counts the
# fake's answers that were not 2xx.

shopt -s inherit_errexit

BENCH_NAME=bench
bench_pids=()

# bench_fail MESSAGE [LOG]: the run is not valid.
bench_fail() {
  echo "$BENCH_NAME: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then tail -n 30 "$2" >&2; fi
  exit 1
}

bench_cleanup() {
  local p
  for p in "${bench_pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  tests/lib/services.sh stop >/dev/null 2>&1 || true
}

# bench_start NAME: PostgreSQL and Redis on free ports (tests/lib/services.sh),
# stopped at exit with every tracked process; W is their scratch folder.
bench_start() {
  BENCH_NAME=$1
  local env
  env=$(tests/lib/services.sh start) || bench_fail "PostgreSQL/Redis did not start"
  eval "$env"
  trap bench_cleanup EXIT
  W=$CA_TEST_DIR
  PG_ADMIN="postgresql://postgres@127.0.0.1:$TEST_PG_PORT"
}

# bench_track PID: kill PID at exit.
bench_track() { bench_pids+=("$1"); }

# bench_database: creates database "bench" and applies every service's slice
# with psql (as docs/schema.md shows); sets DB to its superuser URL.
bench_database() {
  local s f
  DB="$PG_ADMIN/bench"
  psql -q "$PG_ADMIN/postgres" -c "CREATE DATABASE bench" >/dev/null
  for s in api-gateway billing-webhook job-worker drive-poller; do
    # the roles may already exist (another slice created them): ignore that
    psql -q "$DB" -v ON_ERROR_STOP=1 -1 -f sql/000_roles.sql >/dev/null 2>&1 || true
    for f in sql/$s/*.sql; do
      psql -q "$DB" -v ON_ERROR_STOP=1 -1 -c "SET LOCAL ROLE ca_${s//-/_}" -f "$f" >/dev/null
    done
  done
}

# bench_google: starts the Google fake on a free port; sets G and fake_pid.
bench_google() {
  local port _
  tests/fakes/run google --port 0 > "$W/google.log" 2>&1 &
  fake_pid=$!
  bench_track "$fake_pid"
  for _ in $(seq 100); do
    grep -q 'listening on' "$W/google.log" 2>/dev/null && break
    sleep 0.1
  done
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$W/google.log" | head -1)
  [ -n "$port" ] || bench_fail "the Google fake did not start" "$W/google.log"
  G=http://127.0.0.1:$port
}

# bench_seal KEY: seals each line of stdin with the real envelope
# (common/crypto, build/lib/libcommon.a), one sealed value a line on stdout.
bench_seal() {
  local tool=$W/bench_seal
  if [ ! -x "$tool" ]; then
    [ -f build/lib/libcommon.a ] || bench_fail "build/lib/libcommon.a is missing (make first)"
    cat > "$tool.c" <<'C'
#include "crypto.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
    char err[256], line[4096];
    crypto_keyring_t *kr = argc == 2 ? crypto_keyring_new(argv[1], NULL, err, sizeof(err)) : NULL;
    if (kr == NULL) {
        fprintf(stderr, "bench_seal: %s\n", argc == 2 ? err : "usage: bench_seal KEY");
        return 1;
    }
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *sealed = crypto_envelope_seal(kr, line);
        if (sealed == NULL) {
            fprintf(stderr, "bench_seal: could not seal\n");
            return 1;
        }
        printf("%s\n", sealed);
        free(sealed);
    }
    crypto_keyring_free(kr);
    return 0;
}
C
    # shellcheck disable=SC2046  # pkg-config's words are the flags
    cc -std=gnu11 -O1 -Icommon -o "$tool" "$tool.c" build/lib/libcommon.a \
      $(pkg-config --libs openssl libcjson libcurl libpq hiredis libevent libevent_pthreads) -lm -pthread
  fi
  "$tool" "$1"
}

bench_free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# bench_wait_ready URL LOG: waits up to 15 s for URL to answer 200; fails
# the run (showing LOG) when it does not.
bench_wait_ready() {
  local _
  for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
    sleep 0.1
  done
  bench_fail "$1 did not answer 200 in 15 s" "$2"
}

# bench_cpu_s PID: CPU seconds (user + system) the process has used so far.
bench_cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

# bench_pg_cpu_s POSTMASTER_PID: CPU seconds of PostgreSQL so far: the
# postmaster with its reaped children (cutime, cstime) plus its live backends,
# so backends that end during a run are counted too (one that ends between the
# listing and the read is skipped).
bench_pg_cpu_s() {
  local hz c
  hz=$(getconf CLK_TCK)
  { cat "/proc/$1/stat"; for c in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
      { cat "/proc/$c/stat" 2>/dev/null || true; } | sed 's/$/ self/'; done; } |
    awk -v hz="$hz" '{ t += $14 + $15; if ($NF != "self") t += $16 + $17 } END { printf "%.2f", t / hz }'
}

# bench_fake_errors BASE_URL: how many requests in the fake's log were not
# answered 2xx (status 0: the connection was dropped; null: still running).
bench_fake_errors() {
  curl -sf "$1/__admin/requests" | node -e '
    let s = ""; process.stdin.on("data", (d) => s += d).on("end", () => {
      const bad = JSON.parse(s).requests.filter((r) => !(r.status >= 200 && r.status < 300));
      for (const r of bad.slice(0, 5)) console.error(`  ${r.method} ${r.path} -> ${r.status}`);
      console.log(bad.length); })'
}

# bench_seed_user EMAIL NFILES IMAGE KEY: a user in the Google fake with an
# Inbox holding NFILES copies of IMAGE and a Processed folder in it, and the
# same user in the database (sealed tokens, a studio plan with room to spare).
# Sets U_EMAIL, U_ACCESS, U_INBOX, U_PROCESSED and writes the files' ids, one
# a line, to $W/files-<EMAIL>.txt (U_FILES).
bench_seed_user() {
  local email=$1 n=$2 img=$3 key=$4 line sub refresh sa sr
  node - "$G" "$n" "$img" "$email" > "$W/seed-$email.tsv" <<'JS'
const [base, n, img, email] = [process.argv[2], Number(process.argv[3]), process.argv[4], process.argv[5]];
const content_base64 = require('fs').readFileSync(img).toString('base64');
async function post(path, body) {
  const r = await fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`${path} ${r.status} ${await r.text()}`);
  return r.json();
}
(async () => {
  const u = await post('/__admin/users', { email, client_id: 'bench-client' });
  const inbox = await post('/__admin/files', { email, name: 'Inbox', folder: true, parents: [u.root_id] });
  const out = await post('/__admin/files', { email, name: 'Processed', folder: true, parents: [inbox.id] });
  console.log(['U', u.sub, u.access_token, u.refresh_token, inbox.id, out.id].join('\t'));
  let next = 0;
  const ids = new Array(n);
  async function one() {
    for (let i; (i = next++) < n;) {
      ids[i] = (await post('/__admin/files', { email, name: `b${i}.jpg`, mimeType: 'image/jpeg', parents: [inbox.id], content_base64 })).id;
    }
  }
  await Promise.all(Array.from({ length: 16 }, one));
  for (const id of ids) console.log(['F', id].join('\t'));
})().catch((e) => { console.error(e); process.exit(1); });
JS
  line=$(grep '^U' "$W/seed-$email.tsv")
  IFS=$'\t' read -r _ sub U_ACCESS refresh U_INBOX U_PROCESSED <<<"$line"
  U_EMAIL=$email
  U_FILES=$W/files-$email.txt
  grep '^F' "$W/seed-$email.tsv" | cut -f2 > "$U_FILES"
  [ "$(grep -c . "$U_FILES")" = "$n" ] || bench_fail "seeded $(grep -c . "$U_FILES") files, want $n"
  sa=$(bench_seal "$key" <<<"$U_ACCESS")
  sr=$(bench_seal "$key" <<<"$refresh")
  psql -q "$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (google_id, email, drive_access_token, drive_refresh_token, drive_token_expires_at,
                   watched_folder_id, output_folder_id)
  VALUES ('$sub', '$email', '$sa', '$sr', timezone('UTC', now()) + interval '50 minutes', '$U_INBOX', '$U_PROCESSED');
INSERT INTO subscriptions (user_id, tier, status, monthly_limit)
  SELECT id, 'studio', 'active', 100000 FROM users WHERE email = '$email';
SQL
}

# bench_drive_count TOKEN FOLDER [MIME]: non-empty files (of type MIME when
# given) in FOLDER of the fake's Drive, every page.
bench_drive_count() {
  node - "$G" "$1" "$2" "${3:-}" <<'JS'
const [base, token, folder, mime] = process.argv.slice(2);
(async () => {
  let n = 0, page = '';
  do {
    const url = new URL(base + '/drive/v3/files');
    url.searchParams.set('q', `'${folder}' in parents and trashed = false`);
    url.searchParams.set('pageSize', '1000');
    url.searchParams.set('fields', 'nextPageToken, files(id, mimeType, size)');
    if (page) url.searchParams.set('pageToken', page);
    const r = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    if (r.status !== 200) throw new Error(`files.list ${r.status} ${await r.text()}`);
    const j = await r.json();
    for (const f of j.files) if ((!mime || f.mimeType === mime) && Number(f.size) > 0) n++;
    page = j.nextPageToken || '';
  } while (page);
  console.log(n);
})().catch((e) => { console.error(e); process.exit(1); });
JS
}
