"""
ROS parameter tables: one ParamSpec row per parameter drives everything about it.

A row gives the name, default, description, allowed range or choices and whether the parameter is
read-only. From the tables come the ParameterDescriptors (description, FloatingPointRange /
IntegerRange, read_only), the validation in the on-set callback (which returns a reason on
rejection), the example `config/params.yaml` and the README's parameter table:

    python -m adaqual_ros.ros.params --yaml > config/params.yaml
    python -m adaqual_ros.ros.params --markdown

The table data and renderers are plain Python; rcl_interfaces is imported only when a node
declares its parameters, so the docs can be generated without ROS.
"""
import argparse
from dataclasses import dataclass, replace
import math
import numbers
import os
import re
import sys
import textwrap

from adaqual_ros.runtime import settings as _settings

_DEVICE_RE = re.compile(r'^(auto|cpu|cuda(:\d+)?|mps)$')


@dataclass(frozen=True)
class ParamSpec:
    """
    One ROS parameter: its declaration, its checks and its documentation.

    Args:
        name (`str`): parameter name; dots group parameters (`cache.max_frames` is `max_frames`
            under `cache:` in a params YAML).
        default (`bool`, `int`, `float`, `str` or a list of them): default value; its Python type
            is the parameter's type (an int default makes an INTEGER parameter, a float a DOUBLE).
        description (`str`): one line for `ros2 param describe`, the YAML and the README.
        limits (`tuple`, *optional*): `(low, high)` or `(low, high, step)` for numbers (becomes an
            IntegerRange / FloatingPointRange, both ends included), or a tuple of allowed strings.
        read_only (`bool`, *optional*, defaults to `False`): may only be set at start-up
            (command line or params file), not at run time.
        check (`callable`, *optional*): `check(value) -> str | None`, an extra rule returning the
            reason for rejecting `value`, or None when it is fine.
        choices_note (`str`, *optional*): how to describe allowed values that `check` enforces
            (for the docs) when `limits` cannot express them.
    """

    name: str
    default: object
    description: str
    limits: tuple = None
    read_only: bool = False
    check: object = None
    choices_note: str = ''

    def __post_init__(self):
        if self.limits is not None:
            if not isinstance(self.limits, tuple) or not self.limits:
                raise ValueError(f'{self.name}: limits must be a non-empty tuple')
            if self.choices is None and len(self.limits) not in (2, 3):
                raise ValueError(f'{self.name}: a numeric range is (low, high) or (low, high, '
                                 f'step), got {self.limits!r}')
        reason = self.validate(self.default)
        if reason:
            raise ValueError(f'default of parameter {self.name} is invalid: {reason}')

    @property
    def choices(self):
        """The allowed strings, or None when the parameter is not an enumeration."""
        if self.limits and all(isinstance(v, str) for v in self.limits):
            return self.limits
        return None

    @property
    def range(self):
        """(low, high, step) for numeric parameters with limits, else None (step 0 = any)."""
        if self.limits is None or self.choices is not None:
            return None
        low, high = self.limits[0], self.limits[1]
        step = self.limits[2] if len(self.limits) == 3 else 0
        return low, high, step

    @property
    def type_name(self):
        return _type_name(self.default)

    def validate(self, value):
        """Return the reason `value` is not acceptable for this parameter, or None when it is."""
        expected = self.type_name
        actual = _type_name(value)
        if actual != expected:
            article = 'an' if expected[0] in 'aeiou' else 'a'
            return f'{self.name} must be {article} {expected}, got {actual} {value!r}'
        if isinstance(value, float) and not math.isfinite(value):
            return f'{self.name} must be finite, got {value!r}'
        if self.choices is not None and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}; got {value!r}'
        if self.range is not None:
            low, high, step = self.range
            if not low <= value <= high:
                return f'{self.name} must be in [{low}, {high}], got {value!r}'
            if step and isinstance(value, int) and (value - low) % step:
                return f'{self.name} must be {low} plus a multiple of {step}, got {value!r}'
        if self.check is not None:
            return self.check(value)
        return None

    def allowed_text(self):
        """Human-readable allowed values, for the docs."""
        if self.choices is not None:
            return ', '.join(f'`{c}`' for c in self.choices)
        if self.range is not None and self.choices_note:
            return self.choices_note  # the range alone would promise more than the check allows
        if self.range is not None:
            low, high, step = self.range
            text = f'[{low}, {high}]'
            return text + (f' step {step}' if step else '')
        if self.choices_note:
            return self.choices_note
        return 'true / false' if isinstance(self.default, bool) else 'any'


