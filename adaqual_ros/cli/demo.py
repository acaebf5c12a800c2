"""
`adaqual demo`: the end-to-end ROS 2 graph on a short weather stream, with a report.

    adaqual demo --out demo_out                       # assets video + detector when found
    adaqual demo --video clip.mp4 --detector yolov8n.pt --conditions clean,haze,snow

player -> restoration -> YOLO on raw, restored and clean frames -> metrics, every node its own
process (see `adaqual_ros.ros.demo_graph`). Writes OUT/report.md, OUT/report.json and PNG plots;
the node logs go to OUT/logs.
"""
import logging
import os
from pathlib import Path
import platform
import shlex
import signal
import sys
import time

DEFAULT_OUT = 'demo_out'
# Player rates the restoration node keeps up with on a 2-core CPU (measured; see the report).
DEFAULT_RATE = {'adaqual': 1.0, 'classical': 2.0, 'passthrough': 4.0}


def add_arguments(parser):
    from adaqual_ros.demo_stream import DEFAULT_CONDITIONS

    parser.add_argument('--out', default=DEFAULT_OUT,
                        help=f'report folder (default ./{DEFAULT_OUT})')
    parser.add_argument('--video', default=None,
                        help='video to play (default: the assets people.mp4, else sample '
                             'pictures shipped with the installed packages)')
    parser.add_argument('--detector', default=None,
                        help='YOLO model (.pt/.onnx/...); default $ADAQUAL_DETECTOR or '
                             '<assets>/models/yolov8n_int8.onnx')
    parser.add_argument('--assets', default=None, help='assets folder (default $ADAQUAL_ASSETS)')
    parser.add_argument('--frames', type=int, default=8,
                        help='frames in the stream, played once per condition (default 8)')
    parser.add_argument('--conditions', default=','.join(DEFAULT_CONDITIONS),
                        help='comma-separated weather conditions (default %(default)s)')
    parser.add_argument('--severity', type=float, default=0.6,
                        help='mean weather severity 0..1 (default 0.6)')
    parser.add_argument('--dim-haze', type=float, default=0.0,
                        help='probability that the haze is dusk or night fog (dim, blue or '
                             'sodium airlight), 0..1 (default 0: daylight)')
    parser.add_argument('--backend', default=None, choices=('adaqual', 'classical'),
                        help='restoration backend (default adaqual when its checkpoint loads, '
                             'else classical)')
    parser.add_argument('--rate', type=float, default=None,
                        help='player rate in Hz (default: one the backend keeps up with)')
    parser.add_argument('--width', type=int, default=640, help='frame width (default 640)')
    parser.add_argument('--seed', type=int, default=0, help='weather seed')
    parser.add_argument('--no-plots', action='store_true', help='skip the PNG plots')
    parser.add_argument('--set', action='append', default=[], metavar='PARAM=VALUE',
                        dest='restoration_params',
                        help='a restoration-node parameter for this run (repeatable), e.g. '
                             '--set model_path=runs/adaqual_small/pipeline --set steps=1; '
                             'values as `ros2 param set` reads them, checked against the '
                             "node's parameter table (README); the backend is --backend")


def parse_restoration_params(items):
    """
    `['steps=1', 'model_path=DIR']` -> {'steps': 1, 'model_path': '/abs/DIR'}, checked.

    Values are read as YAML scalars (like `ros2 param set`); an integer given for a double
    parameter becomes a float (ROS would refuse it), paths become absolute (the nodes are
    children that may not share the working folder's meaning). Raises ValueError with the reason.
    """
    import yaml

    from adaqual_ros.ros.params import RESTORATION_PARAMS, spec_map

    specs = spec_map(RESTORATION_PARAMS)
    out = {}
    for item in items or ():
        name, sep, text = str(item).partition('=')
        if not sep or not name:
            raise ValueError(f'--set {item!r} is not PARAM=VALUE (e.g. --set steps=1)')
        if name == 'backend':
            raise ValueError('--set backend=...: use --backend')
        spec = specs.get(name)
        if spec is None:
            raise ValueError(f'--set {name}: the restoration node has no such parameter '
                             f'(it has: {", ".join(sorted(specs))})')
        value = yaml.safe_load(text) if text else ''
        if isinstance(spec.default, float) and isinstance(value, int) \
                and not isinstance(value, bool):
            value = float(value)
        if isinstance(spec.default, str) and value is not None and not isinstance(value, str):
            value = text  # e.g. a numeric-looking path or device
        if name.endswith('_path') and value:
            value = str(Path(value).expanduser().resolve())
        reason = spec.validate(value)
        if reason:
            raise ValueError(f'--set {item}: {reason}')
        out[name] = value
    return out


