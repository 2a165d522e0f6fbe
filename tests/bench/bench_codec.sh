#!/usr/bin/env bash
# Benchmark: the codec floor (issue 18). portrait_pro (`job-worker render`) on
# three real camera photographs against, in the same run:
#   - `vips copy` of the same file (decode + encode, JPEG Q 90 like the
#     preset): target render <= 1.3x;
#   - ImageMagick doing the same operations (resize to a 3000 px long edge,
#     auto-levels, warmth, sharpen, vignette, JPEG 90): target >= 5x faster;
#   - peak RSS of render (target <= 150 MB).
#
# The photographs come from a Debian package, fetched by the bench itself
# (apt-get download, into BENCH_PHOTOS, default var/bench-photos; nothing is
# committed): lomiri-wallpapers-16.04's Dragonfly_by_Bolly (4224x3168, 13.4
# MP), sunset_by_Aitzol_Berasategi (4272x2848, 12.2 MP) and
# seeding_by_Clements_Engelhardt (5312x2988, 15.9 MP). The package ships them
# as progressive JPEGs (made for the web); camera files are baseline, so the
# bench converts them losslessly with jpegtran (the same DCT coefficients,
# the same pixels: checked) and measures the baseline files. Nothing is scaled.
#
# Timing: for each photo, BENCH_REPEAT rounds of render then `vips copy`,
# interleaved (A, B, A, B ...) so both see the same load; the ratio is of the
# medians (wall time; CPU time user+sys printed beside it). ImageMagick runs
# once per photo (it takes minutes; BENCH_IM=0 skips it, BENCH_IM=1 runs it
# on the first photo only). Each side's process start-up (a 1x1 JPEG) is
# measured the same way and the ratio net of it printed beside the target's.
#
# Nothing is taken on trust: ImageMagick is installed (Debian's imagemagick)
# when no `convert`/`magick` on the PATH says it is ImageMagick (a stand-in
# that is not is refused), every timed command must exit 0 AND leave an
# output that exists, decodes completely and has the expected size; a run
# that fails ends the bench with its output, before any ratio is printed.
# A missed target fails the bench too (after printing every figure).
#
#   BENCH_REPEAT (5)  BENCH_IM (all: every photo; 1: first only; 0: skip)
#   BENCH_PHOTOS (var/bench-photos)  BENCH_FETCH_ONLY (0): 1 fetches the photographs and stops
#   BENCH_BREAKDOWN (0): 1 adds the CPU of portrait_pro's graph cut after each
#     step, on the first photo (where the ratio goes)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${CA_BIN:-$ROOT/build/bin}
REPEAT=${BENCH_REPEAT:-5}
IM_MODE=${BENCH_IM:-all}
PHOTOS=${BENCH_PHOTOS:-$ROOT/var/bench-photos}
NAME=bench_codec
fail() {
  echo "$NAME: $1" >&2
  if [ -n "${2:-}" ] && [ -f "$2" ]; then tail -n 20 "$2" >&2; fi
  exit 1
}
[ -x "$BIN/job-worker" ] || fail "$BIN/job-worker is missing (make first)"
command -v vips >/dev/null || fail "vips (libvips-tools) is missing"
command -v cc >/dev/null || fail "cc is missing (build-essential: make deps)"
W=$(mktemp -d "${TMPDIR:-/tmp}/bench_codec.XXXXXX")
trap 'rm -rf "$W"' EXIT

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
apt_install() { # PACKAGE...: apt-get install, with one `apt-get update` when that fails
  $SUDO apt-get install -y -qq "$@" >"$W/apt.log" 2>&1 ||
    { $SUDO apt-get update -qq >>"$W/apt.log" 2>&1 && $SUDO apt-get install -y -qq "$@" >>"$W/apt.log" 2>&1; } ||
    fail "apt-get install $* failed" "$W/apt.log"
}

