#!/bin/bash
# GPU speed session (a lent H100/H200, at most ~9 minutes): the paper-size configs at 1280x720,
# fp16, whole-frame windows (the CUDA default): paper_rt (half resolution, aligned widths) and
# paper (full resolution) side by side with CUDA graphs at 2 steps (profiled), then 1 step and
# eager; the shipped small checkpoint with CUDA graphs and eager; the CUDA-only tests; CUDA
# correctness checks (tools/gpu_check.py).
# One machine, one run, side by side, in order of priority.
#
# Expects .gpu/whl/*.whl (diffusers + importlib_metadata) and .gpu/shared/data/video/people.mp4
# (tools/gpu_prepare.sh builds both).
# Results: $OUT/speed.tgz (bench.json, logs, profile tables), re-packed
# after every step so a run cut short still returns what it measured.
# Local smoke test: DEVICE=cpu PAPER=tiny PAPER_RT=tiny RES=256x192 SMALL_RES=256x192 FRAMES=1 WARMUP=1 DEADLINE=900 \
#   OUT=/tmp/o bash tools/gpu_speed.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
PAPER=${PAPER:-paper}
PAPER_RT=${PAPER_RT:-paper_rt}
RES=${RES:-1280x720}
SMALL_RES=${SMALL_RES:-640x480,1280x720}
FRAMES=${FRAMES:-8}
WARMUP=${WARMUP:-3}
S=runs/speed
mkdir -p "$OUT" $S
. tools/gpu_env.sh $S/device.txt
# why a compiled graph ran without CUDA graphs, in the step logs
export TORCH_LOGS=${TORCH_LOGS:-perf_hints}
B="$PY -m adaqual_ros.cli.main bench --device $DEVICE --backends adaqual --frames $FRAMES
  --warmup $WARMUP --threads 4 --no-ratios --tile-size 0"
START=$(date +%s)
DEADLINE=${DEADLINE:-480}  # seconds for all steps; a step gets what is left of it, at most its own limit
left() { echo $((DEADLINE - $(date +%s) + START)); }
pack() { tar czf "$OUT/speed.tgz" -C runs speed; }
limit() {  # a step's limit: its own, cut to what is left; 0 = skip
  local l; l=$(left); [ "$l" -lt 30 ] && { echo 0; return; }
  [ "$1" -lt "$l" ] && echo "$1" || echo "$l"
}
step() {  # name, time limit (s), then bench options
  local name=$1 lim; lim=$(limit "$2"); shift 2
  echo "== $(date +%T) $name (limit ${lim}s): $*"
  [ "$lim" = 0 ] && { echo skipped; return; }
  # shellcheck disable=SC2086
  timeout "$lim" $B --out "$S/$name" "$@" > "$S/$name.log" 2>&1
  echo "rc=$?"
  grep -E '^ +[0-9]+x[0-9]+ |goal|Error|error' "$S/$name.log" | grep -v Loading | head -8
  # graphs compiled without CUDA graphs (0 where every graph replays; TORCH_LOGS=cudagraphs: why)
  $PY -c "import json; print('cudagraph_skips', [r.get('cudagraph_skips') for r in
    json.load(open('$S/$name/bench.json'))['records']])" 2>/dev/null
  pack
}
check() {  # name, time limit (s), command...
  local name=$1 lim; lim=$(limit "$2"); shift 2
  echo "== $(date +%T) $name (limit ${lim}s)"
  [ "$lim" = 0 ] && { echo skipped; return; }
  timeout "$lim" "$@" > "$S/$name.log" 2>&1
  echo "rc=$?"; grep -v Loading "$S/$name.log" | tail -25
  pack
}
step paper_rt_cudagraphs 150 --model-config "$PAPER_RT" --resolutions "$RES" --compile \
  --compile-mode reduce-overhead --profile
step paper_cudagraphs 200 --model-config "$PAPER" --resolutions "$RES" --compile \
  --compile-mode reduce-overhead --profile
step paper_rt_eager 60 --model-config "$PAPER_RT" --resolutions "$RES" --flops
step paper_eager 75 --model-config "$PAPER" --resolutions "$RES" --flops
step small_cudagraphs 120 --resolutions "$SMALL_RES" --compile --compile-mode reduce-overhead
# one sampling step (a node option, `steps:=1`): half the network work per frame
step paper_cudagraphs_steps1 150 --model-config "$PAPER" --resolutions "$RES" --compile \
  --compile-mode reduce-overhead --steps 1
check cuda_tests 60 $PY -m pytest -q -p no:cacheprovider test/unit/test_runtime_memory.py \
  test/unit/test_model.py
step small_eager 60 --resolutions "$SMALL_RES"
check gpu_check 150 $PY tools/gpu_check.py $S/gpu_check.json
echo "== $(date +%T) done"
ls -la "$OUT"
