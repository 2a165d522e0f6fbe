#!/usr/bin/env bash
# Install every Debian package the build, the tests and the runtime need.
# A no-op when they are all there. Run as root (or with sudo available).
set -euo pipefail

PKGS=(
  build-essential pkg-config
  libevent-dev libpq-dev libcjson-dev libcurl4-openssl-dev libhiredis-dev libssl-dev
  libvips-dev libvips-tools libcmocka-dev
  libjpeg-dev   # the job-worker calls libjpeg itself (decode ahead, the statistics preview; libvips-dev pulls it in too)
  postgresql-15 postgresql-contrib redis-server
  postgresql-client-15   # pg_dump/pg_restore/psql: ca-backup, ca-restore (tests/integration/test_backup_restore.sh)
  wrk   # HTTP load for tests/integration/test_sigterm_load.sh
  curl ca-certificates procps psmisc
  python3-yaml   # the OpenAPI YAML check (tests/integration/test_gateway_openapi.sh)
  clang-format-14   # the pinned formatter (.clang-format; make format-check)
  clang-14 libclang-rt-14-dev   # make fuzz / fuzz-ci: libFuzzer (-fsanitize=fuzzer) with ASan+UBSan
  chromium   # the dashboard's browser tests (tests/browser: playwright-core drives it headless)
)

# Where libheif ships its codecs as plugins (Debian 13 and later), the HEIC
# decoder (the worker reads HEIC) and encoder (test_cpu_exec writes HEIC
# inputs). Debian 12's libheif1 has both built in and knows no such packages.
for p in libheif-plugin-libde265 libheif-plugin-x265; do
  if apt-cache show "$p" >/dev/null 2>&1; then PKGS+=("$p"); fi
done

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

# kubectl for the deploy/k8s checks (tests/deploy: `kubectl kustomize`): the machine's own
# when there is one, else Debian's kubernetes-client (kubectl 1.20, kustomize v2.0.3: the
# manifests keep to what it reads).
if ! command -v kubectl >/dev/null 2>&1; then missing+=(kubernetes-client); fi

# Node.js: the machine's own (it may come with npm built in) or Debian's.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node packages for the fakes and their tests (googleapis, stripe, ws).
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$here/tests/fakes/package.json" ] && [ ! -d "$here/tests/fakes/node_modules" ]; then
  echo "deps: npm install in tests/fakes"
  (cd "$here/tests/fakes" && npm install --no-audit --no-fund --loglevel=error)
fi

# playwright-core and axe-core for the browser tests (tests/browser;
# playwright-core drives Debian's chromium, no browser download).
if [ -f "$here/tests/browser/package.json" ] && { [ ! -d "$here/tests/browser/node_modules/playwright-core" ] ||
   [ ! -d "$here/tests/browser/node_modules/axe-core" ]; }; then
  echo "deps: npm ci in tests/browser"
  (cd "$here/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)
fi

# kubernetes-models (+ KEDA, prometheus-operator) and yaml for the deploy/k8s checks.
if [ -f "$here/tests/deploy/package.json" ] && [ ! -d "$here/tests/deploy/node_modules/kubernetes-models" ]; then
  echo "deps: npm ci in tests/deploy"
  (cd "$here/tests/deploy" && npm ci --no-audit --no-fund --loglevel=error)
fi

# promtool for the alert rules' unit tests (tests/deploy/test/alerts.test.mjs): taken out of
# Debian's prometheus package (apt-get download + dpkg -x into tests/deploy/.tools), not
# installed, so no Prometheus server is set up on the machine.
if [ -f "$here/tests/deploy/package.json" ] && ! command -v promtool >/dev/null 2>&1 &&
   [ ! -x "$here/tests/deploy/.tools/promtool" ]; then
  echo "deps: promtool from Debian's prometheus package into tests/deploy/.tools"
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
    { SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"; $SUDO apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; } &&
    dpkg -x prometheus_*.deb root && mkdir -p "$here/tests/deploy/.tools" &&
    cp root/usr/bin/promtool "$here/tests/deploy/.tools/promtool")
  rm -rf "$tmp"
fi
