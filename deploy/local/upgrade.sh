#!/usr/bin/env bash
# Upgrades the demo user of `make run` through Stripe (the fake): creates a
# Checkout Session through the gateway, completes it on the fake, which sends
# the signed webhooks (checkout.session.completed, customer.subscription.created,
# invoice.paid) to billing-webhook; then shows the new plan.
#   deploy/local/upgrade.sh creator|studio
set -euo pipefail
cd "$(dirname "$0")/../.."
VAR=${CA_VAR:-$PWD/var}
tier=${1:-creator}
GATEWAY_PORT=${CA_GATEWAY_PORT:-8080}
GW="http://127.0.0.1:$GATEWAY_PORT"
JAR="$VAR/run/demo.cookies"
[ -f "$JAR" ] || { echo "upgrade: no demo session; start it with 'make run' first" >&2; exit 1; }
api() { curl -s -b "$JAR" -H "Origin: http://localhost:$GATEWAY_PORT" -H 'Content-Type: application/json' "$@"; }
json() { node -e "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{const v=JSON.parse(d);console.log(eval(process.argv[1]))})" "$1"; }

resp=$(api -X POST "$GW/api/billing/checkout" -d "{\"tier\":\"$tier\"}")
url=$(echo "$resp" | json 'v.url||""')
[ -n "$url" ] || { echo "upgrade: checkout failed: $resp" >&2; exit 1; }
echo "checkout session: $url"
curl -s -o /dev/null "$url"   # the fake completes the session and sends the signed events
for _ in $(seq 1 50); do
  usage=$(api "$GW/api/usage")
  [ "$(echo "$usage" | json 'v.tier')" = "$tier" ] && break
  sleep 0.2
done
echo "plan now: $(echo "$usage" | json '`${v.tier}, ${v.monthly_limit} images a month, ${v.remaining} left`')"
