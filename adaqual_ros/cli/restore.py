"""
`adaqual restore`: restore a recording offline, as the restoration node would live.

    adaqual restore --source run.mcap --topic /front/image_raw --out run_restored.mcap
    adaqual restore --source run.mcap --out restored.mcap --backend classical --limit 200
    adaqual restore --source dashcam.mp4 --out dashcam_restored.mp4
    adaqual restore --source frames/ --out restored_frames/

A bag comes back as a copy with every message unchanged plus the restored frames on
`/front/restored/image_raw` (the node's topic: the image's header, the encoding it was recorded in;
a compressed topic comes back as a raw Image, as the node does), the camera's camera_info on
`/front/restored/camera_info`, the quality map on `/front/quality_map` (32FC1 grid of scores 1-5)
and each frame's record on `/front/prompts` (JSON: scores, prompts, the shares skipped and
processed, stage timings), as the node publishes them (`--visualization`: its heat picture of the
map on `/front/quality_map/visualization` too): `ros2 bag play` then feeds raw and restored
frames to your own stack side by side. A video comes back as a video (mp4v, same rate), an image
folder as a folder of the same file names, an image as an image; `--records FILE.jsonl` keeps
each frame's record (the prompts JSON) for any source. Same restorer settings as the node
(`--backend`, `--model-path`, `--skip-threshold`, ...); the quality cache ages its maps by the
header stamps (a video's frame times), so the result does not depend on this machine's speed. Needs
no ROS.
"""
import json
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

# the node's optional heat picture of each frame's quality map (`--visualization`)
VISUALIZATION = 'quality_map/visualization'


def add_arguments(parser):
    parser.add_argument('--source', required=True,
                        help='an MCAP bag (a .mcap file, or a rosbag2 folder holding one), a '
                             'video, an image folder or an image')
    parser.add_argument('--topic', default=None,
                        help='bag: the image topic to restore (Image or CompressedImage; may be '
                             'omitted when the bag has one)')
    parser.add_argument('--out', required=True,
                        help='output: a .mcap file for a bag, a video file for a video, a '
                             'folder for a folder, an image file for an image')
    parser.add_argument('--out-topic', default=None,
                        help="topic of the restored frames (default: the node's, "
                             '<camera>/restored/image_raw)')
    parser.add_argument('--limit', type=int, default=None,
                        help='restore only the first N frames (every message is still copied)')
    parser.add_argument('--backend', default='adaqual',
                        help='adaqual | classical | passthrough (default: %(default)s)')
    parser.add_argument('--records', default=None, metavar='PATH',
                        help="also write each restored frame's record (the node's prompts "
                             'JSON: stamp, frame_id (a file name or <video>:<index> outside '
                             'bags), scores, prompts, shares skipped and processed, timings) to '
                             'PATH, one JSON line per frame; any source')
    parser.add_argument('--visualization', action='store_true',
                        help="bag: also write the node's <camera>/quality_map/visualization "
                             '(the frame with its quality map as heat, rgb8, at most 640 px wide)')
    add_model_options(parser)
    add_restorer_options(parser)


def _is_bag(path):
    path = Path(path).expanduser()
    return path.suffix.lower() == '.mcap' or (path.is_dir() and any(path.glob('*.mcap')))


def run(args):
    from adaqual_ros.io.bags import BagError
    from adaqual_ros.runtime import RestorationError, Restorer, RestorerSettings

    source, out = Path(args.source).expanduser(), Path(args.out).expanduser()
    bag = _is_bag(source)
    problem = _check_paths(source, out, bag, args)
    if problem:
        print(f'adaqual restore: {problem}', file=sys.stderr)
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

    def restore(frame, stamp_s):
        start = time.perf_counter()
        result = restorer.restore(frame, 'source', 'mono' if frame.ndim == 2 else 'rgb',
                                  stamp=stamp_s)
        figures['ms'].append((time.perf_counter() - start) * 1000.0)
        figures['skipped'].append(result.skipped_fraction)
        figures['passed'] += result.windows == 0
        return result

    records = None

    def describe(result, stamp_ns, frame_id):
        """The frame's record as JSON, kept in --records too."""
        text = json.dumps(result.describe(stamp_ns, frame_id))
        if records is not None:
            records.write(text + '\n')
        return text

    try:
        if args.records:
            Path(args.records).expanduser().parent.mkdir(parents=True, exist_ok=True)
            records = open(Path(args.records).expanduser(), 'w')
        if bag:
            report = _restore_bag(source, out, restore, describe, args, progress)
        else:
            report = _restore_files(source, out, restore, describe, args, progress)
    except (BagError, OSError, ValueError) as exc:
        print(f'adaqual restore: {exc}', file=sys.stderr)
        return 2
    finally:
        progress.close()
        backend = restorer.stats().get('backend')
        restorer.close()
        if records is not None:
            records.close()
    _print(report, figures, backend, out)
    return 0