def _adaqual_checkpoint(model_path=''):
    """(usable, reason): whether the AdaQual checkpoint (default: the shipped one) can load."""
    from adaqual_ros.pipelines import default_pipeline_path

    path = Path(model_path or default_pipeline_path())
    if not (path / 'model_index.json').is_file():
        return False, f'no AdaQual checkpoint at {path}'
    return True, str(path)


def _choose_backend(requested, model_path=''):
    """(backend, why AdaQual cannot load or '')."""
    if requested == 'classical':
        return 'classical', ''
    usable, reason = _adaqual_checkpoint(model_path)
    return ('adaqual', '') if usable else ('classical', reason)


def _say(text):
    print(f'[adaqual demo] {text}', flush=True)


def run(args):
    from adaqual_ros import demo_stream
    from adaqual_ros.detection.yolo import NO_DETECTOR_MESSAGE, find_detector

    if args.assets:
        if not Path(args.assets).is_dir():
            print(f'adaqual demo: assets folder {args.assets!r} does not exist', file=sys.stderr)
            return 2
        os.environ['ADAQUAL_ASSETS'] = str(Path(args.assets).resolve())  # children inherit it
    try:
        conditions = demo_stream.parse_conditions(args.conditions)
        if not 0.0 <= args.severity <= 1.0:
            raise ValueError(f'--severity must be in [0, 1], got {args.severity}')
        if not 0.0 <= args.dim_haze <= 1.0:
            raise ValueError(f'--dim-haze must be in [0, 1], got {args.dim_haze}')
        if args.rate is not None and not 0.1 <= args.rate <= 240.0:
            raise ValueError(f'--rate must be in [0.1, 240] Hz, got {args.rate}')
        node_params = parse_restoration_params(args.restoration_params)
        # find_detector logs the same advice we print below: say it once.
        logging.getLogger('adaqual_ros.detection.yolo').setLevel(logging.ERROR)
        detector = find_detector(args.detector)
    except (ValueError, FileNotFoundError) as exc:
        print(f'adaqual demo: {exc}', file=sys.stderr)
        return 2
    try:
        from adaqual_ros.ros import demo_graph
    except ImportError as exc:
        print(f'adaqual demo: the ROS 2 Python packages are not importable ({exc}). Source a '
              'ROS 2 installation or run `make demo`, which installs the ROS 2 wheels.',
              file=sys.stderr)
        return 2
    from adaqual_ros.demo_report import (
        DemoRecorder,
        detection_table,
        restoration_table,
        write_demo_report,
    )

    out = Path(args.out).resolve()
    if detector is None:
        _say('NO DETECTOR: ' + NO_DETECTOR_MESSAGE + '. Detection metrics are skipped; the '
             'report still gives restoration quality (PSNR/SSIM vs the clean frames) and timing.')
    else:
        _say(f'detector: {detector}')
    model_path = node_params.get('model_path', '')
    backend, unusable = _choose_backend(args.backend, model_path)
    if unusable and model_path:
        # Asked for by name: falling back to classical would answer another question.
        print(f'adaqual demo: --set model_path: {unusable} (a folder written by '
              'save_pretrained, e.g. runs/NAME/pipeline)', file=sys.stderr)
        return 2
    note = f'{unusable}: restoring with the classical backend instead' if unusable else ''
    if note:
        _say(note)
    rate = args.rate or DEFAULT_RATE[backend]
    try:
        stream = demo_stream.build_stream(out / 'stream', video=args.video, assets=args.assets,
                                          frames=args.frames, width=args.width)
    except (demo_stream.DemoStreamError, FileNotFoundError) as exc:
        print(f'adaqual demo: {exc}', file=sys.stderr)
        return 2
    if node_params:
        _say('restoration parameters: ' + ', '.join(f'{k}={v}' for k, v in node_params.items()))
    _say(f'stream: {stream.frames} frames {stream.size[1]}x{stream.size[0]} from {stream.source}')
    paced = ' at most, paced to what the graph serves,' if args.rate is None else ''
    _say(f'graph: player {rate:g} Hz{paced} -> restoration ({backend}) -> '
         + ('YOLO raw / restored / clean -> metrics' if detector else 'no detection')
         + f'; conditions {", ".join(conditions)} (severity {args.severity:g})')
    config = demo_graph.GraphConfig(
        out_dir=out, stream_folder=stream.folder, frames=stream.frames, conditions=conditions,
        severity=args.severity, dim_haze=args.dim_haze, rate_hz=rate, backend=backend,
        detector=detector, seed=args.seed, strip_index=stream.frames // 2, pace=args.rate is None,
        extra_restoration_params=node_params)
    recorder = DemoRecorder(strip_index=config.strip_index, detection=detector is not None)
    progress, bar = _progress(recorder, stream.frames, conditions)
    started = time.monotonic()
    code = 0
    graph = {}
    # Ctrl-C and `kill` both end in the cleanup path: every child is stopped, a partial report
    # written (a shell may start a background job with SIGINT ignored: undo that too).
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        demo_graph.run_graph(config, recorder, progress, out=graph)
    except KeyboardInterrupt:
        bar.close()
        _say('interrupted: all nodes stopped; writing a partial report')
        code = 130
    except demo_graph.DemoError as exc:
        bar.close()
        print(f'adaqual demo: {exc}', file=sys.stderr)
        code = 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    bar.close()
    elapsed = time.monotonic() - started
    summary = recorder.summary()
    if not summary['conditions']:
        return code or 1
    meta = {'command': 'adaqual demo ' + ' '.join(shlex.quote(a) for a in sys.argv[2:]),
            'stream': f'{stream.frames} frames {stream.size[1]}x{stream.size[0]} from '
                      f'{stream.source}',
            'conditions': ', '.join(conditions), 'severity': args.severity,
            'dim_haze': args.dim_haze,
            'player_rate': f'{rate:g} Hz' + (' at most, paced to the graph (see graph.'
                                               'player_rate_hz)' if args.rate is None else ''),
            'backend_requested': backend,
            'restoration_params': node_params,
            'detector': str(detector) if detector else 'none found offline',
            'reference': 'detector on the clean frames (clean/image_raw)',
            'wall_time_s': round(elapsed, 1),
            'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}'}
    if note:
        meta['note'] = note
    extra = {'graph': _graph_figures(graph), 'metrics_node': graph.get('metrics_node'),
             'status': 'complete' if code == 0 else 'partial'}
    files = write_demo_report(out, summary, recorder.strip, meta=meta, extra=extra,
                              plots=not args.no_plots)
    print()
    if summary['detection']:
        print('Detection (reference: the detector on the clean frames)')
        print(detection_table(summary))
        print()
    print('Restoration quality vs the clean frame (PSNR dB / SSIM; restore ms = p50 per frame)')
    print(restoration_table(summary))
    print()
    used = summary['backends']
    if used:
        _say('restoration backend used: ' + ', '.join(f'{k} ({v} frames)' for k, v in used.items())
             + ('' if set(used) == {backend} else f' -- NOT {backend} as requested; see '
                f'{out / "logs" / "adaqual_restoration.log"}'))
    _say(f'report: {files["md"]} ({elapsed:.0f} s)')
    return code


