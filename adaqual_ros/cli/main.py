"""
`adaqual` command line.

Each subcommand lives in its own module under adaqual_ros/cli/ exposing
``add_arguments(parser)`` and ``run(args) -> int``; modules load lazily so `adaqual synth` never
imports ultralytics or rclpy.
"""
import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    'synth': ('adaqual_ros.cli.synth', 'apply synthetic weather to an image, folder or video'),
    'train-quality': ('adaqual_ros.cli.train_quality', 'train the learned quality estimator'),
    'eval-quality': ('adaqual_ros.cli.eval_quality', 'evaluate quality estimators and the cache'),
    'train': ('adaqual_ros.cli.train', 'train the AdaQual-Diff restoration model'),
    'eval-restore': ('adaqual_ros.cli.eval_restore', 'PSNR/SSIM of restorers and ablations'),
    'bench': ('adaqual_ros.cli.bench', 'speed and memory benchmark of the restorer runtime'),
    'evaluate': ('adaqual_ros.cli.evaluate', 'before/after detection evaluation (no ROS)'),
    'calibrate': ('adaqual_ros.cli.calibrate',
                  "a camera's skip_threshold from a clean recording of it"),
    'demo': ('adaqual_ros.cli.demo', 'end-to-end ROS 2 demo with a detection report'),
    'restore': ('adaqual_ros.cli.restore',
                'restore a recording offline (MCAP bag, video, image folder) as the node would'),
    'soak': ('adaqual_ros.cli.soak', 'long run of the restoration node with accounting'),
    'pipeline': ('adaqual_ros.cli.pipeline',
                 'start the ROS 2 graph (restoration, YOLO, metrics) without launch'),
}


def _load(name):
    module_name, _ = SUBCOMMANDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def build_parser(command=None):
    """Build the parser; only the chosen subcommand's module is imported (torch is slow)."""
    parser = argparse.ArgumentParser(prog='adaqual', description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest='command', required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = _load(name)
            if module is not None:
                module.add_arguments(sp)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(command).parse_args(argv)
    module = _load(args.command)
    if module is None:
        print(f'adaqual {args.command}: not implemented yet', file=sys.stderr)
        return 2
    return int(module.run(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
