"""`adaqual train`: train the AdaQual-Diff denoiser and prompt encoder (EMA, resumable)."""
from pathlib import Path


def add_arguments(parser):
    parser.add_argument('--config', help='YAML file of TrainConfig values')
    parser.add_argument('--out', help='run folder (checkpoints, logs); overrides out_dir')
    parser.add_argument('--save-to', help='also save the EMA pipeline here (save_pretrained) '
                        'when validation PSNR improves and beats the input, and at the end')
    parser.add_argument('--assets', help='assets root (default $ADAQUAL_ASSETS)')
    parser.add_argument('overrides', nargs='*', metavar='key=value',
                        help='TrainConfig overrides, e.g. model_config=small lr=2e-4 '
                        'time_limit_min=45')


def run(args):
    import yaml

    from adaqual_ros.training.train import merge_config, train

    base = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f'training config not found: {path}')
        base = yaml.safe_load(path.read_text()) or {}
        if not isinstance(base, dict):
            raise ValueError(f'{path} must hold a mapping of TrainConfig values')
    if args.out:
        base['out_dir'] = args.out
    if args.save_to:
        base['save_to'] = args.save_to
    if args.assets:
        base['assets'] = args.assets
    summary = train(merge_config(base, args.overrides))
    print(summary)
    return 0
