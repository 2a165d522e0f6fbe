#!/usr/bin/env bash
# deploy/docker/Dockerfile and .dockerignore, checked without a container engine
# (none on the test machines): every FROM pinned by digest; a non-root numeric
# USER in the final stage; the build stage runs `make install DESTDIR=/stage
# PREFIX=/usr/local` and the runtime copies /stage; postgresql-client-15 for
# ca-backup/ca-restore; nothing git ignores (var/ with `make run`'s secrets,
# build/, node_modules, objects) would be in the build context, by
# .dockerignore's own matching rules (tests/lib/dockerignore.py); every path the
# build stage COPYs exists and is in the context; those paths alone build and
# install (make install into a staging root, as the image does) into the layout
# the runtime stage copies; every library the installed binaries link is
# provided by the runtime stage's packages.
set -uo pipefail
. "$CA_ROOT/tests/lib/assert.sh"

df=$CA_ROOT/deploy/docker/Dockerfile
di=$CA_ROOT/.dockerignore
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check "the Dockerfile exists" test -f "$df"
check ".dockerignore exists at the repository root" test -f "$di"

# Instructions with their continuation lines joined, comments dropped.
python3 - "$df" > "$work/instr" <<'PY'
import sys
lines, cur = [], ""
for raw in open(sys.argv[1]):
    s = raw.rstrip("\n")
    if not cur and s.lstrip().startswith("#"):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    cur += s
    if cur.strip():
        lines.append(" ".join(cur.split()))
    cur = ""
print("\n".join(lines))
PY

# ---- FROM: pinned by digest, debian:12-slim ----
froms=$(grep -c '^FROM ' "$work/instr")
check "two stages or more (multi-stage)" [ "$froms" -ge 2 ]
pinned=$(grep -cE '^FROM (--platform=[^ ]+ )?debian:12-slim@sha256:[0-9a-f]{64}( AS [A-Za-z0-9_-]+)?$' "$work/instr")
check_eq "every FROM is debian:12-slim pinned by @sha256:<64 hex>" "$froms" "$pinned"
check "no placeholder digest left" bash -c "! grep -qiE 'sha256:(0{64}|<|\\\$)' '$work/instr'"

# ---- the stages ----
awk '/^FROM /{n++} {print > ("'"$work"'/stage" n)}' "$work/instr"
last=$work/stage$froms
build=$work/stage1
check "the first stage is named build" grep -qE '^FROM .* AS build$' "$build"
check "the build stage runs make install DESTDIR=/stage PREFIX=/usr/local" \
  grep -qE '^RUN .*make install DESTDIR=/stage PREFIX=/usr/local' "$build"
check "the runtime stage copies the staging root to /" grep -qxF 'COPY --from=build /stage/ /' "$last"
check "the runtime stage takes nothing from the build context (only --from=build)" \
  bash -c "! grep -E '^(COPY|ADD) ' '$last' | grep -v -- '--from=build'"
check "no ADD anywhere (COPY only)" bash -c "! grep -q '^ADD ' '$work/instr'"
check "the runtime stage installs postgresql-client-15" grep -qE '^RUN .*apt-get install .*postgresql-client-15' "$last"
user=$(grep '^USER ' "$last" | tail -1 | cut -d' ' -f2)
check "the final stage sets USER" [ -n "$user" ]
check "USER is numeric (uid[:gid]) so runAsNonRoot can check it: '$user'" \
  bash -c "[[ '$user' =~ ^[0-9]+(:[0-9]+)?$ ]]"
check "USER is not root (uid and gid not 0): '$user'" bash -c "[[ ! '$user' =~ (^|:)0+(:|$) ]]"
check "USER is the last USER instruction of the image" bash -c "[ \"\$(grep '^USER ' '$work/instr' | tail -1)\" = 'USER $user' ]"
check_eq "USER is 10001 (the contract)" "10001" "${user%%:*}"

# ---- .dockerignore: nothing git ignores is in the context ----
# Sample paths for each .gitignore pattern (root-anchored or at any depth),
# the secrets `make run` keeps in var/, and what git ignores in this checkout.
samples=$work/samples
: > "$samples"
while IFS= read -r pat; do
  case "$pat" in ""|"#"*|"!"*) continue ;; esac
  p=${pat#/}; p=${p%/}; p=${p//\*/sample}
  echo "$p/file" >> "$samples"; echo "$p" >> "$samples"
  case "$pat" in /*|*/?*) ;; *) echo "services/api-gateway/$p" >> "$samples"; echo "tests/browser/$p/x" >> "$samples" ;; esac
done < "$CA_ROOT/.gitignore"
printf '%s\n' var/secrets.env var/pg/data/PG_VERSION var/logs/api-gateway.log build/bin/api-gateway \
  build/san/obj/common/pg.o tests/fakes/node_modules/stripe/package.json .git/config >> "$samples"
(cd "$CA_ROOT" && git status --porcelain --ignored --untracked-files=all 2>/dev/null | sed -n 's/^!! //p') >> "$samples"
nsamples=$(sort -u "$samples" | grep -vc '^$')
# (every sample is one git ignores, by construction; .git/config besides)
leaks=$(sort -u "$samples" | grep -v '^$' | xargs -r -d '\n' python3 "$CA_ROOT/tests/lib/dockerignore.py" "$CA_ROOT" | tr '\n' ' ')
echo "# $nsamples sample paths that git ignores checked against .dockerignore"
check_eq "no path git ignores (nor .git) would be sent in the build context" "" "$leaks"
for p in var build tests/fakes/node_modules node_modules tests .git; do
  check_eq ".dockerignore excludes $p/" "" "$(python3 "$CA_ROOT/tests/lib/dockerignore.py" "$CA_ROOT" "$p/x")"
