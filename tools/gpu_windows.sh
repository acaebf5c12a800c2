#!/bin/bash
# The GPU window question (docs/RESULTS.md, "GPU: window shapes"; run 2026-11-28, before auto
# meant whole frames on CUDA): one window over the damage (tile_size 0) with window_bucket 0 and
# 256, the whole frame (auto) and 256 px tiles in buckets, alternated twice in one call, on
# half-clean / clean / degraded 1280x720 frames; first tools/gpu_shapes.py (what a window shape
# not run before costs, and where), last one pair with a long warm-up (the shapes a stream
# settles into). Needs .gpu/ (tools/gpu_prepare.sh; carry it).
# Results: $OUT/windows.tgz (bench.json + log per run, shapes/). Local smoke test:
#   DEVICE=cpu FRAMES=2 WARMUP=1 RES=320x240 OUT=/tmp/o bash tools/gpu_windows.sh
set -u
OUT=${OUT:-/tmp/gpu_out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" runs
. tools/gpu_env.sh "$OUT/device.txt"
R=$PWD/runs
echo "== shapes"
timeout 150 $PY tools/gpu_shapes.py $R/win_shapes > $R/win_shapes.log 2>&1
grep -E 'cudnn=|Self' $R/win_shapes.log
# tile_size:window_bucket; -1 (auto) is the whole frame on CUDA, where the bucket changes nothing
for round in 1 2; do
  for config in 0:0 0:256 -1:0 256:256; do
    tile=${config%:*} bucket=${config#*:}
    name=win_t${tile}_b${bucket}_r$round
    timeout 150 $PY -m adaqual_ros.cli.main bench --device $DEVICE --backends adaqual \
      --resolutions ${RES:-1280x720} --frames ${FRAMES:-24} --warmup ${WARMUP:-8} --threads 4 \
      --tile-size $tile --window-bucket $bucket --out $R/$name > $R/$name.log 2>&1
    echo "== tile_size $tile, bucket $bucket, round $round"
    grep -v Loading $R/$name.log | grep -E 'adaqual +(degraded|clean)|speedup'
  done
done
for bucket in 0 256; do
  name=win_b${bucket}_long
  timeout 150 $PY -m adaqual_ros.cli.main bench --device $DEVICE --backends adaqual \
    --resolutions ${RES:-1280x720} --frames ${FRAMES:-24} --warmup ${LONG_WARMUP:-48} --threads 4 \
    --tile-size 0 --window-bucket $bucket --out $R/$name > $R/$name.log 2>&1
  echo "== bucket $bucket, warm-up ${LONG_WARMUP:-48}"
  grep -v Loading $R/$name.log | grep -E 'adaqual +(degraded|clean)|speedup'
done
cp $R/win_shapes.log $R/win_shapes/profile.txt "$OUT/" 2>/dev/null
tar czf "$OUT/windows.tgz" -C $R $(cd $R && ls -d win_*)