def _type_name(value):
    # bool before int: bool is an int subclass in Python but a separate ROS parameter type.
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, numbers.Integral):
        return 'integer'
    if isinstance(value, numbers.Real):
        return 'double'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, (list, tuple)):
        inner = {_type_name(v) for v in value}
        return (inner.pop() if len(inner) == 1 else 'mixed') + '_array'
    return type(value).__name__


def _check_device(value):
    if not _DEVICE_RE.match(value):
        return (f'device must be one of {", ".join(_settings.DEVICES)} or cuda:N; '
                f'got {value!r}')
    return None


def _check_tile(value):
    if value in (_settings.AUTO_TILE, 0) or value % 64 == 0:
        return None
    return f'tile_size must be -1 (auto), 0 (one window) or a multiple of 64, got {value}'


def _check_bucket(value):
    if value % 64 == 0:
        return None
    return f'window_bucket must be 0 (off) or a multiple of 64, got {value}'


def check_cameras(value):
    """'' (one stream on the node's own topics) or distinct relative names like 'front,rear'."""
    names = parse_cameras(value)
    token = r'[A-Za-z][A-Za-z0-9_]*'
    bad = [n for n in names if not re.fullmatch(rf'{token}(/{token})*', n)]
    if bad:
        return (f'cameras must be empty or comma-separated relative topic names like '
                f'"front,rear", got {bad}')
    if len(set(names)) != len(names):
        return f'cameras names a camera twice: {value!r}'
    return None


def parse_cameras(value):
    """The `cameras` parameter as a list of names ([] = one camera on the node's topics)."""
    return [v.strip() for v in value.split(',') if v.strip()]


def _check_path(value):
    if value and not os.path.exists(value):
        return f'path {value!r} does not exist'
    return None


BACKENDS = _settings.BACKENDS
QUALITY_BACKENDS = _settings.QUALITY_BACKENDS
ON_ERROR = _settings.ON_ERROR
CacheSettings = _settings.CacheSettings
RestorerSettings = _settings.RestorerSettings
_DEFAULTS = RestorerSettings()
_CACHE = CacheSettings()

