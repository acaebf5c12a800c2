"""
The restoration node's per-frame knobs as command-line flags, for the commands that run the
runtime's Restorer (`bench`, `evaluate`): one definition, and unset means the runtime's default.
(`eval-restore` scores the checkpoint on still images and has its own `--skip-*` semantics.)
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
     'true/false: bfloat16 on the CPU (fast where the CPU has native bf16)'),
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
