#!/bin/bash
# Build .gpu/, what the GPU scripts (gpu_session.sh, gpu_speed.sh, gpu_profile.sh) expect on a
# lent machine, from the assets beside this checkout; run here, once, before the device call
# (`carry: [".gpu"]`). The device's image lacks diffusers (and importlib_metadata for it), and
# ../shared does not travel, so:
#   .gpu/whl/         diffusers + importlib_metadata wheels for the device's Python 3.12
#   .gpu/shared/data/ the training photos as JPEG q85 at most 800 px (the trainer rescales crops
#                     by 0.5-1 anyway), the weather layers and people.mp4 (the bench frames);
#                     not the paired sets (eval-restore runs here)
# Everything that travels must stay under 64 MiB: the script prints the total.
#   ADAQUAL_ASSETS=../shared bash tools/gpu_prepare.sh
set -eu
A=${ADAQUAL_ASSETS:-../shared}
PY=${PY:-.venv/bin/python}
[ -d "$A/data/clean" ] || { echo "no assets at $A (set ADAQUAL_ASSETS)" >&2; exit 1; }
rm -rf .gpu && mkdir -p .gpu/whl .gpu/shared/data/video
DIFFUSERS=$($PY -c 'import diffusers; print(diffusers.__version__)')
# importlib_metadata 8.x needs only zipp, which the device has (newer ones add lazy-importer).
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .gpu/whl "diffusers==$DIFFUSERS" "importlib_metadata==8.7.0"
$PY - "$A" <<'EOF'
import sys
from pathlib import Path

import cv2

src, dst = Path(sys.argv[1]) / 'data' / 'clean', Path('.gpu/shared/data/clean')
count = 0
for path in sorted(src.rglob('*')):
    if path.suffix.lower() not in ('.jpg', '.jpeg', '.png', '.bmp'):
        continue
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    scale = min(1.0, 800 / max(image.shape[:2]))
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    # same relative path and stem (the trainer's exclude list names stems), JPEG payload
    out = dst / path.relative_to(src).with_suffix('.jpg')
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    count += 1
print(f'{count} clean images')
EOF
cp -r "$A/data/weather_layers" .gpu/shared/data/
cp "$A/data/video/people.mp4" .gpu/shared/data/video/
du -sh .gpu
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
echo "travels: $(( ($(du -sb .gpu | cut -f1) + tracked) / 1048576 )) MiB of 64 (.gpu + tracked files)"