# The restoration node's parameters. Keep this table first; other nodes' tables follow below.
RESTORATION_PARAMS = (
    ParamSpec('enabled', True,
              'Restore frames; when false the input is passed through unchanged'),
    ParamSpec('backend', _DEFAULTS.backend,
              'Restoration backend: the AdaQual-Diff model, classical filters or none',
              BACKENDS),
    ParamSpec('model_path', _DEFAULTS.model_path,
              'AdaQual pipeline folder (save_pretrained layout); empty = shipped checkpoint',
              check=_check_path, choices_note='existing path or empty'),
    ParamSpec('device', _DEFAULTS.device,
              'Torch device: auto (CUDA when present), cpu, cuda or cuda:N',
              check=_check_device, choices_note='`auto`, `cpu`, `cuda`, `cuda:N`'),
    ParamSpec('half', _DEFAULTS.half, 'Half precision on CUDA (ignored on CPU)'),
    ParamSpec('cpu_bf16', _DEFAULTS.cpu_bf16,
              'bfloat16 on a CPU with native bf16 (AMX, AVX512-BF16): whole frames 1.1-2.2x '
              'faster, outputs within about 1/255 of float32; other CPUs run float32 either way'),
    ParamSpec('compile', _DEFAULTS.compile,
              'torch.compile the network (first frame of each size compiles for minutes; '
              'frames with damage then run whole, one shape per camera)'),
    ParamSpec('compile_mode', _DEFAULTS.compile_mode,
              'torch.compile mode when compile is on; reduce-overhead adds CUDA graphs (no '
              'per-kernel launch cost on a GPU; more GPU memory)', _settings.COMPILE_MODES),
    ParamSpec('steps', _DEFAULTS.steps, 'DDIM sampling steps (network evaluations per tile)',
              (1, 50)),
    ParamSpec('skip_threshold', _DEFAULTS.skip_threshold,
              'Regions with quality score at or above this pass through untouched (1-5 scale)',
              (1.0, 5.0)),
    ParamSpec('skip_margin', _DEFAULTS.skip_margin,
              'Quality cells around every degraded cell that are restored too: a cell passes '
              'through only when its neighbourhood is clean as well (0 = each cell on its own '
              'score)', (0, _settings.MAX_SKIP_MARGIN)),
    ParamSpec('whole_frame_share', _DEFAULTS.whole_frame_share,
              "When at least this share of a frame's cells scores below skip_threshold, the "
              'whole frame is restored: fog covers frames, stray degraded reads on a clean '
              'frame do not; a stream restored whole stays whole down to 0.1 below it '
              '(1.0 = off)', (0.0, 1.0),
              check=lambda v: None if v > 0 else 'must be above 0 (1.0 = off)',
              choices_note='(0.0, 1.0]'),
    ParamSpec('residual_guide', _DEFAULTS.residual_guide,
              "Radius (px) of a guided filter of the model's predicted change by the input "
              'frame: keeps changes that follow the frame, averages away texture the model '
              'invents in flat fog (0 = off)', (0, _settings.MAX_RESIDUAL_GUIDE)),
    ParamSpec('fog_contrast', _DEFAULTS.fog_contrast,
              'Classical backend: on a fog frame (restored whole, haze its main damage), '
              'equalise local contrast after dehazing (CLAHE on lightness): higher mAP50 from '
              'more low-confidence detections; level or lower precision and recall at '
              'confidence 0.25; less faithful to the scene'),
    ParamSpec('tile_size', _DEFAULTS.tile_size,
              'Tile edge in pixels for model inference, a multiple of the 64 px quality cell; '
              '0 = one window over the degraded cells; -1 = auto: on CUDA the whole frame '
              'whenever any cell is degraded (one input shape per camera: a new shape costs '
              'about 1 s there), 256 px tiles on the CPU', (-1, 4096), check=_check_tile,
              choices_note='-1, 0 or a multiple of 64 up to 4096'),
    ParamSpec('window_bucket', _DEFAULTS.window_bucket,
              'Grow each model window to a multiple of this many pixels (or to the frame edge) '
              'so window shapes repeat from frame to frame: for GPUs, where a window shape not '
              'run before costs about 1 s (used with an explicit tile_size); 0 = off (a CPU '
              'only pays for the extra pixels)',
              (0, 4096), check=_check_bucket, choices_note='0 or a multiple of 64 up to 4096'),
    ParamSpec('quality_backend', _DEFAULTS.quality_backend,
              'Quality estimator: learned (shipped small net), classical (no weights) or deqa',
              QUALITY_BACKENDS),
    ParamSpec('quality_model_path', _DEFAULTS.quality_model_path,
              'Weights folder for the quality estimator; empty = for the adaqual backend the one '
              'trained with the model (its estimator/ folder), else the shipped one',
              check=_check_path, choices_note='existing path or empty'),
    ParamSpec('quality_context', _DEFAULTS.quality_context,
              'Learned estimator: side (px, at its estimation scale) of the neighbourhood each '
              'cell is also read in to decide which cells of a frame not restored whole pass '
              'through; the higher read is kept, so a large hazy region does not pull a clean '
              'one down (0 = whole frame only)', (0, _settings.MAX_QUALITY_CONTEXT)),
    ParamSpec('fallback_to_classical', _DEFAULTS.fallback_to_classical,
              'Use the classical backend (announced) when the model cannot load'),
    ParamSpec('seed', _DEFAULTS.seed, "Base seed of each stream's fixed start noise",
              (0, 2**31 - 1)),
    ParamSpec('cache.enabled', _CACHE.enabled,
              'Reuse the quality map across nearby frames of the stream'),
    ParamSpec('cache.max_frames', _CACHE.max_frames,
              'Recompute the quality map after this many frames', (1, 1000)),
    ParamSpec('cache.max_age_s', _CACHE.max_age_s,
              "Recompute the quality map after this many seconds of the frames' header stamps "
              '(of the wall clock while stamps are unset)', (0.0, 60.0)),
    ParamSpec('cache.scene_threshold', _CACHE.scene_threshold,
              'Recompute when the scene signature moves this far (0 = every frame)', (0.0, 1.0)),
    ParamSpec('max_rate_hz', 0.0,
              'Most frames per second to process (0 = as fast as frames come); extra frames '
              'are dropped and counted', (0.0, 1000.0)),
    ParamSpec('threads', _DEFAULTS.threads, 'CPU threads for torch (0 = torch default)',
              (0, 256)),
    ParamSpec('on_error', _DEFAULTS.on_error,
              'When restoring a frame fails: publish the input unchanged or drop the frame',
              ON_ERROR),
    ParamSpec('max_pixels', 3840 * 2160,
              'Frames larger than this many pixels are not restored (handled per on_error)',
              (1, 2**31 - 1)),
    ParamSpec('cameras', '',
              'Serve several cameras from this one process (one model in memory): comma-'
              'separated names, each read on NAME/image_raw and published on '
              'NAME/restored/image_raw etc.; empty = one camera on image_raw', read_only=True,
              check=check_cameras, choices_note='empty or names like `front,rear`'),
    ParamSpec('input_compressed', False,
              'Subscribe to image_raw/compressed (sensor_msgs/CompressedImage) instead of '
              'image_raw'),
    ParamSpec('publish_visualization', False,
              'Publish a colour quality heat map on quality_map/visualization'),
    ParamSpec('publish_compressed', False,
              'Also publish restored/image_raw/compressed (sensor_msgs/CompressedImage, '
              "image_transport's format string) for links too slow for raw frames; encoded "
              'only while it has a subscriber'),
    ParamSpec('compressed_format', 'jpeg',
              'Format of restored/image_raw/compressed: jpeg (8-bit, lossy) or png (lossless, '
              '8 or 16 bit)', ('jpeg', 'png')),
    ParamSpec('jpeg_quality', 90, 'JPEG quality of restored/image_raw/compressed', (1, 100)),
    ParamSpec('diagnostics_period_s', 1.0, 'Seconds between two reports on /diagnostics',
              (0.05, 60.0), read_only=True),
    ParamSpec('output.reliability', 'reliable',
              'Reliability of the published topics', ('reliable', 'best_effort')),
    ParamSpec('output.depth', 5, 'History depth of the published topics', (1, 1000)),
)

