#!/bin/bash
# GPU check of the CUDA default as a user gets it (a lent H100/H200, ~7 minutes): auto tiles,
# i.e. one whole-frame window whenever any cell is degraded (settings.whole_frames_for), with the
# shipped small checkpoint. Steps, in order of priority, each cut to what is left of DEADLINE:
#   cuda_tests  the CUDA-only tests (whole-frame planning, out-of-memory recovery, model)
#   bench       `adaqual bench` with its ratios on CUDA, default tiles, the model only
#   ab_*        1280x720, default tiles vs `--tile-size 0` (one window over the damage only),
#               alternated twice, side by side in one session
# Expects .gpu/ (tools/gpu_prepare.sh). Results: $OUT/default.tgz, re-packed after every step.
# Local smoke test: DEVICE=cpu RES=320x240 AB_RES=320x240 FRAMES=2 WARMUP=1 OUT=/tmp/o \
#   bash tools/gpu_default.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
RES=${RES:-640x480,1280x720,1920x1080}
AB_RES=${AB_RES:-1280x720}
FRAMES=${FRAMES:-24}
WARMUP=${WARMUP:-8}
S=runs/default
mkdir -p "$OUT" $S
. tools/gpu_env.sh $S/device.txt
B="$PY -m adaqual_ros.cli.main bench --device $DEVICE --frames $FRAMES --warmup $WARMUP --threads 4"
START=$(date +%s)
DEADLINE=${DEADLINE:-400}
left() { echo $((DEADLINE - $(date +%s) + START)); }
pack() { tar czf "$OUT/default.tgz" -C runs default; }
run() {  # name, own limit (s), command...
  local name=$1 lim l; l=$(left); lim=$2; shift 2
  [ "$l" -lt "$lim" ] && lim=$l
  echo "== $(date +%T) $name (limit ${lim}s)"
  [ "$lim" -lt 20 ] && { echo skipped; return; }
  timeout "$lim" "$@" > "$S/$name.log" 2>&1
  echo "rc=$?"; grep -v Loading "$S/$name.log" | grep -v '^$' | tail -22
  pack
}
run cuda_tests 120 $PY -m pytest -q -p no:cacheprovider test/unit/test_runtime_memory.py \
  test/unit/test_model.py test/unit/test_runtime.py -k "cuda or memory or model"
# adaqual only: the classical backend runs on the host CPU, and with it the 2026-11-28 run
# spent its 200 s before the ratio passes
run bench 200 $B --out $S/bench --backends adaqual --resolutions "$RES"
for i in 1 2; do
  run ab_auto$i 60 $B --out $S/ab_auto$i --backends adaqual --resolutions "$AB_RES" --no-ratios
  run ab_tile0_$i 60 $B --out $S/ab_tile0_$i --backends adaqual --resolutions "$AB_RES" \
    --no-ratios --tile-size 0
done
echo "== $(date +%T) done"
ls -la "$OUT"
