#!/usr/bin/env bash
# The dashboard's files as the container image has them (deploy/docker/Dockerfile, make install):
# the binary in <prefix>/bin and the web files in <prefix>/share/creator-automation/web,
# no checkout beside it and no WEB_ROOT. The gateway finds and serves them, HTML with
# the strict Content-Security-Policy; without that folder / is a 404.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

export DATABASE_URL="postgresql://ca_api_gateway@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME"
export REDIS_URL=$TEST_REDIS_URL LISTEN_ADDR=127.0.0.1
export ENCRYPTION_KEY=$(head -c 32 /dev/urandom | base64) SESSION_SECRET=test-session-secret-0123456789
export GOOGLE_CLIENT_ID=test-client GOOGLE_CLIENT_SECRET=test-google-secret-xyz
unset WEB_ROOT MIGRATION_DATABASE_URL

# The image runs `make install PREFIX=/usr/local`, which puts the web files in
# <prefix>/share/creator-automation/web (test_dockerfile.sh checks the staged layout).
check "the Dockerfile installs with make install PREFIX=/usr/local" \
  grep -q 'make install DESTDIR=/stage PREFIX=/usr/local' "$CA_ROOT/deploy/docker/Dockerfile"
check "make install puts the web files where the gateway looks" \
  grep -qF 'install_webdir := $(abspath $(DESTDIR)$(PREFIX)/share/creator-automation/web)' "$CA_ROOT/Makefile"

start() { # PREFIX: serve from PREFIX/bin/api-gateway
  PORT=$(free_port)
  (cd / && PORT=$PORT exec "$1/bin/api-gateway" serve) > "$work/gw.log" 2>&1 &
  pid=$!
  wait_http "http://127.0.0.1:$PORT/healthz" 20 || { echo "gateway did not start"; cat "$work/gw.log"; }
}
stop() { # and no sanitizer report (under make SANITIZE=...)
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
  check "the gateway stopped without a sanitizer report" bash -c "! grep -qE 'Sanitizer|runtime error' '$work/gw.log'"
}

prefix=$work/usr/local
mkdir -p "$prefix/bin" "$prefix/share/creator-automation"
cp "$CA_BIN/api-gateway" "$prefix/bin/"
cp -r "$CA_ROOT/services/api-gateway/web" "$prefix/share/creator-automation/web"

start "$prefix"
GW="http://127.0.0.1:$PORT"
curl -s -D "$work/h" -o "$work/body" "$GW/"
check "GET / is 200 from <prefix>/share/creator-automation/web" grep -q '^HTTP/1.1 200' "$work/h"
check "it is the dashboard's index.html" cmp -s "$work/body" "$CA_ROOT/services/api-gateway/web/index.html"
csp=$(grep -i '^Content-Security-Policy:' "$work/h" | tr -d '\r')
check "the HTML carries a Content-Security-Policy" [ -n "$csp" ]
for d in "default-src 'self'" "script-src 'self'" "style-src 'self'" "object-src 'none'" "base-uri 'none'" "frame-ancestors 'none'"; do
  check "CSP has $d" grep -qF "$d" <<<"$csp"
done
check "CSP allows nothing inline and no other host" bash -c "! grep -qE 'unsafe-|https?:|\\*' <<<\"\$1\"" _ "$csp"
check "the page loads its script as a module of this origin" grep -q '<script type="module" src="/js/app.js"></script>' "$work/body"
curl -s -D "$work/h2" -o /dev/null "$GW/js/pages/jobs.js"
check "a module is served as JavaScript" grep -qi '^Content-Type: text/javascript' "$work/h2"
check "a module carries no CSP (only HTML does)" bash -c "! grep -qi '^Content-Security-Policy' '$work/h2'"
stop

# The web files hold nothing that the CSP would refuse: no inline <script>,
# no style attribute or <style> element, no on* handler attribute.
check "no inline script in the HTML" bash -c "! grep -rn '<script' '$CA_ROOT/services/api-gateway/web' --include='*.html' | grep -v 'src=\"/'"
check "no style attribute or element" bash -c "! grep -rnE 'style=|<style' '$CA_ROOT/services/api-gateway/web' --include='*.html'"
check "no on* handler attribute" bash -c "! grep -rnE ' on[a-z]+=' '$CA_ROOT/services/api-gateway/web' --include='*.html'"
check "no other host in the web files" bash -c "! grep -rnoE '(src|href)=\"(https?:)?//' '$CA_ROOT/services/api-gateway/web'"

# Without the share folder (and no checkout beside the binary) there is no dashboard.
rm -rf "$prefix/share"
start "$prefix"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/")
check_eq "without the web folder / is 404" 404 "$code"
stop
finish