# Node name -> (title, table). Other nodes' tables are added after the restoration node's.
NODE_TABLES = {
    'adaqual_restoration': ('Restoration node (`restoration_node`)', RESTORATION_PARAMS),
}

# Per camera of a restoration node with `cameras`: declared as `camera.NAME.<row>` (a `/` in
# NAME becomes `.`), so one camera can pass through or skip differently while all share one
# model. A row at its default ("inherit") value follows the node's parameter of the same name;
# the rows besides `enabled` are the runtime's STREAM_SETTINGS (a test holds them together).
CAMERA_PARAMS = (
    ParamSpec('enabled', True,
              "Restore this camera's frames (when the node's enabled is true too); false "
              'passes them through unchanged'),
    ParamSpec('skip_threshold', 0.0,
              "This camera's skip_threshold (0 = the node's)", (0.0, 5.0),
              check=lambda v: None if v == 0.0 or v >= 1.0 else
              "a camera's skip_threshold must be 0 (the node's) or in [1.0, 5.0]",
              choices_note="0 (the node's) or [1.0, 5.0]"),
    ParamSpec('skip_margin', -1,
              "This camera's skip_margin (-1 = the node's)", (-1, _settings.MAX_SKIP_MARGIN)),
    ParamSpec('whole_frame_share', 0.0,
              "This camera's whole_frame_share (0 = the node's)", (0.0, 1.0)),
)
# The restoration node table these rows belong to (checked in params files and graphs).
PER_CAMERA_TABLES = {'adaqual_restoration': CAMERA_PARAMS}


def camera_param_name(camera, row):
    """`camera.NAME.row` for a camera name from `cameras` ('rear/left' -> 'camera.rear.left')."""
    return f'camera.{camera.replace("/", ".")}.{row}'


def camera_param_specs(cameras, rows=CAMERA_PARAMS):
    """The per-camera ParamSpecs of a node serving `cameras` (names from `parse_cameras`)."""
    return tuple(replace(row, name=camera_param_name(cam, row.name))
                 for cam in cameras for row in rows)


def camera_overrides(values, camera):
    """{setting: value} a camera sets for itself (rows not at their inherit value)."""
    out = {}
    for row in CAMERA_PARAMS:
        if row.name in _settings.STREAM_SETTINGS:
            value = values.get(camera_param_name(camera, row.name), row.default)
            if value != row.default:
                out[row.name] = value
    return out


