"""`adaqual train-quality`: train the learned quality estimator on the weather synthesis."""
from dataclasses import fields
import json

from adaqual_ros.assets import assets_root


def add_arguments(parser):
    from adaqual_ros.quality.training import TrainConfig

    defaults = TrainConfig()
    parser.add_argument('--assets', default=None,
                        help='assets root (default: $ADAQUAL_ASSETS)')
    parser.add_argument('--out', default=defaults.out,
                        help='output folder (save_pretrained layout)')
    for f in fields(TrainConfig):
        if f.name in ('out', 'assets'):
            continue
        parser.add_argument('--' + f.name.replace('_', '-'), type=type(f.default),
                            default=f.default, help=f'(default: {f.default})')
    parser.add_argument('--fit-classical', action='store_true',
                        help='instead of training, fit and print the classical calibration')


def run(args):
    from adaqual_ros.quality.training import TrainConfig, fit_classical_calibration, train_learned

    root = assets_root(args.assets)
    if root is None:
        print('adaqual train-quality: no assets folder; set ADAQUAL_ASSETS or pass --assets')
        return 2
    if args.fit_classical:
        print(json.dumps(fit_classical_calibration(str(root), seed=args.seed), indent=1))
        return 0
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    values['assets'] = str(root)
    train_learned(TrainConfig(**values), log=lambda msg: print(msg, flush=True))
    return 0
