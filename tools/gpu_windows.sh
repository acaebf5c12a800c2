#!/bin/bash
# The GPU window question (docs/RESULTS.md, "GPU: the next session's plan", step 1): adaptive
# processing with window_bucket 0 (the default) and 256, alternated twice in one call, on
# half-clean / clean / degraded 1280x720 frames. Needs .gpu/ (tools/gpu_prepare.sh; carry it).
# Results: $OUT/windows.tgz (bench.json + log per run). Local smoke test:
#   DEVICE=cpu FRAMES=2 WARMUP=1 RES=320x240 OUT=/tmp/o bash tools/gpu_windows.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" runs
. tools/gpu_env.sh "$OUT/device.txt"
R=$PWD/runs
for round in 1 2; do
  for bucket in 0 256; do
    name=win_b${bucket}_r$round
    timeout 150 $PY -m adaqual_ros.cli.main bench --device $DEVICE --backends adaqual \
      --resolutions ${RES:-1280x720} --frames ${FRAMES:-24} --warmup ${WARMUP:-8} --threads 4 \
      --window-bucket $bucket --out $R/$name > $R/$name.log 2>&1
    echo "== bucket $bucket, round $round"
    grep -v Loading $R/$name.log | grep -E 'adaqual +(degraded|clean)|speedup'
  done
done
tar czf "$OUT/windows.tgz" -C $R $(cd $R && ls -d win_b*)
