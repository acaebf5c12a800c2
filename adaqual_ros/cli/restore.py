"""
`adaqual restore`: restore a recording offline, as the restoration node would live.

    adaqual restore --bag run.mcap --topic /front/image_raw --out run_restored.mcap
    adaqual restore --bag run.mcap --out restored.mcap --backend classical --limit 200

Writes a copy of the bag with every message unchanged plus the restored frames on
`/front/restored/image_raw` (the node's topic: the image's header, the encoding it was recorded
in; a compressed topic comes back as a raw Image, as the node does) and the camera's
camera_info on `/front/restored/camera_info`. `ros2 bag play` then feeds raw and restored
frames to your own stack side by side. Same restorer settings as the node (`--backend`,
`--model-path`, `--skip-threshold`, ...); the quality cache ages its maps by the header
stamps, so the result does not depend on this machine's speed. Needs no ROS.
"""
from pathlib import Path
import sys
import time

import numpy as np

from adaqual_ros.cli.restorer_options import (
    add_model_options,
    add_restorer_options,
    model_changes,
    restorer_changes,
)


def add_arguments(parser):
    parser.add_argument('--bag', required=True,
                        help='MCAP bag (a .mcap file, or a rosbag2 folder holding one)')
    parser.add_argument('--topic', default=None,
                        help='image topic to restore (Image or CompressedImage; may be omitted '
                             'when the bag has one)')
    parser.add_argument('--out', required=True, help='output .mcap file')
    parser.add_argument('--out-topic', default=None,
                        help="topic of the restored frames (default: the node's, "
                             '<camera>/restored/image_raw)')
    parser.add_argument('--limit', type=int, default=None,
                        help='restore only the first N frames (every message is still copied)')
    parser.add_argument('--backend', default='adaqual',
                        help='adaqual | classical | passthrough (default: %(default)s)')
    add_model_options(parser)
    add_restorer_options(parser)


def run(args):
    from adaqual_ros.io.bags import BagError, rewrite_bag
    from adaqual_ros.runtime import RestorationError, Restorer, RestorerSettings

    out = Path(args.out)
    if out.suffix.lower() != '.mcap':
        print(f'adaqual restore: --out must name a .mcap file, got {args.out}', file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 1:
        print('adaqual restore: --limit must be >= 1', file=sys.stderr)
        return 2
    if out.resolve() == Path(args.bag).expanduser().resolve():
        print('adaqual restore: --out must not be the input bag', file=sys.stderr)
        return 2
    try:
        settings = RestorerSettings(backend=args.backend, **model_changes(args),
                                    **restorer_changes(args))
        restorer = Restorer(settings)
    except (ValueError, RestorationError) as exc:  # bad settings, weights that do not load
        print(f'adaqual restore: {exc}', file=sys.stderr)
        return 2
    figures = {'ms': [], 'skipped': [], 'passed': 0}
    progress = _Progress()

    def restore(frame, stamp_ns):
        start = time.perf_counter()
        result = restorer.restore(frame, 'bag', 'mono' if frame.ndim == 2 else 'rgb',
                                  stamp=stamp_ns * 1e-9 if stamp_ns else None)
        figures['ms'].append((time.perf_counter() - start) * 1000.0)
        figures['skipped'].append(result.skipped_fraction)
        figures['passed'] += result.windows == 0
        return result.image

    try:
        report = rewrite_bag(args.bag, out, restore, topic=args.topic, out_topic=args.out_topic,
                             limit=args.limit, on_image=progress.update)
    except (BagError, FileNotFoundError) as exc:
        print(f'adaqual restore: {exc}', file=sys.stderr)
        return 2
    finally:
        progress.close()
        backend = restorer.stats().get('backend')
        restorer.close()
    _print(report, figures, backend, out)
    return 0


class _Progress:
    """A tqdm bar over the frames, made on the first one (the total comes from the bag)."""

    def __init__(self):
        self._bar = None

    def update(self, index, total):
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit='frame', desc='restore', file=sys.stderr)
        self._bar.update(1)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def _print(report, figures, backend, out):
    images = report['images']
    print(f"{report['topic']} -> {report['out_topic']} ({backend}): {images} frames restored, "
          f"{report['copied']} messages copied, {len(report['failed'])} frames not decodable")
    if images:
        print(f"  passed through whole: {figures['passed']} of {images}; mean share of a frame "
              f"left untouched {np.mean(figures['skipped']):.1%}; restore "
              f"{np.median(figures['ms']):.0f} ms per frame (median)")
    for index, reason in report['failed'][:5]:
        print(f'  frame {index} skipped: {reason}')
    print(f'wrote {out}')
