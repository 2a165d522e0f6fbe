#!/usr/bin/env bash
# Benchmark: PostgreSQL CPU a job for the job-worker's per-job statements,
# the schema of a git ref (BENCH_OLD_REF, default s7-int: the worker's old
# statements, with its own SELECT share_outputs) against this tree's (the
# worker's statements now), interleaved round by round on one server, with the
# floor beside them: a job row inserted, claimed and completed by three bare
# statements (issue 18, "the codec floor"). Each figure is pgbench with 2
# clients running BENCH_JOBS jobs (insert + claim + completion each); the CPU
# is the postmaster's, its live backends' and its reaped children's.
#   BENCH_OLD_REF (s7-int)  BENCH_JOBS (3000)  BENCH_ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib/bench.sh
N=${BENCH_JOBS:-3000}
ROUNDS=${BENCH_ROUNDS:-3}
OLD_REF=${BENCH_OLD_REF:-s7-int}
bench_start bench_pg_job
mkdir -p "$W/old"
git archive "$OLD_REF" sql | tar -x -C "$W/old" || bench_fail "git archive $OLD_REF failed"
mkdb() { # name sqlroot
  local d="$PG_ADMIN/$1" s f
  psql -q "$PG_ADMIN/postgres" -c "CREATE DATABASE $1" >/dev/null
  for s in api-gateway billing-webhook job-worker drive-poller; do
    psql -q "$d" -v ON_ERROR_STOP=1 -1 -f "$2/sql/000_roles.sql" >/dev/null 2>&1 || true
    for f in "$2"/sql/$s/*.sql; do
      psql -q "$d" -v ON_ERROR_STOP=1 -1 -c "SET LOCAL ROLE ca_${s//-/_}" -f "$f" >/dev/null
    done
  done
  psql -q "$d" -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO users (google_id, email, watched_folder_id, output_folder_id, default_preset)
  VALUES ('g1', 'u@example.com', 'inbox', 'out', 'passthrough');
INSERT INTO subscriptions (user_id, tier, status, monthly_limit) SELECT id, 'studio', 'active', 10000000 FROM users;
INSERT INTO presets (created_by_user_id, name, workflow_json) SELECT id, 'passthrough', '{"1":{"class_type":"LoadImage","inputs":{"image":"x.jpg"}}}' FROM users;
SQL
  psql -qtA "$d" -c "SELECT id FROM users"
}
uid_old=$(mkdb old "$W/old")
uid_new=$(mkdb new "$PWD")
ins() { echo "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, file_size_bytes, file_mime_type, preset_name) VALUES ('$1', 'f' || md5(random()::text), 'p.jpg', 'inbox', 1000, 'image/jpeg', 'passthrough') RETURNING id \\gset"; }
{ ins "$uid_old"; echo "SELECT * FROM jobs_worker_claim(:id, 'w', 300, 300);"
  echo "SELECT share_outputs FROM users WHERE id = '$uid_old';"
  echo "SELECT jobs_worker_complete(:id, 1, 5, 'w', 'out', 'p_x.jpg', 'https://x', false);"; } >"$W/old.sql"
{ ins "$uid_new"; echo "SELECT * FROM jobs_worker_claim(:id, 'w', 300, 300);"
  echo "SELECT jobs_worker_complete(:id, 1, 5, 'w', 'out', 'p_x.jpg', 'https://x', false);"; } >"$W/new.sql"
{ ins "$uid_new"; echo "UPDATE jobs SET status = 'processing', attempt = attempt + 1, worker_id = 'w', started_at = timezone('UTC', now()), lease_expires_at = timezone('UTC', now()) + interval '5 minutes' WHERE id = :id AND status = 'queued';"
  echo "UPDATE jobs SET status = 'completed', completed_at = timezone('UTC', now()), processing_time_ms = 1, worker_id = 'w', output_drive_file_id = 'out', output_file_name = 'p_x.jpg', output_url = 'https://x', lease_expires_at = NULL WHERE id = :id AND status = 'processing';"; } >"$W/floor.sql"
pm=$(head -1 "$W/pg/postmaster.pid")
run() { # db script mode label
  local c0 c1
  sleep 1
  c0=$(bench_pg_cpu_s "$pm")
  "${PGBIN:-/usr/lib/postgresql/15/bin}/pgbench" -n -M "$3" -c 2 -j 2 -t $((N / 2)) -f "$W/$2.sql" "$PG_ADMIN/$1" >"$W/pgb.log" 2>&1 || bench_fail "pgbench failed" "$W/pgb.log"
  grep -q "failed transactions: 0 " "$W/pgb.log" || bench_fail "pgbench had failed transactions" "$W/pgb.log"
  sleep 1 # the backends' exit, reaped by the postmaster
  c1=$(bench_pg_cpu_s "$pm")
  printf '  %-28s %6.0f us a job\n' "$4" "$(echo "($c1 - $c0) * 1000000 / $N" | bc -l)"
}
for r in $(seq "$ROUNDS"); do
  echo "round $r:"
  run old old extended "$OLD_REF (unprepared)"; run new new extended "this tree (unprepared)"; run new new prepared "this tree (prepared)"; run new floor prepared "floor (prepared)"; run new floor extended "floor (unprepared)"
done
# every job of the scripts completed
for d in old new; do
  left=$(psql -qtA "$PG_ADMIN/$d" -c "SELECT count(*) FROM jobs WHERE status <> 'completed'")
  [ "$left" = 0 ] || bench_fail "$left jobs not completed in $d"
done
