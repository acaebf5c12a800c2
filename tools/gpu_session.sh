#!/bin/bash
# One GPU session (a lent H100/H200, ~7 minutes): fine-tune the shipped small checkpoint with all
# the machine's cores feeding data, then benchmark on CUDA (the result and the untrained paper
# configs, paper_rt and paper, each frame as one window).
#
# Expects (tools/gpu_prepare.sh builds it), in the git-ignored folder .gpu/ (carried to the machine):
#   .gpu/whl/*.whl        diffusers (+ importlib_metadata), absent from the machine's image
#   .gpu/shared/data/...  compact copy of ../shared: clean/ (JPEG q85, <= 800 px), weather_layers/,
#                         video/people.mp4 (bench frames)
# Results go to $OUT as tarballs (the device returns at most 8 files, 2 folders deep).
# TRAIN_EXTRA adds training options, e.g. the estimator trained with the restorer (its weights
# land in pipeline*/estimator/): TRAIN_EXTRA="joint_estimator=true estimator_prob=0.8
# estimator_context=2".
# Local smoke test: DEVICE=cpu TRAIN_MIN=0.3 WORKERS=1 BENCH_FRAMES=1 WARMUP=0 RES=320x240 \
#   PAPER_RES=128x128 PAPER_CONFIGS=tiny OUT=/tmp/o bash tools/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
TRAIN_MIN=${TRAIN_MIN:-5}
WORKERS=${WORKERS:-14}
BENCH_FRAMES=${BENCH_FRAMES:-8}
RES=${RES:-640x480,1280x720}
PAPER_RES=${PAPER_RES:-1280x720}
mkdir -p "$OUT" runs
. tools/gpu_env.sh "$OUT/device.txt"
A="$PY -m adaqual_ros.cli.main"

R=$PWD/runs  # absolute: the bench resolves --model-path from its own working directory
# shellcheck disable=SC2086
$A train --out $R/gpu_small init=adaqual_ros/checkpoints/adaqual_small lr=${LR:-3e-4} \
  crop=192 batch_size=32 time_limit_min=$TRAIN_MIN threads=2 num_workers=$WORKERS \
  val_every=500 checkpoint_every=100000 estimator=learned estimator_prob=0.6 camera_aug=0.3 \
  clean_prob=${CLEAN_PROB:-0.15} ${TRAIN_EXTRA:-} > $R/gpu_small.log 2>&1
tail -n 3 $R/gpu_small/train.log

if [ -z "${SKIP_BENCH:-}" ]; then
B="$A bench --device $DEVICE --backends adaqual --frames $BENCH_FRAMES --warmup ${WARMUP:-3}
  --threads 4 --tile-size 0 --no-ratios"
$B --out $R/bench_small --resolutions $RES --model-path $R/gpu_small/pipeline_final \
  > $R/bench_small.log 2>&1
for c in ${PAPER_CONFIGS:-paper_rt paper}; do  # the two paper-size layouts, side by side
  $B --out $R/bench_$c --resolutions $PAPER_RES --model-config $c --profile > $R/bench_$c.log 2>&1
done
grep -hv Loading $R/bench_*.log | grep -v "^$" | tail -30
fi

tar czf "$OUT/small.tgz" -C $R gpu_small/pipeline gpu_small/pipeline_final \
  gpu_small/train.log gpu_small/train_log.jsonl gpu_small/config.json
tar czf "$OUT/logs.tgz" -C $R gpu_small.log $(cd $R && ls -d bench_* 2>/dev/null)
ls -la "$OUT"