done
python3 "$CA_ROOT/tests/lib/dockerignore.py" "$CA_ROOT" > "$work/context"
check "the context still holds the sources (Makefile, common/, services/, sql/)" \
  bash -c "grep -qx Makefile '$work/context' && grep -q '^common/' '$work/context' && grep -q '^services/' '$work/context' && grep -q '^sql/' '$work/context'"
check "the context holds no node_modules, var/, build/" bash -c "! grep -qE '(^|/)node_modules(/|$)|^var/|^build/' '$work/context'"

# ---- the build stage's COPYs: they exist, are in the context, and build ----
ctx=$work/src
mkdir -p "$ctx"
ncopy=0
while read -r -a words; do
  [ "${words[0]}" = COPY ] || continue
  srcs=("${words[@]:1:${#words[@]}-2}")
  dest=${words[${#words[@]}-1]}
  for s in "${srcs[@]}"; do
    case "$s" in --*) continue ;; esac
    ncopy=$((ncopy + 1))
    s=${s%/}
    check "COPY $s: exists in the repository" test -e "$CA_ROOT/$s"
    check "COPY $s: is in the build context" grep -qE "^${s//./\\.}(/|$)" "$work/context"
    # as Docker does: a folder's content into dest; a file into dest (a folder when it ends in /)
    if [ -d "$CA_ROOT/$s" ]; then
      mkdir -p "$ctx/$dest"
      grep -E "^${s//./\\.}/" "$work/context" | while IFS= read -r f; do
        mkdir -p "$ctx/$dest/$(dirname "${f#"$s"/}")"; cp -p "$CA_ROOT/$f" "$ctx/$dest/${f#"$s"/}"
      done
    else
      case "$dest" in */) mkdir -p "$ctx/$dest"; cp -p "$CA_ROOT/$s" "$ctx/$dest" ;;
        *) mkdir -p "$(dirname "$ctx/$dest")"; cp -p "$CA_ROOT/$s" "$ctx/$dest" ;; esac
    fi
  done
done < "$build"
check "the build stage COPYs its sources ($ncopy paths)" [ "$ncopy" -ge 4 ]
check "the build stage's WORKDIR is /src" grep -qx 'WORKDIR /src' "$build"

echo "# building the COPYed sources alone and installing into a staging root (make install DESTDIR)"
stage=$work/stage
if (cd "$ctx" && make -j2 all > "$work/make.log" 2>&1 && make install DESTDIR="$stage" PREFIX=/usr/local >> "$work/make.log" 2>&1); then
  ok "the COPYed sources build and install"
else
  fail "the COPYed sources build and install"; tail -30 "$work/make.log"
fi
for f in api-gateway drive-poller job-worker billing-webhook ca-migrate ca-backup ca-restore; do
  check "staged /usr/local/bin/$f is executable" test -x "$stage/usr/local/bin/$f"
done
check "staged dashboard /usr/local/share/creator-automation/web/index.html" \
  test -f "$stage/usr/local/share/creator-automation/web/index.html"
check "the staged web files are the repository's" diff -r "$CA_ROOT/services/api-gateway/web" "$stage/usr/local/share/creator-automation/web"
check "nothing staged outside /usr/local" bash -c "[ \"\$(ls '$stage')\" = usr ] && [ \"\$(ls '$stage/usr')\" = local ]"
check "nothing of the build tree staged (no .o, no tests)" bash -c "! find '$stage' -name '*.o' -o -name 'test_*' | grep -q ."
for f in ca-migrate ca-backup ca-restore; do
  check "$f --help exits 0" bash -c "'$stage/usr/local/bin/$f' --help > /dev/null"
done
check "wait-schema is in the binaries' --help" bash -c "'$stage/usr/local/bin/job-worker' --help | grep -q 'wait-schema'"

# ---- the runtime stage's packages provide every library the binaries link ----
if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
  pkgs=$(grep -E '^RUN .*apt-get install' "$last" | sed -E 's/.*--no-install-recommends //; s/ &&.*//')
  closure=$(python3 - $pkgs <<'PY'
import subprocess, sys, re
seen, todo = set(), list(sys.argv[1:]) + ["libc6", "libgcc-s1"]   # libc6, libgcc-s1: in debian:12-slim
while todo:
    p = todo.pop()
    if p in seen:
        continue
    seen.add(p)
    r = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", p], capture_output=True, text=True)
    for alt in re.split(r",", r.stdout):
        name = alt.split("|")[0].strip().split(" ")[0].split(":")[0]
        if name:
            todo.append(name)
print("\n".join(sorted(seen)))
PY
)
  for p in $pkgs; do
    check "runtime package $p exists in Debian 12" bash -c "apt-cache show '$p' > /dev/null 2>&1"
  done
  for b in api-gateway drive-poller job-worker billing-webhook; do
    missing=""
    for lib in $(readelf -d "$stage/usr/local/bin/$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
      pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1)
      [ -z "$pkg" ] && pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1)
      grep -qx "$pkg" <<< "$closure" || missing="$missing $lib($pkg)"
    done
    check_eq "every library $b links comes with the runtime stage's packages" "" "$missing"
  done
else
  echo "# not Debian 12: the runtime library check is skipped"
fi

finish
