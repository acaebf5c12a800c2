"""
The pipeline graph (config/pipeline.yaml) as node processes, for installs without `ros2 launch`.

`load_graph` reads the graph file into `NodeSpec`s (plain Python: the launch file
launch/adaqual_pipeline.launch.py builds its launch_ros Nodes from the same specs);
`check_graph` lists what is wrong with it (unknown executables, undeclared or invalid
parameters, missing files); `node_argv` is the command line of one node
(`python -m <module> --ros-args -r __node:=... -r __ns:=... --params-file F -p k:=v -r a:=b`);
`run_graph` starts every enabled node as its own process, reports when all are up, and stops
them all with SIGINT on Ctrl-C, SIGTERM, a time limit or when one of them dies.

rclpy is imported only to watch the graph come up (`wait_for_nodes`) and, through
`adaqual_ros.ros.demo_graph`, to build the command lines.
"""
from dataclasses import dataclass, field
import os
from pathlib import Path
import shlex
import signal
import subprocess
import time

import yaml

from adaqual_ros.ros.params import (
    NODE_TABLES,
    PER_CAMERA_TABLES,
    check_params_file,
    lookup_spec,
    spec_map,
    unknown_cameras,
)
from adaqual_ros.ros.processes import stop_processes

# Console script (setup.py) -> (module run with `python -m`, parameter table in NODE_TABLES).
EXECUTABLES = {
    'restoration_node': ('adaqual_ros.ros.restoration_node', 'adaqual_restoration'),
    'detection_node': ('adaqual_ros.ros.detection_node', 'adaqual_detection'),
    'metrics_node': ('adaqual_ros.ros.metrics_node', 'adaqual_metrics'),
    'camera_player': ('adaqual_ros.ros.player_node', 'adaqual_player'),
}
_NODE_KEYS = {'executable', 'name', 'namespace', 'remaps', 'parameters', 'enabled'}
_GRAPH_KEYS = {'namespace', 'params_file', 'nodes'}


class GraphError(ValueError):
    """The graph file is malformed or names something that does not exist."""


@dataclass
class NodeSpec:
    """
    One node of the graph, resolved: absolute namespace and remap targets, params file paths.

    Args:
        key (`str`): the node's entry in the graph file (`restoration`, `detect_raw`, ...).
        executable (`str`): console script name (a key of `EXECUTABLES`).
        name (`str`): node name.
        namespace (`str`): absolute namespace ('/' for the root).
        remaps (`dict`): topic as the node names it -> absolute topic.
        params_files (`list[Path]`): ROS params YAML files, in order.
        parameters (`dict`): `{name: value}` set on top of the params files (dotted names).
        enabled (`bool`): whether `run_graph` / the launch file starts it.
    """

    key: str
    executable: str
    name: str
    namespace: str
    remaps: dict = field(default_factory=dict)
    params_files: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    enabled: bool = True

    @property
    def fqn(self):
        """The fully qualified node name, e.g. /adaqual/raw/adaqual_detection."""
        return join_ns(self.namespace, self.name)

    @property
    def module(self):
        return EXECUTABLES[self.executable][0]

    @property
    def table(self):
        """The node's parameter table key in `NODE_TABLES`."""
        return EXECUTABLES[self.executable][1]


@dataclass
class Graph:
    """The nodes of a graph file, in file order, and where it came from."""

    namespace: str
    nodes: list
    source: Path = None

    def enabled(self):
        return [node for node in self.nodes if node.enabled]

    def __getitem__(self, key):
        for node in self.nodes:
            if node.key == key:
                return node
        raise KeyError(f'no node {key!r} in the graph (nodes: '
                       f'{", ".join(n.key for n in self.nodes)})')


def normalize_ns(namespace):
    """'' / 'a' / '/a/' -> '/' / '/a' / '/a'."""
    text = str(namespace or '').strip().strip('/')
    return '/' + text


def join_ns(namespace, name):
    """Join an absolute namespace and a relative name ('/' + 'x' -> '/x')."""
    name = str(name).strip('/')
    base = normalize_ns(namespace)
    if not name:
        return base
    return base.rstrip('/') + '/' + name