def lookup_spec(known, key, per_camera=()):
    """
    The ParamSpec of `key`: from `known` ({name: spec}), or a `camera.NAME.row` parameter of
    the per-camera rows `per_camera`; None when neither declares it.
    """
    spec = known.get(key)
    if spec is not None:
        return spec
    parts = key.split('.')
    if len(parts) >= 3 and parts[0] == 'camera' and all(parts[1:-1]):
        rows = {row.name: row for row in per_camera}
        if parts[-1] in rows:
            return replace(rows[parts[-1]], name=key)
    return None


def spec_map(specs):
    """Return {name: ParamSpec}, raising ValueError on a duplicate name."""
    out = {}
    for spec in specs:
        if spec.name in out:
            raise ValueError(f'parameter {spec.name} is listed twice')
        out[spec.name] = spec
    return out


def defaults(specs):
    """Return {name: default} for a table."""
    return {spec.name: spec.default for spec in specs}


def settings_from_params(values, base=None):
    """
    Map restoration parameter values ({name: value}) onto a RestorerSettings.

    Names missing from `values` keep the value of `base` (default: RestorerSettings()).
    """
    base = base or RestorerSettings()
    get = values.get
    cache = CacheSettings(
        enabled=get('cache.enabled', base.cache.enabled),
        max_frames=get('cache.max_frames', base.cache.max_frames),
        max_age_s=get('cache.max_age_s', base.cache.max_age_s),
        scene_threshold=get('cache.scene_threshold', base.cache.scene_threshold))
    changes = {key: get(key, getattr(base, key)) for key in (
        'backend', 'model_path', 'device', 'half', 'cpu_bf16', 'compile', 'compile_mode',
        'steps', 'skip_threshold', 'skip_margin', 'whole_frame_share', 'residual_guide',
        'fog_contrast', 'tile_size', 'window_bucket',
        'quality_backend', 'quality_model_path', 'quality_context', 'threads', 'on_error',
        'fallback_to_classical', 'seed')}
    return base.with_changes(cache=cache, **changes)


# ---------------------------------------------------------------------------------------------
# Declaration and validation on a node (rclpy imported here only).

class ParamBinding:
    """
    The parameters of one node declared from a table, validated on one path, mirrored in `values`.

    The on-set callback is registered *before* declaring, so start-up overrides (command line,
    params file) pass the same checks as run-time changes. rclpy applies the descriptor ranges
    itself; the callback adds types, choices, `check` rules and the node's cross-parameter `rule`.

    Args:
        node (`rclpy.node.Node`): the node.
        specs (`tuple[ParamSpec]`): its table.
        rule (`callable`, *optional*): `rule(proposed: dict) -> str | None` sees all values as they
            would be after the change and returns a reason to reject it.
        on_change (`callable`, *optional*): `on_change(changed: dict)` after a successful set.
    """

    def __init__(self, node, specs, rule=None, on_change=None):
        from rcl_interfaces.msg import SetParametersResult

        self._result_type = SetParametersResult
        self._node = node
        self._specs = spec_map(specs)
        self._rule = rule
        self._on_change = on_change
        self.values = {}
        self.rejections = 0
        self._ready = False
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._applied)
        declared = node.declare_parameters(
            '', [(s.name, s.default, descriptor(s)) for s in self._specs.values()])
        self.values = {p.name: p.value for p in declared}
        if self._rule is not None:
            reason = self._rule(dict(self.values))
            if reason:
                raise ValueError(f'invalid parameters for {node.get_name()}: {reason}')
        self._ready = True

    def __getitem__(self, name):
        return self.values[name]

    def _validate(self, parameters):
        proposed = dict(self.values)
        for param in parameters:
            spec = self._specs.get(param.name)
            if spec is None:
                continue  # not ours: leave it to other callbacks (rclpy's own handling)
            reason = spec.validate(param.value)
            if reason:
                self.rejections += 1
                return self._result_type(successful=False, reason=reason)
            proposed[param.name] = param.value
        # Cross-parameter rules run once every parameter has a value (checked once more at the
        # end of declaration).
        if self._rule is not None and self._ready:
            reason = self._rule(proposed)
            if reason:
                self.rejections += 1
                return self._result_type(successful=False, reason=reason)
        return self._result_type(successful=True)

    def _applied(self, parameters):
        changed = {p.name: p.value for p in parameters if p.name in self._specs}
        self.values.update(changed)
        if changed and self._ready and self._on_change is not None:
            self._on_change(changed)


