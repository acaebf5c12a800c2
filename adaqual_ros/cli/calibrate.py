"""
`adaqual calibrate`: the restoration node's `skip_threshold` for one camera, from a clean
recording of it.

    adaqual calibrate --source clean_clip.mp4 --out DIR [--pass-rate 0.95]
    adaqual calibrate --source run.mcap --topic /front/image_raw --out DIR
    adaqual calibrate --topic /front/image_raw --limit 300 --out DIR     (the live camera)

Reads every frame (`--stride`, `--limit`) the way the node does (same estimator, quality cache
and `quality_context`), then finds the highest `skip_threshold` (at most the current one) at
which `--pass-rate` of the frames pass through untouched. Writes DIR/calibrate.json ("frames",
"current" and "suggested" {"skip_threshold", "pass_share"}, "worst_cell" quantiles, "curve") and
DIR/calibrate_params.yaml, a ROS 2 parameters file for the restoration node; prints a table.
A lower threshold also leaves the mildest weather unrestored: `--weather` re-reads the same
frames under synthetic weather and reports the share of their cells restored at both thresholds.
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

# Pass shares are reported at these thresholds besides the current and suggested ones.
CURVE = (4.0, 3.9, 3.8, 3.7, 3.6, 3.5, 3.25, 3.0)
NODE = 'adaqual_restoration'


def add_arguments(parser):
    parser.add_argument('--source', default=None,
                        help='clean recording: a video, an image folder or an MCAP bag; '
                             'without it, frames come live from --topic (needs rclpy)')
    parser.add_argument('--topic', default=None,
                        help='image topic of a bag (if it has several), or the live topic')
    parser.add_argument('--timeout', type=float, default=10.0,
                        help='live topic: seconds to wait for its publisher and each frame')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--camera', default='',
                        help="a camera of a multi-camera node's `cameras`: the parameters file "
                             'sets camera.NAME.skip_threshold instead of skip_threshold')
    parser.add_argument('--pass-rate', type=float, default=0.95,
                        help='share of the clean frames that should pass through untouched')
    parser.add_argument('--stride', type=int, default=1, help='use every N-th frame')
    parser.add_argument('--limit', type=int, default=600, help='most frames read')
    parser.add_argument('--width', type=int, default=None,
                        help="resize frames to this width (keeping the aspect), e.g. to match "
                             "the camera's published size; default: as recorded")
    parser.add_argument('--weather', default=None,
                        help='comma-separated synthetic conditions (e.g. haze,rain,snow) to '
                             'report what the suggested threshold still restores')
    parser.add_argument('--severity', type=float, default=0.5, help='severity of --weather')
    parser.add_argument('--backend', default='adaqual',
                        help="the node's backend (its estimator is the one calibrated)")
    add_model_options(parser, steps=False)
    add_restorer_options(parser)


def _source_frames(args):
    """(image, stamp in s or None) pairs of the recording, or of the live topic."""
    if args.source is None:
        from adaqual_ros.ros.frame_grabber import grab_frames

        return grab_frames(args.topic, args.limit, args.stride, args.timeout)
    source = Path(args.source).expanduser()
    if source.suffix.lower() == '.mcap' or (source.is_dir() and any(source.glob('*.mcap'))):
        from adaqual_ros.io.bags import read_images

        return ((im.image, im.stamp_ns * 1e-9 if im.stamp_ns else None)
                for im in read_images(source, args.topic) if im.index % args.stride == 0)
    from adaqual_ros.io.video import FrameSource

    return ((f.image, f.time_s) for f in FrameSource(source, stride=args.stride))


def _frames(args):
    """The source's frames, at most --limit, resized to --width."""
    import cv2

    for count, (image, stamp) in enumerate(_source_frames(args)):
        if count >= args.limit:
            return
        if args.width and image.shape[1] != args.width:
            height = max(1, round(image.shape[0] * args.width / image.shape[1]))
            image = cv2.resize(image, (args.width, height), interpolation=cv2.INTER_AREA)
        yield np.ascontiguousarray(image), stamp


def _read_maps(restorer, frames, stream):
    """The QualityMaps the node would decide on (cache included); the network runs only on
    cells below the lowest threshold, which a clean frame does not have."""
    from adaqual_ros.runtime.settings import MIN_SKIP_THRESHOLD

    maps = []
    for image, stamp in frames:
        # the lowest threshold: only the map is wanted, so (nearly) no cell is restored
        result = restorer.restore(image, stream, 'mono' if image.ndim == 2 else 'rgb',
                                  stamp=stamp, overrides={'skip_threshold': MIN_SKIP_THRESHOLD})
        maps.append(result.quality_map)
    return maps