def _resolve_topic(graph_ns, target):
    target = str(target)
    return target if target.startswith('/') else join_ns(graph_ns, target)


def parse_overrides(items):
    """
    `['restoration.backend=classical', 'detect_raw.conf=0.4']` -> {'restoration': {...}, ...}.

    Values are read as YAML scalars (`true`, `3`, `0.5`, `'3'`), like `ros2 param set` does.
    """
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition('=')
        node, dot, param = key.partition('.')
        if not sep or not dot or not node or not param:
            raise GraphError(f'override {item!r} is not NODE.PARAM=VALUE (e.g. '
                             'restoration.backend=classical)')
        out.setdefault(node, {})[param] = yaml.safe_load(value) if value else ''
    return out


def load_graph(path, namespace=None, params_file=None, overrides=None, enable=()):
    """
    Read a graph file (see config/pipeline.yaml) into a `Graph`.

    Args:
        path (`str` or `Path`): the graph YAML.
        namespace (`str`, *optional*): replaces the file's namespace.
        params_file (`str`, *optional*): replaces the file's params file ('' = none).
        overrides (`dict`, *optional*): `{node_key: {param: value}}` on top of the file's
            parameters (see `parse_overrides`).
        enable (`iterable[str]`, *optional*): node keys to start although the file disables them.

    Raises:
        GraphError: the file is malformed, or an override or `enable` names an unknown node.
    """
    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GraphError(f'cannot read the graph file {path}: {exc}') from None
    if not isinstance(data, dict) or not isinstance(data.get('nodes'), dict) or not data['nodes']:
        raise GraphError(f'{path}: expected a mapping with a non-empty `nodes:` mapping')
    unknown = set(data) - _GRAPH_KEYS
    if unknown:
        raise GraphError(f'{path}: unknown top-level keys {sorted(unknown)} (known: '
                         f'{", ".join(sorted(_GRAPH_KEYS))})')
    graph_ns = normalize_ns(data.get('namespace', '') if namespace is None else namespace)
    files_text = data.get('params_file', '') if params_file is None else params_file
    files = []
    for item in ([files_text] if isinstance(files_text, str) else list(files_text or ())):
        if item:
            # The file's own entry is relative to the graph file; a caller's to the cwd.
            base = Path.cwd() if params_file is not None else path.parent
            files.append((base / Path(item).expanduser()).resolve())
    overrides = dict(overrides or {})
    enable = set(enable or ())
    unknown = sorted((set(overrides) | enable) - set(data['nodes']))
    if unknown:
        raise GraphError(f'{path}: no node {unknown[0]!r} to set or enable (nodes: '
                         f'{", ".join(data["nodes"])})')
    nodes = []
    for key, body in data['nodes'].items():
        body = body or {}
        if not isinstance(body, dict):
            raise GraphError(f'{path}: node {key!r} must be a mapping')
        extra = set(body) - _NODE_KEYS
        if extra:
            raise GraphError(f'{path}: node {key!r} has unknown keys {sorted(extra)} (known: '
                             f'{", ".join(sorted(_NODE_KEYS))})')
        if 'executable' not in body:
            raise GraphError(f'{path}: node {key!r} has no executable')
        parameters = dict(_flatten(body.get('parameters') or {}))
        parameters.update(overrides.get(key, {}))
        nodes.append(NodeSpec(
            key=str(key), executable=str(body['executable']),
            name=str(body.get('name') or key),
            namespace=join_ns(graph_ns, body.get('namespace', '')),
            remaps={str(k): _resolve_topic(graph_ns, v)
                    for k, v in (body.get('remaps') or {}).items()},
            params_files=list(files), parameters=parameters,
            enabled=bool(body.get('enabled', True)) or key in enable))
    return Graph(graph_ns, nodes, path)


# Shortcuts of `adaqual pipeline` and adaqual_pipeline.launch.py: parameter -> the executables
# whose every node gets it.
SHORTCUTS = {
    'backend': ('backend', ('restoration_node',)),
    'device': ('device', ('restoration_node', 'detection_node')),
    'detector': ('model', ('detection_node',)),
    'report_dir': ('report_dir', ('metrics_node',)),
}