def descriptor(spec):
    """The rcl_interfaces ParameterDescriptor of one ParamSpec."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices is not None:
        desc.additional_constraints = 'one of: ' + ', '.join(spec.choices)
    elif spec.check is not None and spec.choices_note:
        desc.additional_constraints = spec.choices_note.replace('`', '')
    if spec.range is not None:
        low, high, step = spec.range
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                               step=int(step))]
        else:
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(low), to_value=float(high), step=float(step))]
    return desc


# ---------------------------------------------------------------------------------------------
# Documentation renderers.

def _yaml_scalar(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, float):
        return repr(value)  # keeps the decimal point, so ROS reads a double
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "''" if value == '' else "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_yaml_scalar(v) for v in value) + ']'
    raise TypeError(f'cannot render {value!r} as YAML')


def render_yaml(tables=None):
    """Return a ROS 2 params file (every parameter at its default, each with a comment)."""
    tables = NODE_TABLES if tables is None else tables
    lines = ['# Generated by `python -m adaqual_ros.ros.params --yaml` from adaqual_ros/ros/'
             'params.py;', '# edit the table there, not this file.',
             '# Sections are keyed `/**/<node name>` so they apply in any namespace (a bare name',
             '# only matches a node in the root namespace).']
    for node_name, (title, specs) in tables.items():
        lines += ['', f'# {title}', f'/**/{node_name}:', '  ros__parameters:']
        groups = {}
        for spec in specs:
            head, _, tail = spec.name.rpartition('.')
            groups.setdefault(head, []).append((tail, spec))
        for group, rows in groups.items():
            indent = '    '
            if group:
                lines.append(f'{indent}{group}:')
                indent += '  '
            for key, spec in rows:
                allowed = spec.allowed_text().replace('`', '')
                note = f' ({allowed})' if allowed not in ('any', 'true / false') else ''
                ro = ' [read-only]' if spec.read_only else ''
                lines += textwrap.wrap(f'{spec.description}{note}{ro}', 99,
                                       initial_indent=indent + '# ',
                                       subsequent_indent=indent + '#   ')
                lines.append(f'{indent}{key}: {_yaml_scalar(spec.default)}')
    return '\n'.join(lines) + '\n'


def render_markdown(tables=None):
    """Return the README's parameter tables (one per node) as Markdown."""
    tables = NODE_TABLES if tables is None else tables
    out = []
    for node_name, (title, specs) in tables.items():
        out += [f'### {title}', '', f'Node name `{node_name}`. Parameters:', '',
                '| name | type | default | allowed | description |',
                '| --- | --- | --- | --- | --- |']
        for spec in specs:
            default = _yaml_scalar(spec.default)
            description = spec.description + (' (read-only)' if spec.read_only else '')
            out.append(f'| `{spec.name}` | {spec.type_name} | `{default}` | '
                       f'{spec.allowed_text()} | {description} |')
        out.append('')
        rows = PER_CAMERA_TABLES.get(node_name, ())
        if rows:
            out += ['Per camera, with `cameras` set: `camera.NAME.<name>` (a `/` in NAME '
                    'becomes `.`), e.g. `camera.rear.skip_threshold`:', '',
                    '| name | type | default | allowed | description |',
                    '| --- | --- | --- | --- | --- |']
            for spec in rows:
                out.append(f'| `camera.NAME.{spec.name}` | {spec.type_name} | '
                           f'`{_yaml_scalar(spec.default)}` | {spec.allowed_text()} | '
                           f'{spec.description} |')
            out.append('')
    return '\n'.join(out)


def check_params_file(path, tables=None):
    """
    Return the problems of a ROS 2 params YAML against the tables (empty list = fine).

    Problems: a node that has no table, a parameter no table declares, a value the table rejects.
    Wildcard node names (`/**`) are checked against every table.
    """
    import yaml

    tables = NODE_TABLES if tables is None else tables
    with open(path) as handle:
        data = yaml.safe_load(handle) or {}
    problems = []
    for node_key, body in data.items():
        name = str(node_key).rsplit('/', 1)[-1]
        params = (body or {}).get('ros__parameters', {}) if isinstance(body, dict) else {}
        if name in ('**', '*'):
            known, per_camera = {}, ()
            for table_name, (_, specs) in tables.items():
                known.update(spec_map(specs))
                per_camera += PER_CAMERA_TABLES.get(table_name, ())
        elif name in tables:
            known, per_camera = spec_map(tables[name][1]), PER_CAMERA_TABLES.get(name, ())
        else:
            problems.append(f'{path}: node {node_key!r} has no parameter table')
            continue
        flat = dict(_flatten(params))
        for key, value in flat.items():
            spec = lookup_spec(known, key, per_camera)
            if spec is None:
                problems.append(f'{path}: {node_key}: parameter {key!r} is not declared')
                continue
            reason = spec.validate(value)
            if reason:
                problems.append(f'{path}: {node_key}: {reason}')
        problems += [f'{path}: {node_key}: {p}' for p in unknown_cameras(flat)]
    return problems