def _graph_figures(graph):
    """The restoration node's frame accounting and the children's exit codes."""
    out = {'pass_s': {k: round(v, 1) for k, v in graph.get('pass_s', {}).items()},
           'player_rate_hz': [{'t_s': t, 'rate_hz': r} for t, r in graph.get('rates', [])],
           'exit_codes': graph.get('exit_codes', {}), 'env': graph.get('env', {})}
    for name, figures in graph.get('diagnostics', {}).items():
        keep = {k: v for k, v in figures.items()
                if k in ('frames_in', 'published', 'passed_through', 'dropped', 'errors',
                         'latency_p50_ms', 'latency_p95_ms', 'cache_hit_rate', 'runtime.backend',
                         'runtime.note') or k.startswith(('dropped.', 'passed_through.'))}
        key = 'restoration_node' if 'restoration' in name else name
        out[key] = keep
    return out


def _progress(recorder, frames, conditions):
    from tqdm import tqdm

    bar = tqdm(total=frames * len(conditions), unit='frame', desc='demo', dynamic_ncols=True,
               mininterval=1.0, disable=None)  # disable=None: no bar when not on a terminal

    def update(condition, number, finished=False):
        done = number * frames + (recorder.played(condition) if finished
                                  else recorder.completed(condition))
        done = min(done, bar.total)
        if done > bar.n:
            bar.set_postfix_str(condition, refresh=False)
            bar.update(done - bar.n)
        if finished:
            counts = recorder.summary()
            acc = counts['accounting'].get(condition, {})
            line = (f'{condition}: played {acc.get("played", 0)}, restored '
                    f'{acc.get("restored", 0)}')
            det = counts['detection'].get(condition)
            if det:
                line += (f', recall raw {det["raw"]["recall"]:.2f} -> restored '
                         f'{det["restored"]["recall"]:.2f}')
            iq = counts['restoration'].get(condition, {})
            if iq.get('raw_psnr') is not None and iq.get('restored_psnr') is not None:
                line += f', PSNR {iq["raw_psnr"]:.1f} -> {iq["restored_psnr"]:.1f} dB'
            bar.write(line) if not bar.disable else _say(line)
    return update, bar
