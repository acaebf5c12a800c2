"""
`adaqual synth`: apply a named weather condition to an image, a folder or a video.

Examples::

    adaqual synth photo.jpg -c low_haze_rain --severity 0.6 -o hazy.png
    adaqual synth clean_dir/ -c snow -o snowy_dir/ --save-gt
    adaqual synth drive.mp4 -c rain -o rainy.mp4 --max-frames 100
    adaqual synth --grid sheet.png photo.jpg          # contact sheet of all twelve conditions
    adaqual synth bsds500/val --heldout heldout/ --n 20 --seed 0   # fixed evaluation set
"""
from pathlib import Path
import sys

import cv2
import numpy as np

from adaqual_ros.io.video import IMAGE_SUFFIXES, FrameSource, list_images, read_image
from adaqual_ros.weather import CONDITIONS, WeatherStream, load_layers, synthesize


def add_arguments(parser):
    parser.add_argument('input', help='image file, image folder or video file')
    parser.add_argument('-c', '--condition', choices=CONDITIONS,
                        help='weather condition (required unless --grid)')
    parser.add_argument('--severity', type=float, default=None,
                        help='mean severity in [0, 1] (default: random per type)')
    parser.add_argument('--variation', type=float, default=None,
                        help='spatial variation of severity in [0, 1] (default: random)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    parser.add_argument('--dim-haze', type=float, default=0.0,
                        help='share of haze lit as at dusk or at night (dim, blue or sodium '
                             'airlight), 0-1 (default 0: daylight haze)')
    parser.add_argument('--cell', type=int, default=64, help='quality grid cell in pixels')
    parser.add_argument('-o', '--output', default=None,
                        help='output file/folder (default: <input stem>_<condition> next to '
                             'the current folder)')
    parser.add_argument('--grid', metavar='OUT.png', default=None,
                        help='write a contact sheet of all twelve conditions for one image')
    parser.add_argument('--tile-width', type=int, default=320,
                        help='contact sheet tile width in pixels (default 320)')
    parser.add_argument('--layers', default=None,
                        help='real rain/snow masks: the assets root or its '
                             'data/weather_layers folder')
    parser.add_argument('--save-gt', action='store_true',
                        help='also write <output>.npz with the quality grid and type damages')
    parser.add_argument('--max-frames', type=int, default=None, help='video: frames to process')
    parser.add_argument('--heldout', metavar='DIR', default=None,
                        help='write the held-out set (--n images of the input folder x all '
                             'twelve conditions, PNG + manifest.json) to DIR')
    parser.add_argument('--n', type=int, default=20, help='held-out set: number of images')
    parser.add_argument('--overwrite', action='store_true',
                        help='held-out set: allow a non-empty DIR')


def _bgr(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), _bgr(rgb)):
        raise OSError(f'cannot write {path}')


def _save_gt(path, sample):
    np.savez_compressed(path.with_suffix('.npz'), quality=sample.quality, types=sample.types,
                        condition=sample.condition)


def _label(tile, text):
    # Outlined text stays readable on dark (low light) and bright (haze, snow) tiles.
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, thickness,
                    cv2.LINE_AA)