def unknown_cameras(values):
    """
    Problems of `camera.NAME.*` values whose NAME is not in the same node's `cameras` (a typo
    there would leave the camera on the node's values without a word: rclpy ignores overrides
    of parameters a node does not declare).
    """
    if 'cameras' not in values:  # set elsewhere (another params file): nothing to hold against
        return []
    names = {camera_param_name(cam, '') for cam in parse_cameras(str(values['cameras']))}
    return [f'{key} names no camera of cameras={values["cameras"]!r}'
            for key in values if key.startswith('camera.') and
            key.rsplit('.', 1)[0] + '.' not in names]


def _flatten(params, prefix=''):
    for key, value in params.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            yield from _flatten(value, name + '.')
        else:
            yield name, value


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m adaqual_ros.ros.params',
        description='Print the parameter tables as a ROS 2 params YAML or as Markdown.')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--yaml', action='store_true', help='print config/params.yaml')
    group.add_argument('--markdown', action='store_true', help='print the README tables')
    group.add_argument('--check', metavar='FILE', help='check a params YAML against the tables')
    args = parser.parse_args(argv)
    if args.yaml:
        sys.stdout.write(render_yaml())
    elif args.markdown:
        sys.stdout.write(render_markdown())
    else:
        problems = check_params_file(args.check)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    return 0


# ---------------------------------------------------------------------------------------------
# Detection, metrics and camera player nodes (owner: detection engineer).

def _check_classes(value):
    """'' (all classes) or comma-separated class ids such as '0,2,7'."""
    if value.strip() and not re.fullmatch(r'\s*\d+(\s*,\s*\d+)*\s*', value):
        return f'classes must be empty or comma-separated class ids like "0,2,7", got {value!r}'
    return None


def parse_classes(value):
    """The `classes` parameter as a list of ints, or None for all classes."""
    return [int(v) for v in value.split(',')] if value.strip() else None


_CONDITIONS = ('clean', 'low', 'haze', 'rain', 'snow', 'low_haze', 'low_rain', 'low_snow',
               'haze_rain', 'haze_snow', 'low_haze_rain', 'low_haze_snow')

DETECTION_PARAMS = (
    ParamSpec('model', '',
              'YOLO model file (.pt/.onnx/OpenVINO/TensorRT); empty = $ADAQUAL_DETECTOR or '
              'the assets detector (never downloaded)',
              check=_check_path, choices_note='existing path or empty'),
    ParamSpec('conf', 0.25, 'Minimum detection confidence', (0.0, 1.0)),
    ParamSpec('iou', 0.7, 'NMS IoU threshold', (0.01, 1.0)),
    ParamSpec('imgsz', 640, 'Inference image size in pixels (fixed-size exports keep theirs)',
              (32, 4096, 32)),
    ParamSpec('device', 'cpu', 'Torch device: auto, cpu, cuda or cuda:N', check=_check_device,
              choices_note='`auto`, `cpu`, `cuda`, `cuda:N`'),
    ParamSpec('half', False, 'Half precision on CUDA (ignored on CPU)'),
    ParamSpec('classes', '', 'Keep only these class ids, comma-separated; empty = all',
              check=_check_classes, choices_note='empty or ids like `0,2,7`'),
    ParamSpec('max_det', 300, 'Most detections per image', (1, 10000)),
    ParamSpec('max_pixels', 3840 * 2160,
              'Larger frames are shrunk (area filter) to this many pixels before detection; '
              'boxes stay in frame pixels', (1024, 2**31 - 1)),
    ParamSpec('publish_annotated', False,
              'Also publish the frame with boxes drawn on detections/image'),
    ParamSpec('cameras', '',
              'Detect on several streams from this one process (one model in memory): comma-'
              'separated names, each read on NAME/image_raw with detections on NAME/detections '
              '(e.g. front,front/restored); empty = one stream on image_raw', read_only=True,
              check=check_cameras, choices_note='empty or names like `front,front/restored`'),
    ParamSpec('input_compressed', False,
              'Subscribe to image_raw/compressed (sensor_msgs/CompressedImage) instead'),
    ParamSpec('diagnostics_period_s', 1.0, 'Seconds between two reports on /diagnostics',
              (0.05, 60.0), read_only=True),
    ParamSpec('output.reliability', 'reliable', 'Reliability of the published topics',
              ('reliable', 'best_effort')),
    ParamSpec('output.depth', 10, 'History depth of the published topics', (1, 1000)),
)