_PATH_SHORTCUTS = ('detector', 'report_dir')
# build_graph's keyword arguments that adaqual_pipeline.launch.py passes on by the same name.
GRAPH_ARGUMENTS = ('source', 'image', *SHORTCUTS)


def build_graph(path, namespace=None, params_file=None, overrides=None, enable=(), source=None,
                image=None, **shortcuts):
    """
    The graph `adaqual pipeline` and launch/adaqual_pipeline.launch.py start: `load_graph` with
    ``overrides`` and ``enable``, plus what their shortcut arguments set.

    Args:
        source (`str`, *optional*): a video, image folder or bag for the camera player: the
            player is started with it, and so are the detection nodes the file disables (the
            clean-frame reference).
        image (`str`, *optional*): the camera topic (`retarget_image`).
        **shortcuts: `SHORTCUTS` (``backend``, ``device``, ``detector``, ``report_dir``): a
            parameter for every node of their executables. None or '' = not given. An entry of
            ``overrides`` wins over a shortcut.

    Raises:
        GraphError: as `load_graph`; also a ``source`` that does not exist or a graph without
            a camera player to play it (a missing detector is `check_graph`'s to report).
    """
    unknown = set(shortcuts) - set(SHORTCUTS)
    if unknown:
        raise TypeError(f'unknown shortcut {sorted(unknown)[0]!r} (known: {", ".join(SHORTCUTS)})')
    base = load_graph(path, namespace=namespace, params_file=params_file)
    overrides = {key: dict(values) for key, values in (overrides or {}).items()}
    enable = list(enable or ())

    def put(executables, name, value):
        for node in base.nodes:
            if node.executable in executables:
                overrides.setdefault(node.key, {}).setdefault(name, value)

    if source:
        resolved = Path(source).expanduser().resolve()
        if not resolved.exists():
            raise GraphError(f'source {source}: no such file or folder')
        players = [n.key for n in base.nodes if n.executable == 'camera_player']
        if not players:
            raise GraphError(f'{base.source} has no camera_player node to play {source}')
        put(('camera_player',), 'source', str(resolved))
        enable += players + [n.key for n in base.nodes
                             if n.executable == 'detection_node' and not n.enabled]
    for shortcut, value in shortcuts.items():
        if value in (None, ''):
            continue
        if shortcut in _PATH_SHORTCUTS:  # relative to the caller's folder, not the node's
            value = str(Path(value).expanduser().resolve())
        name, executables = SHORTCUTS[shortcut]
        put(executables, name, value)
    graph = load_graph(path, namespace=namespace, params_file=params_file, overrides=overrides,
                       enable=enable)
    if image:
        retarget_image(graph, image)
    return graph


def retarget_image(graph, topic):
    """
    Point every node that reads the camera (a node with an `image_raw` remap) at `topic`.

    `topic` is absolute or relative to the graph's namespace; `image_raw/compressed` follows.
    Raises GraphError when no node reads `image_raw` (a graph of several cameras remaps each
    camera's `NAME/image_raw` in its file): ignoring the topic would leave the graph deaf to it.
    """
    target = _resolve_topic(graph.namespace, topic)
    readers = [node for node in graph.nodes if 'image_raw' in node.remaps]
    if not readers:
        raise GraphError(f'no node of this graph reads image_raw, so the image topic {topic!r} '
                         'cannot be applied; remap each camera in the graph file instead')
    for node in readers:
        node.remaps['image_raw'] = target
        node.remaps['image_raw/compressed'] = target + '/compressed'
    return graph


def _flatten(params, prefix=''):
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flatten(value, f'{prefix}{key}.')
        else:
            yield f'{prefix}{key}', value


