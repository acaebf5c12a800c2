#!/bin/bash
# GPU profile (a lent H100, ~3 minutes): where the restorer's time goes on CUDA, with the
# paper-size config (untrained, timing only) and the shipped small checkpoint, eager and compiled.
#
# Expects .gpu/whl/*.whl (diffusers + importlib_metadata) and .gpu/shared/data/video/people.mp4
# (tools/gpu_prepare.sh builds both).
# Results: $OUT/profile.tgz (bench.json + profile tables per run).
# Local smoke test: DEVICE=cpu RES=256x256 FRAMES=1 WARMUP=0 OUT=/tmp/o bash tools/gpu_profile.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
RES=${RES:-1280x720}
FRAMES=${FRAMES:-8}
WARMUP=${WARMUP:-3}
mkdir -p "$OUT" runs/prof
. tools/gpu_env.sh runs/prof/device.txt
B="$PY -m adaqual_ros.cli.main bench --device $DEVICE --backends adaqual --frames $FRAMES
  --warmup $WARMUP --threads 4 --no-ratios --resolutions $RES"
run() {  # name, then bench options
  local name=$1; shift
  echo "== $name: $*"
  # shellcheck disable=SC2086
  timeout "${LIMIT:-240}" $B --out "runs/prof/$name" "$@" > "runs/prof/$name.log" 2>&1
  echo "rc=$?"; grep -v Loading "runs/prof/$name.log" | grep -E '^ +[0-9]+x|goal|error|Error' | head -6
}
run paper_whole --model-config paper --tile-size 0 --profile
run paper_t256 --model-config paper --tile-size 256
run small_whole --tile-size 0 --profile
run small_t256 --tile-size 256
LIMIT=200 run paper_compiled --model-config paper --tile-size 0 --compile
tar czf "$OUT/profile.tgz" -C runs prof
ls -la "$OUT"
