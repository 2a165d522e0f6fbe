#!/usr/bin/env bash
# The system presets exist twice: as seed data in the presets slice (what the
# worker runs) and as services/job-worker/presets/*.json (what `job-worker
# render` reads offline). They must be the same graphs, and each must pass the
# CPU executor's validator.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"
for p in portrait_pro product_clean landscape_vivid; do
  db=$(psql -tA "$TEST_DATABASE_URL" -c "SELECT workflow_json::text FROM presets WHERE name = '$p' AND created_by_user_id IS NULL")
  check "$p is in the database" [ -n "$db" ]
  same=$(node -e '
    const a = JSON.parse(process.argv[1]);
    const b = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
    const canon = (v) => Array.isArray(v) ? v.map(canon) : (v && typeof v === "object")
      ? Object.fromEntries(Object.keys(v).sort().map(k => [k, canon(v[k])])) : v;
    console.log(JSON.stringify(canon(a)) === JSON.stringify(canon(b)) ? "same" : "differ");
  ' "$db" "$CA_ROOT/services/job-worker/presets/$p.json")
  check_eq "$p: database graph equals presets/$p.json" same "$same"
done
finish
