"""
`adaqual pipeline`: the ROS 2 graph of config/pipeline.yaml without `ros2 launch`.

    adaqual pipeline --params config/pipeline.yaml
    adaqual pipeline --params config/pipeline.yaml --namespace /front \\
        --set restoration.backend=classical --set detect_raw.conf=0.4
    adaqual pipeline --params config/pipeline.yaml --source clip.mp4   # + player, clean reference
    adaqual pipeline --params config/pipeline.yaml --dry-run            # print the commands

Each node runs as its own process (`python -m adaqual_ros.ros.<node> --ros-args ...`), like
`ros2 launch adaqual_ros adaqual_pipeline.launch.py` starts them; Ctrl-C stops them all.
"""
from pathlib import Path
import sys


def _default_graph():
    """config/pipeline.yaml of a source checkout, else of the installed share folder."""
    here = Path(__file__).resolve().parents[2] / 'config' / 'pipeline.yaml'
    if here.is_file():
        return here
    share = Path(sys.prefix) / 'share' / 'adaqual_ros' / 'config' / 'pipeline.yaml'
    return share


def add_arguments(parser):
    parser.add_argument('--params', default=None, metavar='GRAPH_YAML',
                        help='graph file (default: config/pipeline.yaml of the package)')
    parser.add_argument('--namespace', default=None,
                        help="namespace of the graph (default: the file's)")
    parser.add_argument('--params-file', default=None, dest='params_file',
                        help="ROS params YAML for every node (default: the graph file's)")
    parser.add_argument('--set', action='append', default=[], metavar='NODE.PARAM=VALUE',
                        help='set a node parameter, e.g. restoration.backend=classical '
                             '(repeatable)')
    parser.add_argument('--enable', action='append', default=[], metavar='NODE',
                        help='start a node the file disables (repeatable)')
    parser.add_argument('--source', default=None,
                        help='play this video, image folder or MCAP bag: enables the player and '
                             'the clean-frame detector (the metrics reference)')
    parser.add_argument('--detector', default=None,
                        help='YOLO model for every detection node (default: their `model` '
                             'parameter, $ADAQUAL_DETECTOR or the assets detector)')
    parser.add_argument('--backend', default=None,
                        help='restoration backend: adaqual | classical | passthrough (default: '
                             'the params file)')
    parser.add_argument('--device', default=None,
                        help='torch device of the restoration and detection nodes, e.g. cpu, '
                             'cuda (default: the params file)')
    parser.add_argument('--report-dir', default=None, dest='report_dir',
                        help="the metrics node's report folder (default: the params file)")
    parser.add_argument('--image', default=None,
                        help='camera image topic (absolute, or relative to the namespace) '
                             'instead of image_raw')
    parser.add_argument('--log-dir', default=None, help='one log file per node there '
                        '(default: this terminal)')
    parser.add_argument('--log-level', default=None,
                        choices=('debug', 'info', 'warn', 'error', 'fatal'))
    parser.add_argument('--duration', type=float, default=None,
                        help='stop after this many seconds (default: until Ctrl-C)')
    parser.add_argument('--ready-timeout', type=float, default=180.0,
                        help='seconds to wait for every node to appear (default 180)')
    parser.add_argument('--dry-run', action='store_true',
                        help='check the graph and print the node commands, start nothing')


def build(args):
    """The `Graph` the arguments describe (raises GraphError)."""
    from adaqual_ros.ros.pipeline_graph import build_graph, parse_overrides

    return build_graph(Path(args.params) if args.params else _default_graph(),
                       namespace=args.namespace, params_file=args.params_file,
                       overrides=parse_overrides(args.set), enable=args.enable,
                       source=args.source, image=args.image, detector=args.detector,
                       backend=args.backend, device=args.device, report_dir=args.report_dir)


def run(args):
    from adaqual_ros.ros.pipeline_graph import GraphError, check_graph, describe, run_graph

    try:
        graph = build(args)
    except GraphError as exc:
        print(f'adaqual pipeline: {exc}', file=sys.stderr)
        return 2
    problems = check_graph(graph)
    if problems:
        print('adaqual pipeline: the graph has problems:', file=sys.stderr)
        for problem in problems:
            print(f'  - {problem}', file=sys.stderr)
        return 2
    if args.dry_run:
        print('\n'.join(describe(graph)))
        return 0
    return run_graph(graph, log_dir=args.log_dir, duration=args.duration,
                     ready_timeout=args.ready_timeout, log_level=args.log_level,
                     say=lambda line: print(f'[adaqual pipeline] {line}', flush=True))