# ---------------------------------------------------------------- ImageMagick
# The first of these that says it is ImageMagick (a `convert` that is not —
# a stand-in, another tool — is never timed).
is_im() { "$1" -version 2>/dev/null | head -1 | grep -q 'ImageMagick'; }
find_im() {
  local c
  # Debian's binaries first (a `convert` earlier on the PATH may be a wrapper)
  for c in /usr/bin/convert-im6.q16 /usr/bin/magick /usr/bin/convert magick convert; do
    if command -v "$c" >/dev/null 2>&1 && is_im "$c"; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}
IM=""
if [ "$IM_MODE" != 0 ]; then
  if ! IM=$(find_im); then
    echo "$NAME: installing imagemagick (Debian package): no ImageMagick on the PATH"
    apt_install imagemagick
    IM=$(find_im) || fail "ImageMagick still not found after apt-get install imagemagick"
  fi
  echo "ImageMagick: $IM ($("$IM" -version | head -1 | sed 's/^Version: //'))"
fi

# ---------------------------------------------------------------- the photographs
PKG=lomiri-wallpapers-16.04
SET="Dragonfly_by_Bolly:4224:3168 sunset_by_Aitzol_Berasategi:4272:2848 seeding_by_Clements_Engelhardt:5312:2988"
mkdir -p "$PHOTOS"
if [ ! -f "$PHOTOS/.ready" ]; then
  command -v jpegtran >/dev/null || apt_install libjpeg-turbo-progs
  rm -rf "$PHOTOS/x" "$PHOTOS"/*.deb
  (cd "$PHOTOS" && { apt-get download "$PKG" >"$W/dl.log" 2>&1 ||
    { $SUDO apt-get update -qq >>"$W/dl.log" 2>&1 && apt-get download "$PKG" >>"$W/dl.log" 2>&1; }; }) ||
    fail "apt-get download $PKG failed" "$W/dl.log"
  dpkg -x "$PHOTOS"/"$PKG"_*.deb "$PHOTOS/x"
  for e in $SET; do
    IFS=: read -r n _ _ <<<"$e"
    src="$PHOTOS/x/usr/share/backgrounds/$n.jpg"
    [ -f "$src" ] || fail "$src is not in $PKG"
    # lossless: the same coefficients, baseline (sequential) like a camera's file
    jpegtran -copy all -optimize "$src" >"$PHOTOS/$n.jpg" || fail "jpegtran $n failed"
    vips subtract "$src" "$PHOTOS/$n.jpg" "$W/d.v" && vips abs "$W/d.v" "$W/a.v" &&
      [ "$(echo "$(vips max "$W/a.v") == 0" | bc)" = 1 ] || fail "$n: the baseline copy's pixels differ from the original"
  done
  touch "$PHOTOS/.ready"
fi
[ "${BENCH_FETCH_ONLY:-0}" = 1 ] && exit 0 # bench_pipeline.sh: the photographs only

# ---------------------------------------------------------------- checked runs
# expect_image FILE W H: exists, decodes to the last pixel, is W x H.
expect_image() {
  local got
  [ -s "$1" ] || fail "no output: $1"
  got=$(vipsheader -f width "$1" 2>/dev/null)x$(vipsheader -f height "$1" 2>/dev/null) ||
    fail "$1 is not an image"
  [ "$got" = "$2x$3" ] || fail "$1 is $got, want $2x$3"
  vips avg "$1" >/dev/null 2>"$W/avg.err" || fail "$1 does not decode" "$W/avg.err"
}
# runt FILE CMD...: runs CMD, writes "wall CPU maxrss" to FILE (seconds to
# the microsecond, user + system of the process and its children from wait4,
# kB) and exits with CMD's status. /usr/bin/time prints
# 10 ms steps, too coarse for a 30 ms start-up or a ratio to 0.01.
cat >"$W/runt.c" <<'C'
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    struct timespec t0, t1;
    struct rusage ru;
    int st;
    if (argc < 3)
        return 2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0)
        return 2;
    if (pid == 0) {
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    if (wait4(pid, &st, 0, &ru) != pid)
        return 2;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *f = fopen(argv[1], "w");
    if (f == NULL)
        return 2;
    fprintf(f, "%.6f %.6f %ld\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
           ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
           ru.ru_maxrss);
    if (fclose(f) != 0)
        return 2;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
C
cc -O2 -o "$W/runt" "$W/runt.c" || fail "could not build the timing helper"
# timed OUT W H CMD...: runs CMD under runt, fails the bench when it
# exits non-zero or leaves no good OUT (W x H); prints "wall CPU maxrss_kB".
timed() {
  local out=$1 ew=$2 eh=$3
  shift 3
  rm -f "$out"
  "$W/runt" "$W/time.txt" "$@" >"$W/cmd.out" 2>&1 ||
    { cat "$W/cmd.out" >&2; fail "failed (exit status): $*"; }
  expect_image "$out" "$ew" "$eh"
  cat "$W/time.txt"
}
# jpeg_settings FILE [summary]: the DQT and DHT segments and the SOF marker
# with its per-component sampling factors (not the size); `summary` prints
# the frame type, the sampling and whether the Huffman tables are libjpeg's
# standard ones (4 DHT, no optimize_coding).
jpeg_settings() {
  node -e '
    const b = require("fs").readFileSync(process.argv[1]);
    const o = { dqt: [], dht: [], sof: "" };
    for (let i = 2; i + 4 <= b.length && b[i] === 0xff;) {
      const m = b[i + 1], len = b.readUInt16BE(i + 2), seg = b.subarray(i + 4, i + 2 + len);
      if (m === 0xdb) o.dqt.push(seg.toString("hex"));
      else if (m === 0xc4) o.dht.push(seg.toString("hex"));
      else if (m >= 0xc0 && m <= 0xcf && m !== 0xc8 && m !== 0xcc) {
        const comps = [];
        for (let c = 0; c < seg[5]; c++) comps.push((seg[7 + 3 * c] >> 4) + "x" + (seg[7 + 3 * c] & 15));
        o.sof = "SOF" + (m - 0xc0) + " " + comps.join(",");
      }
      if (m === 0xda) break;
      i += 2 + len;
    }
    if (process.argv[2] === "summary") {
      console.log(o.sof + (o.sof.startsWith("SOF0 ") ? " baseline" : "") + ", " + o.dqt.length + " DQT, " +
        (o.dht.length === 4 && o.dht[0].startsWith("00000105") ? "standard Huffman tables" : "optimised Huffman tables"));
    } else console.log(JSON.stringify(o));
  ' "$1" "${2:-}"
}
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo "met"; else echo "MISSED"; fi; }

missed=0
i=0
printf '%s, %s rounds interleaved (medians), load average at start %s\n' "portrait_pro vs vips copy" "$REPEAT" \
  "$(cut -d' ' -f1 /proc/loadavg)"
# Each side's process start-up (a 1x1 JPEG through the same commands), to
# print the ratio net of it too: the ratio the target is about is of whole
# processes, as `vips copy` is one, but the job-worker starts once and the two
# do not start alike (render loads only libvips' HEIF module, on demand;
# `vips copy` loads every module: ImageMagick, PDF, OpenSlide, JPEG XL ...).
vips black "$W/one.v" 1 1 --bands 3 >"$W/cmd.out" 2>&1 && vips copy "$W/one.v" "$W/one.jpg" >>"$W/cmd.out" 2>&1 ||
  fail "could not make a 1x1 JPEG" "$W/cmd.out"
: >"$W/s_r.txt"
: >"$W/s_c.txt"
for _ in $(seq "$REPEAT"); do
  timed "$W/one-r.jpg" 1 1 "$BIN/job-worker" render portrait_pro "$W/one.jpg" "$W/one-r.jpg" >>"$W/s_r.txt"
  timed "$W/one-c.jpg" 1 1 vips copy "$W/one.jpg" "$W/one-c.jpg[Q=90]" >>"$W/s_c.txt"
done
s_r_wall=$(cut -d' ' -f1 "$W/s_r.txt" | median)
s_r_cpu=$(cut -d' ' -f2 "$W/s_r.txt" | median)
s_c_wall=$(cut -d' ' -f1 "$W/s_c.txt" | median)
s_c_cpu=$(cut -d' ' -f2 "$W/s_c.txt" | median)
printf 'process start-up (1x1 JPEG): render %.3f s (CPU %.3f s), vips copy %.3f s (CPU %.3f s)\n' \
  "$s_r_wall" "$s_r_cpu" "$s_c_wall" "$s_c_cpu"
for e in $SET; do
  IFS=: read -r n pw ph <<<"$e"
  in="$PHOTOS/$n.jpg"
  [ "$(vipsheader -f width "$in")x$(vipsheader -f height "$in")" = "${pw}x$ph" ] || fail "$in is not ${pw}x$ph"
  # portrait_pro: long edge 3000
  if [ "$pw" -ge "$ph" ]; then ow=3000 oh=$(echo "($ph * 3000 + $pw / 2) / $pw" | bc); else oh=3000 ow=$(echo "($pw * 3000 + $ph / 2) / $ph" | bc); fi
  : >"$W/r.txt"
  : >"$W/c.txt"
  for _ in $(seq "$REPEAT"); do
    timed "$W/out.jpg" "$ow" "$oh" "$BIN/job-worker" render portrait_pro "$in" "$W/out.jpg" >>"$W/r.txt"
    timed "$W/copy.jpg" "$pw" "$ph" vips copy "$in" "$W/copy.jpg[Q=90]" >>"$W/c.txt"
  done
  r_wall=$(cut -d' ' -f1 "$W/r.txt" | median)
  r_cpu=$(cut -d' ' -f2 "$W/r.txt" | median)
  c_wall=$(cut -d' ' -f1 "$W/c.txt" | median)
  c_cpu=$(cut -d' ' -f2 "$W/c.txt" | median)
  rss_mb=$(cut -d' ' -f3 "$W/r.txt" | sort -n | tail -1 | awk '{ printf "%.0f", $1 / 1024 }')
  ratio=$(echo "$r_wall / $c_wall" | bc -l)
  cpu_ratio=$(echo "$r_cpu / $c_cpu" | bc -l)
  printf '%s %sx%s (%.1f MP, %d bytes)\n' "$n" "$pw" "$ph" "$(echo "$pw * $ph / 1000000" | bc -l)" "$(stat -c %s "$in")"
  printf '  render %.3f s (CPU %.3f s)   vips copy %.3f s (CPU %.3f s)\n' "$r_wall" "$r_cpu" "$c_wall" "$c_cpu"
  printf '  render / vips copy   = %.2fx wall, %.2fx CPU (target <= 1.3x: %s)\n' "$ratio" "$cpu_ratio" \
    "$(verdict "$ratio <= 1.3")"
  [ "$(verdict "$ratio <= 1.3")" = met ] || missed=1
  printf '  net of start-up      = %.2fx wall, %.2fx CPU (for information: each side less its own start-up)\n' \
    "$(echo "($r_wall - $s_r_wall) / ($c_wall - $s_c_wall)" | bc -l)" \
    "$(echo "($r_cpu - $s_r_cpu) / ($c_cpu - $s_c_cpu)" | bc -l)"
  printf '  peak RSS of render   = %s MB (target <= 150 MB: %s)\n' "$rss_mb" "$(verdict "$rss_mb <= 150")"
  # a fair comparison: both files encoded alike (quantisation tables = the
  # same Q, Huffman tables = no optimize_coding on either side, the frame
  # header = baseline, the same chroma sampling)
  r_enc=$(jpeg_settings "$W/out.jpg") && c_enc=$(jpeg_settings "$W/copy.jpg") || fail "cannot read the JPEG headers"
  [ "$r_enc" = "$c_enc" ] || fail "render and vips copy encode differently: $r_enc vs $c_enc"
  printf '  encoding             = the same on both sides (%s)\n' "$(jpeg_settings "$W/out.jpg" summary)"
  [ "$(verdict "$rss_mb <= 150")" = met ] || missed=1
  i=$((i + 1))
  if [ -n "$IM" ] && { [ "$IM_MODE" = all ] || [ "$i" = 1 ]; }; then
    im=$(timed "$W/im.jpg" "$ow" "$oh" "$IM" "$in" -resize '3000x3000>' -contrast-stretch 0.3%x0.3% \
      -color-matrix '1.06 0 0 0 1.0 0 0 0 0.94' -unsharp 0x1+0.08+0 \
      -background black -vignette 0x400+0+0 -quality 90 "$W/im.jpg")
    im_wall=${im%% *}
    r_im=$(echo "$im_wall / $r_wall" | bc -l)
    printf '  ImageMagick %.1f s: ImageMagick / render = %.0fx (target >= 5x: %s)\n' "$im_wall" "$r_im" \
      "$(verdict "$r_im >= 5")"
    [ "$(verdict "$r_im >= 5")" = met ] || missed=1
  fi
done
# Where the ratio goes (BENCH_BREAKDOWN=1): portrait_pro's graph cut after
# each step, on the first photo, CPU time (perf-free: user+sys from wait4,
# to the microsecond, medians of BENCH_REPEAT interleaved rounds).
if [ "${BENCH_BREAKDOWN:-0}" = 1 ]; then
  IFS=: read -r n pw ph <<<"${SET%% *}"
  in="$PHOTOS/$n.jpg"
  node -e '
    const g = require(process.argv[1]);
    const cut = (keep, last) => { const o = {}; for (const k of keep) o[k] = JSON.parse(JSON.stringify(g[k]));
      o["7"].inputs.image = [last, 0]; return o; };
    const noal = cut(["1", "2", "4", "5", "6", "7"], "6"); noal["4"].inputs.image = ["2", 0];
    const fs = require("fs");
    fs.writeFileSync(process.argv[2] + "/g1.json", JSON.stringify(cut(["1", "7"], "1")));
    fs.writeFileSync(process.argv[2] + "/g2.json", JSON.stringify(cut(["1", "2", "7"], "2")));
    fs.writeFileSync(process.argv[2] + "/g3.json", JSON.stringify(noal));
  ' "$ROOT/services/job-worker/presets/portrait_pro.json" "$W"
  if [ "$pw" -ge "$ph" ]; then ow=3000 oh=$(echo "($ph * 3000 + $pw / 2) / $pw" | bc); else oh=3000 ow=$(echo "($pw * 3000 + $ph / 2) / $ph" | bc); fi
  for k in c g1 g2 g3 pp; do : >"$W/b_$k.txt"; done
  for _ in $(seq "$REPEAT"); do
    timed "$W/copy.jpg" "$pw" "$ph" vips copy "$in" "$W/copy.jpg[Q=90]" >>"$W/b_c.txt"
    timed "$W/o1.jpg" "$pw" "$ph" "$BIN/job-worker" render "$W/g1.json" "$in" "$W/o1.jpg" >>"$W/b_g1.txt"
    timed "$W/o2.jpg" "$ow" "$oh" "$BIN/job-worker" render "$W/g2.json" "$in" "$W/o2.jpg" >>"$W/b_g2.txt"
    timed "$W/o3.jpg" "$ow" "$oh" "$BIN/job-worker" render "$W/g3.json" "$in" "$W/o3.jpg" >>"$W/b_g3.txt"
    timed "$W/o4.jpg" "$ow" "$oh" "$BIN/job-worker" render portrait_pro "$in" "$W/o4.jpg" >>"$W/b_pp.txt"
  done
  c=$(cut -d' ' -f2 "$W/b_c.txt" | median)
  printf 'where the CPU goes (%s, medians of %s, CPU seconds and / the CPU of vips copy, %.3f s):\n' "$n" "$REPEAT" "$c"
  for k in g1:"LoadImage -> Export (decode, to float, to 8 bits, encode at full size)" \
    g2:"+ ResizeLongEdge 3000" g3:"+ Warmth, ImageSharpen, Vignette" pp:"+ AutoLevels (the statistics preview): portrait_pro"; do
    v=$(cut -d' ' -f2 "$W/b_${k%%:*}.txt" | median)
    printf '  %-75s %.3f s  %.2fx\n' "${k#*:}" "$v" "$(echo "$v / $c" | bc -l)"
  done
fi
printf 'load average at the end %s\n' "$(cut -d' ' -f1 /proc/loadavg)"
[ "$missed" = 0 ] || fail "a target was missed (figures above)"
