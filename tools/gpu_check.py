"""
CUDA checks a CPU cannot make (run by tools/gpu_speed.sh on a lent GPU; prints, writes JSON):

1. the region attention with its head size padded to 8 (the CUDA path) gives the math kernel's
   result, which fused kernel then runs, and how long each takes (paper config, level 0 at
   1280x720: 180 cells of 64x64 queries, head size 7);
2. the compiled network (default mode and CUDA graphs) restores the same frames as the eager one
   (shipped small checkpoint, people.mp4 frames with weather, several frames in a row so a graph
   replay that overwrote a live buffer would show).

    python tools/gpu_check.py OUT.json            (DEVICE=cpu: a smoke test of the script)
"""
import json
import os
import sys
import time

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from adaqual_ros.models.blocks import attend

DEVICE = os.environ.get('DEVICE', 'cuda')


def _sync():
    if DEVICE == 'cuda':
        torch.cuda.synchronize()


def _time(fn, reps=20):
    fn()
    _sync()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync()
    return (time.perf_counter() - start) / reps * 1000.0


def check_attention():
    gen = torch.Generator(DEVICE).manual_seed(0)
    dtype = torch.float16 if DEVICE == 'cuda' else torch.float32

    def rand(*shape):
        return torch.randn(*shape, device=DEVICE, dtype=dtype, generator=gen)

    q, k, v = rand(180, 6, 4096, 7), rand(180, 6, 64, 7), rand(180, 6, 64, 7)
    mask = torch.rand(180, 1, 1, 64, device=DEVICE, generator=gen) > 0.3
    mask[..., 0] = True
    with sdpa_kernel(SDPBackend.MATH):
        ref = attend(q, k, v, mask)
        math_ms = _time(lambda: attend(q, k, v, mask))
    out = attend(q, k, v, mask, pad_to=8)
    result = {'max_abs_diff': float((out - ref).abs().max()), 'math_ms': math_ms,
              'padded_ms': _time(lambda: attend(q, k, v, mask, pad_to=8))}
    for name, backend in (('efficient', SDPBackend.EFFICIENT_ATTENTION),
                          ('cudnn', SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                result[f'{name}_ms'] = _time(lambda: attend(q, k, v, mask, pad_to=8))
        except (RuntimeError, NotImplementedError) as exc:
            result[f'{name}_ms'] = f'not applicable: {str(exc).splitlines()[0][:120]}'
    return result


def check_compiled(frames):
    from adaqual_ros.runtime import CacheSettings, Restorer, RestorerSettings

    runs = {}
    for mode in ('eager', 'default', 'reduce-overhead'):
        torch._dynamo.reset()
        # No quality cache: its age limit would expire during a compile and change the maps.
        settings = RestorerSettings(device=DEVICE, tile_size=0, compile=mode != 'eager',
                                    compile_mode='default' if mode == 'eager' else mode,
                                    cache=CacheSettings(enabled=False))
        restorer = Restorer(settings)
        start = time.perf_counter()
        results = [restorer.restore(f, stream_id='cam') for f in frames]
        runs[mode] = {'images': [r.image for r in results],
                      'whole': [r.processed_fraction == 1.0 for r in results],
                      'seconds': time.perf_counter() - start,
                      'compiled': bool(restorer._runtime.backend.compiled)}
        restorer.close()

    def compare(a, b, frames_used):
        out = []
        for i in frames_used:
            d = np.abs(a[i].astype(np.int16) - b[i].astype(np.int16))
            mse = float((d.astype(np.float64) ** 2).mean())
            out.append({'frame': i, 'max_abs_diff': int(d.max()),
                        'psnr': 99.0 if mse == 0 else float(10 * np.log10(255 ** 2 / mse))})
        return out

    every = range(len(frames))
    # A compiled network runs every damaged frame as one whole window; the eager one runs the
    # damaged cells' windows: same inputs only where eager also ran the whole frame.
    same_windows = [i for i in every if runs['eager']['whole'][i]]
    return {
        'cudagraphs_vs_default_compile': compare(runs['default']['images'],
                                                 runs['reduce-overhead']['images'], every),
        'default_compile_vs_eager_whole_frames': compare(runs['eager']['images'],
                                                         runs['default']['images'], same_windows),
        'runs': {m: {k: v for k, v in r.items() if k != 'images'} for m, r in runs.items()},
    }


def main():
    from adaqual_ros.cli.bench import load_source_frames, make_streams

    sources, desc = load_source_frames(6, None)
    streams, _ = make_streams(sources, (640, 480), 'haze_rain', 0.6, 0)
    report = {'device': torch.cuda.get_device_name() if DEVICE == 'cuda' else DEVICE,
              'torch': torch.__version__,
              'frames': desc, 'attention': check_attention()}
    print(json.dumps(report, indent=1), flush=True)
    report['compiled_vs_eager'] = check_compiled(streams['degraded'][:5])
    print(json.dumps(report['compiled_vs_eager'], indent=1))
    with open(sys.argv[1], 'w') as fh:
        json.dump(report, fh, indent=1)


if __name__ == '__main__':
    main()
