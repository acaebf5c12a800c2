"""
What a window shape costs a GPU the first time it runs, and where (docs/RESULTS.md, "GPU: window
shapes": 0.8-1.1 s on an H200, nearly all of it cuDNN's per-shape set-up): the shipped small
pipeline (fp16, channels_last, eager) on random frames of several window shapes, each shape run
three times in a row, then

1. the same with cuDNN disabled (no per-shape set-up of its own),
2. torch.profiler over the first call of a shape not run before: the ops that take the time.

    python tools/gpu_shapes.py OUT_DIR            (DEVICE=cpu: a smoke test of the script)

Writes OUT_DIR/shapes.json and OUT_DIR/profile.txt; prints a table.
"""
import json
import os
from pathlib import Path
import sys
import time

import torch

from adaqual_ros import pipelines

DEVICE = os.environ.get('DEVICE', 'cuda')
SHAPES = [(256, 256), (288, 352), (416, 640), (512, 768), (720, 1280), (352, 288)]
NO_CUDNN = [(320, 320), (448, 704)]
PROFILED = (384, 448)


def _sync():
    if DEVICE == 'cuda':
        torch.cuda.synchronize()


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if DEVICE == 'cuda' else torch.float32
    pipe = pipelines.AdaQualPipeline.from_pretrained(str(pipelines.default_pipeline_path()))
    pipe = pipe.to(DEVICE, dtype)
    pipe.unet.to(memory_format=torch.channels_last).eval()
    pipe.text_encoder.eval()
    gen = torch.Generator(DEVICE).manual_seed(0)

    def call(h, w):
        image = torch.rand(1, 3, h, w, device=DEVICE, generator=gen)
        # one fixed map per shape (estimated once, outside the timing): the estimator's own
        # per-shape cost is not the question here
        key = (h, w)
        if key not in maps:
            maps[key] = pipe.estimate_quality(image)
        _sync()
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(image.to(dtype), quality_maps=maps[key], generator=gen, num_inference_steps=2)
        _sync()
        return (time.perf_counter() - start) * 1000.0

    maps = {}
    call(256, 256)  # the process's first call (CUDA context, kernels loaded) is not a shape cost
    rows = []
    for shapes, cudnn in ((SHAPES, True), (NO_CUDNN, False)):
        torch.backends.cudnn.enabled = cudnn
        for h, w in shapes:
            rows.append({'shape': [h, w], 'cudnn': cudnn,
                         'ms': [round(call(h, w), 1) for _ in range(3)]})
    torch.backends.cudnn.enabled = True
    for row in rows:
        print(f"{row['shape'][0]:5d}x{row['shape'][1]:<5d} cudnn={row['cudnn']!s:5} "
              + ' '.join(f'{ms:8.1f}' for ms in row['ms']), flush=True)
    image = torch.rand(1, 3, *PROFILED, device=DEVICE, generator=gen)
    maps[PROFILED] = pipe.estimate_quality(image)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if DEVICE == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof, torch.inference_mode():
        pipe(image.to(dtype), quality_maps=maps[PROFILED], generator=gen, num_inference_steps=2)
        _sync()
    table = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=30)
    (out / 'profile.txt').write_text(table)
    print(table[:6000])
    record = {'device': torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu',
              'torch': torch.__version__,
              'cudnn': torch.backends.cudnn.version() if DEVICE == 'cuda' else None,
              'rows': rows}
    (out / 'shapes.json').write_text(json.dumps(record, indent=1))


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'runs/gpu_shapes')