def check_graph(graph):
    """
    Return the problems of a graph (empty list = fine).

    Checks: each executable is one of ours, no two enabled nodes share a fully qualified name,
    each params file exists and passes `check_params_file`, each parameter set in the graph is
    declared by its node with a valid value, and an enabled player has a source.
    """
    problems = []
    for file in sorted({f for node in graph.nodes for f in node.params_files}):
        if not Path(file).is_file():
            problems.append(f'params file {file} does not exist')
        else:
            problems += check_params_file(file)
    seen = {}
    for node in graph.nodes:
        if node.executable not in EXECUTABLES:
            problems.append(f'node {node.key}: unknown executable {node.executable!r} (known: '
                            f'{", ".join(EXECUTABLES)})')
            continue
        if node.enabled:
            if node.fqn in seen:
                problems.append(f'nodes {seen[node.fqn]} and {node.key} are both {node.fqn}')
            seen[node.fqn] = node.key
        specs = spec_map(NODE_TABLES[node.table][1])
        per_camera = PER_CAMERA_TABLES.get(node.table, ())
        for name, value in node.parameters.items():
            spec = lookup_spec(specs, name, per_camera)
            if spec is None:
                problems.append(f'node {node.key}: parameter {name!r} is not declared by '
                                f'{node.executable}')
                continue
            reason = spec.validate(value)
            if reason:
                problems.append(f'node {node.key}: {reason}')
        problems += [f'node {node.key}: {p}' for p in unknown_cameras(node.parameters)]
        if node.enabled and node.executable == 'camera_player' and \
                not node.parameters.get('source'):
            problems.append(f'node {node.key}: the player needs parameters.source (adaqual '
                            'pipeline --source FILE)')
    return problems


def node_argv(node, python=None, log_level=None):
    """
    The command line that starts `node` as `python -m <module> --ros-args ...`.

    The params files come before the `-p` values: rcl applies them in order, so the graph's
    own parameters win over the params file.
    """
    from adaqual_ros.ros.demo_graph import node_command, ros_value

    argv = node_command(node.module, node.name, node.namespace, remaps=node.remaps)
    if python is not None:
        argv[0] = python
    for file in node.params_files:
        argv += ['--params-file', str(file)]
    for key, value in node.parameters.items():
        argv += ['-p', f'{key}:={ros_value(value)}']
    if log_level:
        argv += ['--log-level', log_level]
    return argv


def wait_for_nodes(fqns, timeout, alive=None):
    """
    Watch the ROS graph until every node in `fqns` is ready; return the ones still missing.

    Ready = the node has a topic of its own (our nodes create their publishers and subscriptions
    once their model or source has loaded), not just a name in the graph.

    Args:
        fqns (`iterable[str]`): fully qualified node names.
        timeout (`float`): most seconds to wait.
        alive (`callable`, *optional*): called every poll; return False to stop waiting early.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.signals import SignalHandlerOptions

    wanted = set(fqns)
    context = Context()
    # The caller handles Ctrl-C (it stops the children); keep rclpy's handler out of it.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('adaqual_pipeline_watch', context=context,
                             start_parameter_services=False)
    try:
        deadline = time.monotonic() + timeout
        ready = set()
        while True:
            for name, ns in node.get_node_names_and_namespaces():
                fqn = join_ns(ns, name)
                if fqn in wanted and fqn not in ready and _has_own_topics(node, name, ns):
                    ready.add(fqn)
            missing = wanted - ready
            if not missing or time.monotonic() > deadline or (alive and not alive()):
                return sorted(missing)
            time.sleep(0.25)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


def _has_own_topics(watcher, name, namespace):
    try:
        topics = (watcher.get_publisher_names_and_types_by_node(name, namespace)
                  + watcher.get_subscriber_names_and_types_by_node(name, namespace))
    except Exception:  # noqa: BLE001 - the node left the graph between two queries
        return False
    return any(topic not in _INFRA_TOPICS for topic, _ in topics)


_INFRA_TOPICS = {'/rosout', '/parameter_events'}


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to leave the supervision loop."""


