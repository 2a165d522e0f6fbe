#!/usr/bin/env bash
# docs/schema/current.sql is the live schema, checked in: it must equal the dump of the
# database tests/run migrated with the real binaries (TEST_DATABASE_URL), normalised by the
# same code that wrote it (tools/schema-dump.sh --url). When it differs, the diff is printed:
# run `make schema-dump` and commit the file with the migration that changed it.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"
cd "$CA_ROOT"

dump=$(mktemp)
trap 'rm -f "$dump"' EXIT

if tools/schema-dump.sh --url "$TEST_DATABASE_URL" > "$dump"; then
  ok "the migrated database dumps (tools/schema-dump.sh --url)"
else
  fail "the migrated database dumps (tools/schema-dump.sh --url)"
fi
check "the dump is not empty" grep -q 'CREATE TABLE public.jobs ' "$dump"
check "docs/schema/current.sql is checked in" test -f docs/schema/current.sql
if diff -u docs/schema/current.sql "$dump"; then
  ok "docs/schema/current.sql is current"
else
  fail "docs/schema/current.sql is stale (diff above: - the file, + the migrated database); run make schema-dump"
fi
finish