def run(args):
    from adaqual_ros.runtime import RestorationError, Restorer, RestorerSettings
    from adaqual_ros.runtime.calibration import pass_curve, pass_share, pass_threshold, worst_cell

    if not 0.0 < args.pass_rate <= 1.0:
        print(f'adaqual calibrate: --pass-rate must be in (0, 1], got {args.pass_rate}',
              file=sys.stderr)
        return 2
    if args.stride < 1 or args.limit < 1:
        print('adaqual calibrate: --stride and --limit must be >= 1', file=sys.stderr)
        return 2
    if args.source is None and not args.topic:
        print('adaqual calibrate: give --source (a recording) or --topic (a live camera)',
              file=sys.stderr)
        return 2
    from adaqual_ros.ros.params import check_cameras

    problem = check_cameras(args.camera) if args.camera else None
    if problem or ',' in args.camera:
        print(f'adaqual calibrate: --camera: {problem or "one camera name"}', file=sys.stderr)
        return 2
    changes = dict(backend=args.backend, **model_changes(args), **restorer_changes(args))
    start = time.perf_counter()
    try:
        settings = RestorerSettings(**changes)
        restorer = Restorer(settings)
    except (ValueError, RestorationError) as exc:  # bad settings, weights that do not load
        print(f'adaqual calibrate: {exc}', file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        # frames are read as they are used: a long full-HD clip would not fit in memory
        maps = _read_maps(restorer, _frames(args), 'calibration')
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # RuntimeError: TopicError
        print(f'adaqual calibrate: {exc}', file=sys.stderr)
        return 2
    if not maps:
        print(f'adaqual calibrate: no frames in {args.source or args.topic}', file=sys.stderr)
        return 2
    current = settings.skip_threshold
    suggested, share = pass_threshold(maps, settings, args.pass_rate)
    worst = np.array([worst_cell(q) for q in maps])
    record = {
        'source': str(args.source) if args.source else 'live', 'topic': args.topic,
        'frames': len(maps),
        'frame_size': list(maps[0].image_size[::-1]), 'pass_rate': args.pass_rate,
        'backend': restorer.stats()['backend'],
        'current': {'skip_threshold': current,
                    'pass_share': pass_share(maps, current, settings)},
        'suggested': {'skip_threshold': suggested, 'pass_share': share},
        'worst_cell': {'min': float(worst.min()), 'p5': float(np.percentile(worst, 5)),
                       'median': float(np.median(worst)), 'max': float(worst.max())},
        'curve': pass_curve(maps, settings, sorted({*CURVE, current}, reverse=True)),
        'seconds': round(time.perf_counter() - start, 1),
    }
    if args.weather and suggested is not None:
        record['weather'] = _weather(args, restorer, settings, current, suggested)
    restorer.close()
    (out / 'calibrate.json').write_text(json.dumps(record, indent=2))
    if suggested is not None:
        (out / 'calibrate_params.yaml').write_text(
            f'# adaqual calibrate {args.source or args.topic}: {share:.0%} of {len(maps)} clean '
            f'frames pass through\n' + _params_yaml(suggested, args.camera))
    _print(record)
    return 0


def _params_yaml(threshold, camera=''):
    """A ROS 2 parameters file setting the restoration node's (or one camera's) threshold."""
    import yaml

    from adaqual_ros.ros.params import camera_param_name

    name = camera_param_name(camera, 'skip_threshold') if camera else 'skip_threshold'
    values = threshold
    for part in reversed(name.split('.')):  # nested keys: ROS 2 joins them with '.'
        values = {part: values}
    return yaml.safe_dump({f'/**/{NODE}': {'ros__parameters': values}}, sort_keys=False)


def _weather(args, restorer, settings, current, suggested):
    """Share of the cells of the same frames under synthetic weather restored at both
    thresholds (and of the frames the network runs on)."""
    from adaqual_ros.runtime.calibration import pass_share, restored_share
    from adaqual_ros.weather import WeatherStream

    streams = {c.strip(): WeatherStream(c.strip(), seed=0, severity=args.severity)
               for c in args.weather.split(',') if c.strip()}
    maps = {condition: [] for condition in streams}
    # One pass over the source for every condition (a live topic is read once, too).
    for image, stamp in _frames(args):
        for condition, stream in streams.items():
            maps[condition] += _read_maps(restorer, [(stream.apply(image).degraded, stamp)],
                                          f'weather-{condition}')
    rows = {}
    for condition, qmaps in maps.items():
        rows[condition] = {
            'cells_restored_current': restored_share(qmaps, current, settings),
            'cells_restored_suggested': restored_share(qmaps, suggested, settings),
            'frames_run_current': 1.0 - pass_share(qmaps, current, settings),
            'frames_run_suggested': 1.0 - pass_share(qmaps, suggested, settings),
        }
    return rows


def _print(record):
    cur, sug = record['current'], record['suggested']
    w, h = record['frame_size']
    worst = record['worst_cell']
    print(f"{record['frames']} frames ({w}x{h}) of {record['source']}, backend "
          f"{record['backend']}; worst cell per frame: median {worst['median']:.3f}, "
          f"min {worst['min']:.3f}")
    print('skip_threshold  clean frames passing through')
    for row in record['curve']:
        print(f"{row['skip_threshold']:14.2f}  {row['pass_share']:6.1%}")
    if sug['skip_threshold'] is None:
        print(f"no threshold >= 1 lets {record['pass_rate']:.0%} of these frames pass: the "
              'estimator reads this clip as degraded (is it clean?)')
        return
    print(f"current {cur['skip_threshold']:.2f}: {cur['pass_share']:.1%} pass; suggested "
          f"{sug['skip_threshold']:.2f}: {sug['pass_share']:.1%} pass "
          f"(calibrate_params.yaml; --ros-args --params-file it)")
    for condition, row in record.get('weather', {}).items():
        print(f"  {condition}: cells restored {row['cells_restored_current']:.1%} -> "
              f"{row['cells_restored_suggested']:.1%}, frames run "
              f"{row['frames_run_current']:.0%} -> {row['frames_run_suggested']:.0%}")