class GraphProcesses:
    """
    The graph's node processes: start them, watch them, stop them (SIGINT, then kill).

    Args:
        log_dir (`Path`, *optional*): one log file per node there; None = this terminal.
        env (`dict`, *optional*): the children's environment (default: this process's).
    """

    def __init__(self, log_dir=None, env=None):
        self.log_dir = Path(log_dir) if log_dir else None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault('PYTHONUNBUFFERED', '1')
        self.procs = {}

    def start(self, key, argv):
        handle = None
        if self.log_dir:
            handle = open(self.log_dir / f'{key}.log', 'w')
            handle.write(' '.join(argv) + '\n')
            handle.flush()
        # A session of its own: a terminal Ctrl-C reaches only this process, which then stops
        # each child with exactly one SIGINT (a second one would interrupt its clean shutdown).
        proc = subprocess.Popen(argv, env=self.env, stdout=handle,
                                stderr=subprocess.STDOUT if handle else None,
                                start_new_session=True)
        self.procs[key] = (proc, handle)
        return proc

    def exited(self):
        """{key: exit code} of the children that have stopped."""
        return {key: proc.poll() for key, (proc, _) in self.procs.items()
                if proc.poll() is not None}

    def stop(self, timeout=20.0):
        """SIGINT every running child, wait up to `timeout`, kill the rest; return exit codes."""
        codes = stop_processes(self.procs, timeout)
        self.procs = {}
        return codes


def run_graph(graph, log_dir=None, duration=None, ready_timeout=120.0, log_level=None,
              say=print):
    """
    Start every enabled node of `graph`, supervise them, stop them all; return an exit code.

    Runs until Ctrl-C (SIGINT), SIGTERM, `duration` seconds or a node exiting on its own
    (then every other node is stopped too and the code is 1). Exit code 0 for a clean stop.

    Args:
        graph (`Graph`): the graph (see `load_graph`).
        log_dir (`Path`, *optional*): node logs there; default this terminal.
        duration (`float`, *optional*): stop after this many seconds.
        ready_timeout (`float`, *optional*): how long to wait for every node to appear.
        log_level (`str`, *optional*): ROS log level of every node.
        say (`callable`, *optional*): where progress lines go.
    """
    nodes = graph.enabled()
    if not nodes:
        raise GraphError('no enabled node in the graph')
    procs = GraphProcesses(log_dir)
    # Handlers of our own for both: a process started in the background by a shell inherits
    # SIGINT ignored, and would then never stop its children on Ctrl-C / kill -INT.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    code = 0
    try:
        for node in nodes:
            proc = procs.start(node.key, node_argv(node, log_level=log_level))
            say(f'started {node.key} ({node.executable} as {node.fqn}, pid {proc.pid})')
        missing = wait_for_nodes([n.fqn for n in nodes], ready_timeout,
                                 alive=lambda: not procs.exited())
        if not procs.exited():
            if missing:
                say(f'warning: not visible after {ready_timeout:.0f} s: {", ".join(missing)}')
            else:
                say(f'graph up: {len(nodes)} nodes in {time.monotonic() - started:.1f} s '
                    f'(namespace {graph.namespace}); Ctrl-C stops it')
        while True:
            dead = procs.exited()
            if dead:
                key, status = next(iter(dead.items()))
                where = f' (log: {procs.log_dir / (key + ".log")})' if procs.log_dir else ''
                say(f'node {key} exited with code {status}{where}; stopping the graph')
                code = 1
                break
            if duration is not None and time.monotonic() - started >= duration:
                say(f'{duration:g} s elapsed; stopping the graph')
                break
            time.sleep(0.2)
    except _Stop:
        say('stopping the graph')
    finally:
        # Ignore further signals while the children stop: a second Ctrl-C must not leave
        # them running.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            codes = procs.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    bad = {k: c for k, c in codes.items() if c not in (0, -signal.SIGINT)}
    say('stopped: ' + ', '.join(f'{k} {c}' for k, c in codes.items()))
    if bad and code == 0:
        code = 1
    return code


def _raise_stop(signum, frame):
    raise _Stop()


def describe(graph):
    """Human-readable lines: each node, its command line and whether it starts."""
    lines = [f'graph {graph.source} (namespace {graph.namespace})']
    for node in graph.nodes:
        state = '' if node.enabled else '  [disabled]'
        lines.append(f'{node.key}: {node.executable} as {node.fqn}{state}')
        lines.append('  ' + shlex.join(node_argv(node, python='python')))
    return lines
