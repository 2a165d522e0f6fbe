#!/usr/bin/env bash
# The authorization matrix generated from docs/api/openapi.yaml: every
# operation × (no session, another user's ids, a non-administrator), against
# the real api-gateway, PostgreSQL, Redis and the Google and Stripe fakes. See
# tests/lib/authz_matrix.py (how to teach it a new kind of id).
set -uo pipefail
exec python3 "$CA_ROOT/tests/lib/authz_matrix.py"