def _check_paths(source, out, bag, args):
    """Why the paths or the limit cannot work, or None (``bag``: the source is a bag)."""
    from adaqual_ros.io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    if args.limit is not None and args.limit < 1:
        return '--limit must be >= 1'
    if not source.exists():
        return f'--source {args.source} does not exist'
    for flag, given in (('--topic', args.topic), ('--visualization', args.visualization)):
        if given and not bag:
            return f'{flag} is for a bag source'
    inputs = {source.resolve()}
    if bag:
        from adaqual_ros.io.bags import BagError, resolve_bag_path

        try:
            inputs.add(resolve_bag_path(source).resolve())  # the .mcap in a rosbag2 folder
        except BagError as exc:
            return str(exc)
    if out.resolve() in inputs:
        return '--out must not be the input'
    if args.records and Path(args.records).expanduser().resolve() in {*inputs, out.resolve()}:
        return '--records must be a file of its own, not the input or --out'
    suffix = out.suffix.lower()
    if bag:
        wanted, ok = 'a .mcap file', suffix == '.mcap'
    elif source.is_dir():
        wanted = 'a folder'
        ok = not out.is_file() and suffix not in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES, '.mcap')
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        wanted, ok = f'an image file ({", ".join(IMAGE_SUFFIXES)})', suffix in IMAGE_SUFFIXES
    else:
        wanted, ok = f'a video file ({", ".join(VIDEO_SUFFIXES)})', suffix in VIDEO_SUFFIXES
    return None if ok else f'--out must be {wanted} for this source, got {args.out}'


def _restore_bag(source, out, restore, describe, args, progress):
    from adaqual_ros.io.bags import rewrite_bag
    from adaqual_ros.quality.overlay import quality_overlay

    def process(frame, stamp_ns, frame_id):
        result = restore(frame, stamp_ns * 1e-9 if stamp_ns else None)
        # the node's quality_map topic (the scores grid as 32FC1, the frame's header) and its
        # prompts topic (the frame's JSON record)
        scores = np.ascontiguousarray(result.quality_map.scores, dtype=np.float32)
        extras = {'quality_map': (scores, '32FC1'),
                  'prompts': describe(result, stamp_ns, frame_id)}
        if args.visualization:
            extras[VISUALIZATION] = (quality_overlay(frame, result.quality_map.scores,
                                                     result.quality_map.cell, max_width=640),
                                     'rgb8')
        return result.image, extras

    return rewrite_bag(source, out, process, topic=args.topic, out_topic=args.out_topic,
                       limit=args.limit, on_image=progress.update,
                       extra_topics=('quality_map', 'prompts')
                       + ((VISUALIZATION,) if args.visualization else ()))


def _restore_files(source, out, restore, describe, args, progress):
    """A video, image folder or image, restored frame by frame into the same kind of output."""
    import cv2

    from adaqual_ros.io.video import FrameSource

    frames = FrameSource(source, limit=args.limit)
    total = len(frames)
    report = {'topic': str(source), 'out_topic': str(out), 'images': 0, 'failed': [],
              'copied': 0}
    writer = None
    if frames.kind == 'folder':
        out.mkdir(parents=True, exist_ok=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for frame in frames:
            result = restore(frame.image, frame.time_s)
            if args.records:  # the record is kept only there (a bag carries it on prompts)
                describe(result, round(frame.time_s * 1e9), frame.name)
            bgr = cv2.cvtColor(result.image, cv2.COLOR_RGB2BGR)
            if frames.kind == 'video':
                if writer is None:
                    height, width = bgr.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*'mp4v'),
                                             frames.fps, (width, height))
                    if not writer.isOpened():
                        raise ValueError(f'cannot write the video {out}')
                writer.write(bgr)
            elif not cv2.imwrite(str(out / frame.name if frames.kind == 'folder' else out), bgr):
                raise ValueError(f'cannot write {frame.name} to {out}')
            report['images'] += 1
            progress.update(report['images'], total)
    finally:
        if writer is not None:
            writer.release()
    return report


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
    copied = f", {report['copied']} messages copied" if report['copied'] else ''
    print(f"{report['topic']} -> {report['out_topic']} ({backend}): {images} frames restored"
          f"{copied}, {len(report['failed'])} frames not decodable")
    if images:
        print(f"  passed through whole: {figures['passed']} of {images}; mean share of a frame "
              f"left untouched {np.mean(figures['skipped']):.1%}; restore "
              f"{np.median(figures['ms']):.0f} ms per frame (median)")
    for index, reason in report['failed'][:5]:
        print(f'  frame {index} skipped: {reason}')
    print(f'wrote {out}')