def contact_sheet(image, seed=0, severity=None, tile_width=320, layers=None, variation=None,
                  columns=4, dim_haze=0.0):
    """
    All twelve conditions of one RGB image as one labelled RGB sheet (3 rows x 4 columns).

    Each tile is labelled with its condition and the mean ground-truth quality.
    """
    if tile_width < 32:
        raise ValueError(f'tile width must be at least 32 pixels, got {tile_width}')
    h, w = image.shape[:2]
    size = (tile_width, max(1, round(h * tile_width / w)))
    tiles = []
    for condition in CONDITIONS:
        sample = synthesize(image, condition, seed, severity=severity, layers=layers,
                            variation=variation, dim_haze=dim_haze)
        tile = cv2.resize(sample.degraded, size, interpolation=cv2.INTER_AREA)
        tile = np.ascontiguousarray(tile)
        _label(tile, f'{condition}  q={sample.quality.mean():.2f}')
        tiles.append(tile)
    rows = [np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    return np.vstack(rows)


def _default_output(path, condition, is_dir, is_video):
    stem = path.name if is_dir else path.stem
    if is_dir:
        return Path(f'{stem}_{condition}')
    return Path(f'{stem}_{condition}' + ('.mp4' if is_video else '.png'))


def run(args):
    try:
        return _run(args)
    except (ValueError, OSError) as exc:
        # CLI boundary: bad input (unreadable file, non-empty output, bad value) -> message.
        print(f'adaqual synth: {exc}', file=sys.stderr)
        return 2


def _run(args):
    path = Path(args.input).expanduser()
    if not path.exists():
        print(f'adaqual synth: {path} does not exist', file=sys.stderr)
        return 2
    if args.severity is not None and not 0.0 <= args.severity <= 1.0:
        print(f'adaqual synth: --severity must be in [0, 1], got {args.severity}',
              file=sys.stderr)
        return 2
    if not 0.0 <= args.dim_haze <= 1.0:
        print(f'adaqual synth: --dim-haze must be in [0, 1], got {args.dim_haze}',
              file=sys.stderr)
        return 2
    if args.dim_haze and args.heldout:
        # The held-out set is the fixed evaluation set: its haze stays daylight haze.
        print('adaqual synth: --dim-haze does not apply to --heldout', file=sys.stderr)
        return 2
    layers = None
    if args.layers:
        layers = load_layers(args.layers)
        if layers is None:
            print(f'adaqual synth: no rain/snow masks under {args.layers}', file=sys.stderr)
            return 2
    is_dir = path.is_dir()
    is_video = path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES
    if args.heldout:
        if not is_dir:
            print('adaqual synth: --heldout needs an image folder as input', file=sys.stderr)
            return 2
        # Imported here: torch (datasets) is not needed for the other modes.
        from adaqual_ros.training.datasets import build_heldout_set
        manifest = build_heldout_set(path, args.heldout, args.n, args.seed,
                                     severity=args.severity, cell=args.cell, layers=layers,
                                     overwrite=args.overwrite)
        print(f'wrote {len(manifest["items"])} frames and manifest.json to {args.heldout}')
        return 0
    if args.grid:
        if is_dir:
            image = read_image(list_images(path)[0])
        elif is_video:
            image = next(iter(FrameSource(path, limit=1))).image
        else:
            image = read_image(path)
        sheet = contact_sheet(image, args.seed, args.severity, args.tile_width, layers,
                              args.variation, dim_haze=args.dim_haze)
        _write(Path(args.grid).expanduser(), sheet)
        print(f'wrote {args.grid} ({sheet.shape[1]}x{sheet.shape[0]}, 12 conditions)')
        return 0
    if args.condition is None:
        print('adaqual synth: --condition is required (or use --grid)', file=sys.stderr)
        return 2
    out = Path(args.output).expanduser() if args.output else _default_output(
        path, args.condition, is_dir, is_video)
    options = {'severity': args.severity, 'cell': args.cell, 'layers': layers,
               'variation': args.variation, 'dim_haze': args.dim_haze}
    if is_dir:
        files = list_images(path)
        for i, file in enumerate(files):
            # One seed per file position keeps a folder run reproducible file by file.
            sample = synthesize(read_image(file), args.condition, [args.seed, i], **options)
            target = out / (file.stem + '.png')
            _write(target, sample.degraded)
            if args.save_gt:
                _save_gt(target, sample)
        print(f'wrote {len(files)} images to {out}')
        return 0
    if is_video:
        source = FrameSource(path, limit=args.max_frames)
        stream = WeatherStream(args.condition, args.seed, ground_truth=False, **options)
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = None
        count = 0
        try:
            for frame in source:
                sample = stream.apply(frame.image)
                if writer is None:
                    h, w = sample.degraded.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*'mp4v'),
                                             source.fps, (w, h))
                    if not writer.isOpened():
                        raise OSError(f'cannot open video writer for {out}')
                writer.write(_bgr(sample.degraded))
                count += 1
        finally:
            if writer is not None:
                writer.release()
        print(f'wrote {count} frames to {out}')
        return 0
    sample = synthesize(read_image(path), args.condition, args.seed, **options)
    _write(out, sample.degraded)
    if args.save_gt:
        _save_gt(out, sample)
    print(f'wrote {out} (mean quality {sample.quality.mean():.2f})')
    return 0
