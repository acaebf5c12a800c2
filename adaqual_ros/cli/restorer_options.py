"""
The restoration node's settings as command-line flags, for the commands that run the runtime's
Restorer (`bench`, `evaluate`, `calibrate`): one definition of each flag, and unset means the
runtime's default. `add_model_options` holds what loads the restorer (model, estimator, device,
threads, steps); `add_restorer_options` the per-frame knobs. (`eval-restore` scores the
checkpoint on still images and has its own `--skip-*` semantics.)
"""


def parse_bool(text):
    """argparse type of the true/false flags (`--fog-contrast true`)."""
    value = str(text).strip().lower()
    if value in ('1', 'true', 'yes', 'on'):
        return True
    if value in ('0', 'false', 'no', 'off'):
        return False
    raise ValueError(f'expected true or false, got {text!r}')


parse_bool.__name__ = 'true/false'  # argparse names the type in its error message

# --quality-model-path (bench, evaluate, eval-restore); `paired_estimator_path` says why.
QUALITY_MODEL_PATH_HELP = ('weights folder of the estimator (default: for the adaqual backend '
                           'the one trained with the model, its estimator/ folder, else the '
                           'shipped one)')


def add_model_options(parser, device='auto', threads=0, steps=True):
    """--model-path, --quality-backend, --quality-model-path, --device, --threads and, with
    ``steps``, --steps (calibrate never runs the network). ``device`` and ``threads``: the
    command's defaults (evaluate: the CPU and 2 threads, so its figures are reproducible; the
    others run where the node would)."""
    parser.add_argument('--model-path', default='',
                        help='AdaQual pipeline folder (default: the shipped checkpoint)')
    parser.add_argument('--quality-backend', default=None,
                        help="quality estimator: 'learned', 'classical' or 'deqa' (default: the "
                             "runtime's, learned)")
    parser.add_argument('--quality-model-path', default='', help=QUALITY_MODEL_PATH_HELP)
    parser.add_argument('--device', default=device,
                        help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: %(default)s)")
    parser.add_argument('--threads', type=int, default=threads,
                        help='torch CPU threads (0 = the torch default; default: %(default)s)')
    if not steps:
        return
    parser.add_argument('--steps', type=int, default=None,
                        help="AdaQual DDIM steps (the node's `steps`; default: the runtime "
                             "default, 2)")


def model_changes(args):
    """RestorerSettings changes of `add_model_options`' flags. A model that cannot load is an
    error for these commands, not a quiet classical fallback under the adaqual label."""
    changes = {'model_path': args.model_path, 'quality_model_path': args.quality_model_path,
               'device': args.device, 'threads': args.threads, 'fallback_to_classical': False}
    if args.quality_backend:
        changes['quality_backend'] = args.quality_backend
    if getattr(args, 'steps', None) is not None:
        changes['steps'] = args.steps
    return changes


# (flag, RestorerSettings field, type, what it does)
OPTIONS = (
    ('--skip-threshold', 'skip_threshold', float,
     'quality at or above which regions pass through'),
    ('--skip-margin', 'skip_margin', int, 'cells around each degraded cell restored too'),
    ('--whole-frame-share', 'whole_frame_share', float,
     'share of degraded cells at which the whole frame is restored (1 = off)'),
    ('--residual-guide', 'residual_guide', int,
     'radius (px) of the guided filter of the predicted residual (0 = off)'),
    ('--fog-contrast', 'fog_contrast', parse_bool,
     'true/false: classical backend, equalise contrast after dehazing a fog frame'),
    ('--quality-context', 'quality_context', int,
     "px: the learned estimator's local read that picks which cells of a frame not restored "
     "whole pass (0 = the whole-frame read only)"),
    ('--cpu-bf16', 'cpu_bf16', parse_bool,
     'true/false: bfloat16 on a CPU with native bf16 (float32 elsewhere either way)'),
    ('--window-bucket', 'window_bucket', int,
     'px: grow model windows to multiples of this so their shapes repeat (GPU; 0 = off)'),
)


def add_restorer_options(parser):
    for flag, name, kind, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=None,
                            help=f"{text} (the node's `{name}`; default: the runtime default)")


def restorer_changes(args):
    """RestorerSettings changes for the flags that were given."""
    return {name: getattr(args, name) for _, name, _, _ in OPTIONS
            if getattr(args, name) is not None}


def resolved_options(args):
    """Every knob's value as the runtime will use it (given, else its default)."""
    from adaqual_ros.runtime.settings import RestorerSettings

    settings = RestorerSettings(**restorer_changes(args))
    return {name: getattr(settings, name) for _, name, _, _ in OPTIONS}