METRICS_PARAMS = (
    ParamSpec('raw_topic', 'raw/detections', 'Detections (JSON) on the raw frames'),
    ParamSpec('restored_topic', 'restored/detections',
              'Detections (JSON) on the restored frames; empty = score raw only'),
    ParamSpec('reference_topic', 'clean/detections',
              'Reference detections (JSON) on the clean frames; ignored when labels_dir is set; '
              'empty = no reference (a camera without labels or clean frames: raw vs restored '
              'agreement only)'),
    ParamSpec('labels_dir', '',
              'Folder of YOLO label files used as ground truth instead of reference_topic '
              '(matched by the frame name from frame_info_topic)',
              check=_check_path, choices_note='existing folder or empty'),
    ParamSpec('frame_info_topic', 'frame_info',
              "The player's per-frame JSON (stamp, index, file name) used to find labels"),
    ParamSpec('reference_conf', 0.25,
              'Reference detections below this confidence are not counted as objects; the raw '
              'vs restored agreement (no reference needed) counts detections from it up',
              (0.0, 1.0)),
    ParamSpec('buffer_size', 300, 'Most unpaired stamps kept while waiting for partners',
              (1, 100000)),
    ParamSpec('report_dir', 'adaqual_report', 'Folder for report.json and report.md'),
    ParamSpec('report_on_shutdown', True, 'Write the report when the node shuts down'),
    ParamSpec('plots', True, 'Also write PNG plots with the report'),
)

PLAYER_PARAMS = (
    ParamSpec('source', '', 'Video file, image folder or ROS 2 MCAP bag to play',
              check=_check_path, choices_note='existing path'),
    ParamSpec('bag_topic', '', 'Image topic to play from a bag (empty = its only one)'),
    ParamSpec('publish_rate', 10.0, 'Frames per second', (0.1, 240.0)),
    ParamSpec('loop', False, 'Start again at the end of the source'),
    ParamSpec('max_frames', 0, 'Stop after this many frames (0 = the whole source)',
              (0, 10**9)),
    ParamSpec('frame_id', 'camera', 'frame_id of the published headers'),
    ParamSpec('width', 0, 'Resize frames to this width, keeping the aspect (0 = as is)',
              (0, 8192)),
    ParamSpec('encoding', 'rgb8', 'Encoding of the published images', ('rgb8', 'bgr8')),
    ParamSpec('condition', 'clean', 'Synthetic weather applied to every frame', _CONDITIONS),
    ParamSpec('severity', 0.6, 'Mean severity of the synthetic weather (0..1)', (0.0, 1.0)),
    ParamSpec('seed', 0, 'Seed of the synthetic weather', (0, 2**31 - 1)),
    ParamSpec('dim_haze', 0.0,
              'Probability that the haze is lit as at dusk or at night (dim, blue or sodium '
              'airlight) instead of daylight', (0.0, 1.0)),
    ParamSpec('publish_clean', True,
              'With weather on, also publish the clean frame on clean/image_raw (same stamp)'),
    ParamSpec('output.reliability', 'reliable', 'Reliability of the published topics',
              ('reliable', 'best_effort')),
    ParamSpec('output.depth', 10, 'History depth of the published topics', (1, 1000)),
)

NODE_TABLES['adaqual_detection'] = ('Detection node (`detection_node`)', DETECTION_PARAMS)
NODE_TABLES['adaqual_metrics'] = ('Metrics node (`metrics_node`)', METRICS_PARAMS)
NODE_TABLES['adaqual_player'] = ('Camera player node (`camera_player`)', PLAYER_PARAMS)


if __name__ == '__main__':
    sys.exit(main())
