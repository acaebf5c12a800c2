#!/bin/bash
# One GPU session (a lent H100, ~10 minutes): fine-tune the shipped small checkpoint and train
# the 'fast' config side by side, then benchmark on CUDA (small + untrained paper config).
#
# Expects, in the git-ignored folder .gpu/ (carried to the machine):
#   .gpu/whl/*.whl        diffusers (+ importlib_metadata), absent from the machine's image
#   .gpu/shared/data/...  compact copy of ../shared: clean/ (JPEG q85, <= 800 px), weather_layers/,
#                         video/people.mp4 (bench frames)
# Results go to $OUT as tarballs (the device returns at most 8 files, 2 folders deep).
# Local smoke test: DEVICE=cpu TRAIN_MIN=0.3 WORKERS=1 BENCH_FRAMES=1 WARMUP=0 RES=320x240 \
#   PAPER_RES=128x128 OUT=/tmp/o bash tools/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
TRAIN_MIN=${TRAIN_MIN:-5}
WORKERS=${WORKERS:-7}
BENCH_FRAMES=${BENCH_FRAMES:-20}
RES=${RES:-640x480,1280x720,1920x1080}
PAPER_RES=${PAPER_RES:-1280x720}
mkdir -p "$OUT" runs
if [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  PY=python3
else
  PY=${PY:-.venv/bin/python}
fi
export PYTHONUNBUFFERED=1 ADAQUAL_ASSETS=$PWD/.gpu/shared
A="$PY -m adaqual_ros.cli.main"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -c 'import torch, diffusers, transformers, accelerate; print("torch", torch.__version__,
  "diffusers", diffusers.__version__, "transformers", transformers.__version__, "accelerate",
  accelerate.__version__, "cuda", torch.cuda.is_available())'; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

COMMON="crop=192 batch_size=32 time_limit_min=$TRAIN_MIN threads=2 num_workers=$WORKERS
  val_every=500 checkpoint_every=100000 estimator=learned estimator_prob=0.6 camera_aug=0.3"
# shellcheck disable=SC2086
$A train --out runs/gpu_small init=adaqual_ros/checkpoints/adaqual_small lr=4e-4 $COMMON \
  > runs/gpu_small.log 2>&1 &
# shellcheck disable=SC2086
$A train --out runs/gpu_fast model_config=fast lr=1.5e-3 warmup_steps=200 $COMMON \
  > runs/gpu_fast.log 2>&1 &
wait
tail -n 3 runs/gpu_small/train.log runs/gpu_fast/train.log

if [ -z "${SKIP_BENCH:-}" ]; then
B="$A bench --device $DEVICE --backends adaqual --frames $BENCH_FRAMES --warmup ${WARMUP:-5} --threads 4"
$B --out runs/bench_small --resolutions $RES \
  --model-path runs/gpu_small/pipeline_final > runs/bench_small.log 2>&1
$B --out runs/bench_fast --resolutions $RES \
  --model-path runs/gpu_fast/pipeline_final > runs/bench_fast.log 2>&1
$B --out runs/bench_paper --resolutions $PAPER_RES --model-config paper --no-ratios \
  > runs/bench_paper.log 2>&1
grep -hv Loading runs/bench_*.log | grep -v "^$" | tail -40
fi

tar czf "$OUT/small.tgz" -C runs gpu_small/pipeline gpu_small/pipeline_final \
  gpu_small/train.log gpu_small/train_log.jsonl gpu_small/config.json
tar czf "$OUT/fast_final.tgz" -C runs gpu_fast/pipeline_final gpu_fast/train.log \
  gpu_fast/train_log.jsonl gpu_fast/config.json
tar czf "$OUT/fast_best.tgz" -C runs gpu_fast/pipeline
tar czf "$OUT/logs.tgz" -C runs gpu_small.log gpu_fast.log $(cd runs && ls -d bench_* 2>/dev/null)
ls -la "$OUT"
