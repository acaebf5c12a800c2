"""
Launch files, config/*.yaml and `adaqual pipeline`: names that exist, parameters that are declared.

The launch files are read as text (their AST): `launch` is not installed here and nothing in the
tests imports it. `adaqual pipeline` runs for real, as a subprocess starting node subprocesses.
"""
import ast
import json
import os
from pathlib import Path
import re
import signal
import time

import pytest
import yaml

from adaqual_ros.ros import params as ros_params
from adaqual_ros.ros import pipeline_graph
from adaqual_ros.ros.pipeline_graph import GraphError, check_graph, load_graph

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
CONFIGS = sorted((REPO / 'config').glob('*.yaml'))
GRAPH = REPO / 'config' / 'pipeline.yaml'
CAMERAS_GRAPH = REPO / 'config' / 'pipeline_cameras.yaml'
DETECTOR = 'models/yolov8n_int8.onnx'
FOGGY = 'data/dawn_fog_dev/images/foggy-001.jpg'


def console_scripts():
    """{script: 'module:function'} from setup.py's entry_points, read without running it."""
    tree = ast.parse((REPO / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    items = ast.literal_eval(value)
                    return dict(item.replace(' ', '').split('=', 1) for item in items)
    raise AssertionError('no console_scripts in setup.py')


def launch_calls(path, func='Node'):
    """The keyword arguments (source text per name) of every `func(...)` call in a file."""
    tree = ast.parse(path.read_text())
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == func:
            calls.append({kw.arg: kw.value for kw in node.keywords})
    return calls


def test_launch_files_name_only_installed_executables():
    scripts = console_scripts()
    assert {'restoration_node', 'detection_node', 'metrics_node', 'camera_player'} <= set(scripts)
    names = {p.name for p in LAUNCH_FILES}
    assert {'adaqual.launch.py', 'adaqual_pipeline.launch.py'} <= names
    for path in LAUNCH_FILES:
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description'
                   for n in tree.body), path.name
        for call in launch_calls(path):
            assert call['package'].value == 'adaqual_ros', path.name
            executable = call['executable']
            if isinstance(executable, ast.Constant):
                assert executable.value in scripts, (path.name, executable.value)
            else:
                # Taken from the graph file: those names are checked just below.
                assert 'build_graph' in path.read_text(), path.name
    # The pipeline launch file and `adaqual pipeline` take their executables from the graph.
    for node in load_graph(GRAPH).nodes:
        assert node.executable in scripts, node.executable
    # ... and `adaqual pipeline` runs each as `python -m module`: the module setup.py names.
    for script, (module, table) in pipeline_graph.EXECUTABLES.items():
        assert scripts[script] == f'{module}:main'
        assert table in ros_params.NODE_TABLES


def test_launch_parameter_overrides_are_declared():
    declared = set(ros_params.spec_map(ros_params.RESTORATION_PARAMS))
    for path in LAUNCH_FILES:
        for name in re.findall(r'\{key: arg\(key\) for key in \(([^)]*)\)', path.read_text()):
            for key in ast.literal_eval(f'({name})'):
                assert key in declared, (path.name, key)
    # The pipeline launch file passes its arguments to build_graph by name: each is declared
    # there, and each shortcut sets a parameter the nodes it reaches declare.
    tree = ast.parse((REPO / 'launch' / 'adaqual_pipeline.launch.py').read_text())
    declared_args = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and getattr(node.func, 'id', None) == 'DeclareLaunchArgument'}
    assert set(pipeline_graph.GRAPH_ARGUMENTS) <= declared_args
    tables = {exe: ros_params.NODE_TABLES[table][1]
              for exe, (_, table) in pipeline_graph.EXECUTABLES.items()}
    for name, executables in pipeline_graph.SHORTCUTS.values():
        for exe in executables:
            assert name in ros_params.spec_map(tables[exe]), (exe, name)


def test_build_graph_shortcuts_reach_every_node_of_their_kind(tmp_path):
    """What `adaqual pipeline` and the pipeline launch file set from their arguments."""
    clip, model, mine = tmp_path / 'clip.mp4', tmp_path / 'model.onnx', tmp_path / 'mine.onnx'
    for path in (clip, model, mine):
        path.write_bytes(b'')
    graph = pipeline_graph.build_graph(
        GRAPH, overrides={'detect_raw': {'model': str(mine)}}, source=str(clip),
        detector=str(model), backend='classical', device='cpu', report_dir=str(tmp_path),
        image='/cam/image_raw')
    assert graph['restoration'].parameters['backend'] == 'classical'
    assert [graph[k].parameters['device'] for k in ('restoration', 'detect_raw',
                                                     'detect_restored', 'detect_clean')] == \
        ['cpu'] * 4
    assert 'device' not in graph['metrics'].parameters
    # an override names its node and wins over the shortcut
    assert graph['detect_raw'].parameters['model'] == str(mine)
    assert graph['detect_restored'].parameters['model'] == str(model)
    assert graph['metrics'].parameters['report_dir'] == str(tmp_path)
    # a source starts the player and the clean-frame detector the file leaves off
    assert graph['player'].parameters['source'] == str(clip.resolve())
    assert {'player', 'detect_clean'} <= {n.key for n in graph.enabled()}
    assert graph['detect_raw'].remaps['image_raw'] == '/cam/image_raw'
    assert check_graph(graph) == []
    missing = pipeline_graph.build_graph(GRAPH, detector=str(tmp_path / 'none.onnx'))
    assert any('none.onnx' in problem for problem in check_graph(missing))
    # nothing given: the file as it is
    plain = pipeline_graph.build_graph(GRAPH, backend='', source=None)
    assert [n.key for n in plain.enabled()] == [n.key for n in load_graph(GRAPH).enabled()]
    assert 'backend' not in plain['restoration'].parameters
    # the two-camera graph: one restoration and one detection node, whatever their keys
    cams = pipeline_graph.build_graph(CAMERAS_GRAPH, backend='passthrough', device='cpu')
    assert cams['restoration'].parameters['backend'] == 'passthrough'
    assert cams['detection'].parameters['device'] == 'cpu'
    with pytest.raises(GraphError, match='no such file or folder'):
        pipeline_graph.build_graph(GRAPH, source=str(tmp_path / 'missing.mp4'))
    with pytest.raises(GraphError, match='no camera_player node'):
        pipeline_graph.build_graph(CAMERAS_GRAPH, source=str(clip))
    with pytest.raises(TypeError, match='unknown shortcut'):
        pipeline_graph.build_graph(GRAPH, conf=0.3)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_every_config_parameter_is_declared_by_its_node(path):
    data = yaml.safe_load(path.read_text())
    if 'nodes' in data:  # a graph file
        graph = load_graph(path, enable=list(data['nodes']),
                           overrides={'player': {'source': str(REPO)}}
                           if 'player' in data['nodes'] else None)
        assert check_graph(graph) == []
        assert len({n.fqn for n in graph.nodes}) == len(graph.nodes)
    else:
        assert ros_params.check_params_file(path) == []
        for key in data:
            assert key.startswith('/**/'), f'{key}: would only match the root namespace'


def test_graph_file_checks_and_overrides(tmp_path):
    graph = load_graph(GRAPH, namespace='front', overrides={'detect_raw': {'conf': 0.4}})
    assert graph.namespace == '/front'
    raw, restored = graph['detect_raw'], graph['detect_restored']
    assert (raw.fqn, restored.fqn) == ('/front/raw/adaqual_detection',
                                       '/front/restored/adaqual_detection')
    assert raw.remaps['image_raw'] == '/front/image_raw' and raw.parameters['conf'] == 0.4
    assert [n.key for n in graph.enabled()] == ['restoration', 'detect_raw', 'detect_restored',
                                                'metrics']
    assert graph['restoration'].params_files == [REPO / 'config' / 'params.yaml']
    pipeline_graph.retarget_image(graph, '/cam/image_raw')
    assert raw.remaps['image_raw/compressed'] == '/cam/image_raw/compressed'
    # The two-camera graph remaps front/ and rear/ in its file: one topic cannot retarget it.
    with pytest.raises(GraphError, match='no node of this graph reads image_raw'):
        pipeline_graph.retarget_image(load_graph(CAMERAS_GRAPH), '/cam/image_raw')
    # Per-camera rows of the restoration node: declared for the cameras it serves, no others.
    assert check_graph(load_graph(CAMERAS_GRAPH, overrides={'restoration': {
        'camera.rear.enabled': False, 'camera.front.skip_threshold': 3.5}})) == []
    assert check_graph(load_graph(CAMERAS_GRAPH, overrides={'restoration': {
        'camera.back.enabled': False}})) == [
        "node restoration: camera.back.enabled names no camera of cameras='front,rear'"]
    assert pipeline_graph.parse_overrides(['restoration.steps=3', "a.b='7'", 'a.c=']) == {
        'restoration': {'steps': 3}, 'a': {'b': '7', 'c': ''}}
    with pytest.raises(GraphError, match='NODE.PARAM=VALUE'):
        pipeline_graph.parse_overrides(['backend=classical'])
    with pytest.raises(GraphError, match="no node 'nope'"):
        load_graph(GRAPH, overrides={'nope': {'x': 1}})
    bad = tmp_path / 'bad.yaml'
    bad.write_text('nodes:\n  a: {executable: restoration_node, parameters: {stepz: 2, '
                   'steps: 0}}\n  b: {executable: restoration_node, name: a}\n'
                   '  c: {executable: yolo_node}\n')
    problems = '\n'.join(check_graph(load_graph(bad)))
    assert "parameter 'stepz' is not declared by restoration_node" in problems
    assert 'steps must be in [1, 50]' in problems
    assert 'nodes a and b are both /a' in problems
    assert "unknown executable 'yolo_node'" in problems
    bad.write_text('nodes:\n  a: {executable: restoration_node, remap: {}}\n')
    with pytest.raises(GraphError, match=r"unknown keys \['remap'\]"):
        load_graph(bad)


@pytest.mark.ros
def test_node_argv_applies_params_file_then_graph_values(ros_env, tmp_path):
    """The command line of a graph node, given to rcl: file values, then the graph's on top."""
    import rclpy
    from rclpy.context import Context

    data = yaml.safe_load((REPO / 'config' / 'params.yaml').read_text())
    section = data['/**/adaqual_detection']['ros__parameters']
    section.update(iou=0.55, conf=0.3)  # not the defaults, so the file's values are seen
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump(data))
    graph = load_graph(GRAPH, params_file=str(params), overrides={'detect_raw': {'conf': 0.4}})
    argv = pipeline_graph.node_argv(graph['detect_raw'])
    assert argv[1:3] == ['-m', 'adaqual_ros.ros.detection_node']
    assert argv.index('--params-file') < argv.index('-p')
    context = Context()
    rclpy.init(context=context, args=argv[3:])
    try:
        node = rclpy.create_node('placeholder', context=context)
        assert node.get_fully_qualified_name() == '/adaqual/raw/adaqual_detection'
        binding = ros_params.ParamBinding(node, ros_params.DETECTION_PARAMS)
        assert (binding['iou'], binding['conf']) == (0.55, 0.4)
        # The remap points the raw detector at the graph's camera topic.
        assert node.resolve_topic_name('image_raw') == '/adaqual/image_raw'
        assert node.resolve_topic_name('detections') == '/adaqual/raw/detections'
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def _pids(log_text):
    return [int(p) for p in re.findall(r', pid (\d+)\)', log_text)]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.ros
def test_adaqual_pipeline_brings_the_graph_up_and_stops_on_sigint(spawn, ros_env, asset,
                                                                  tmp_path):
    from fixtures.restoration_probe import Probe, find_stamp, image_msg
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from adaqual_ros.io.video import read_image

    model = asset(DETECTOR)
    rgb = read_image(asset(FOGGY))[::4, ::4]  # a small real frame keeps YOLO quick
    ns = '/t_pipeline'
    report = tmp_path / 'report'
    proc = spawn('adaqual_ros.cli.main', 'pipeline', '--params', str(GRAPH), '--namespace', ns,
                 '--detector', str(model), '--log-dir', str(tmp_path / 'logs'),
                 '--set', 'restoration.backend=classical',
                 '--set', 'restoration.quality_backend=classical',
                 '--set', 'restoration.device=cpu', '--set', 'restoration.threads=1',
                 '--set', f'metrics.report_dir={report}', '--set', 'metrics.plots=false')
    probe = Probe(ns)
    try:
        restored = probe.record('restored/image_raw', Image)
        dets = {s: probe.record(f'{s}/detections', String) for s in ('raw', 'restored')}
        pub = probe.publisher('image_raw', Image)

        def log():
            return proc.log_path.read_text()[-3000:]
        assert probe.spin_until(lambda: 'graph up' in proc.log_path.read_text()
                                or proc.poll() is not None, timeout=150.0), log()
        assert proc.poll() is None, log()
        # Both the restoration node and the raw detector read image_raw.
        assert probe.spin_until(lambda: pub.get_subscription_count() >= 2, 30.0), log()
        probe.wait_matched(pub, 'reliable', timeout=30.0)
        # A fresh stamp per try: the nodes drop repeated stamps by design, and a frame sent
        # before every output is matched is dropped for lack of listeners.
        sent = []

        def send_and_check():
            if not sent or time.monotonic() - sent[-1][1] > 0.5:
                stamp = (1_700_000_321 + len(sent), 5)
                pub.publish(image_msg(rgb, 'rgb8', stamp, frame_id='front_camera'))
                sent.append((stamp, time.monotonic()))
            return any(find_stamp(restored, st) is not None
                       and all(_stamp_in(dets[s], st) for s in dets) for st, _ in sent)
        assert probe.spin_until(send_and_check, timeout=90.0), log()
        stamp = next(st for st, _ in sent if find_stamp(restored, st) is not None
                     and all(_stamp_in(dets[s], st) for s in dets))
        out = find_stamp(restored, stamp)
        assert (out.height, out.width, out.encoding, out.header.frame_id) == (
            *rgb.shape[:2], 'rgb8', 'front_camera')
        for stream in dets:
            body = _stamp_in(dets[stream], stamp)
            assert body['image_size'] == list(rgb.shape[:2]) and body['model'] == model.name
    finally:
        probe.close()
    pids = _pids(proc.log_path.read_text())
    assert len(pids) == 4
    codes, text = _interrupt(proc)
    assert codes == {'restoration': '0', 'detect_raw': '0', 'detect_restored': '0',
                     'metrics': '0'}, text[-2000:]
    assert not [pid for pid in pids if _alive(pid)], 'node processes left behind'
    # The metrics node wrote its report on the way down (report_on_shutdown).
    assert json.loads((report / 'report.json').read_text())


@pytest.mark.ros
def test_the_two_camera_graph_restores_and_detects_on_all_four_streams(spawn, ros_env, asset,
                                                                        tmp_path):
    """config/pipeline_cameras.yaml as shipped: each camera's frames come back restored and
    detected on both of its streams, from two processes with one model each, and each camera's
    metrics node reports raw vs restored agreement on the way down."""
    from fixtures.restoration_probe import Probe, find_stamp, image_msg
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from adaqual_ros.io.video import read_image

    model = asset(DETECTOR)
    frames = {'front': read_image(asset(FOGGY))[::4, ::4],
              'rear': read_image(asset(FOGGY))[::5, ::5]}  # another size: no mix-up unseen
    ns = '/t_cameras'
    proc = spawn('adaqual_ros.cli.main', 'pipeline', '--params', str(CAMERAS_GRAPH),
                 '--namespace', ns, '--detector', str(model), '--log-dir', str(tmp_path / 'logs'),
                 '--set', 'restoration.backend=classical',
                 '--set', 'restoration.quality_backend=classical',
                 '--set', 'restoration.device=cpu', '--set', 'restoration.threads=1',
                 *(arg for cam in frames for arg in (
                     '--set', f'metrics_{cam}.report_dir={tmp_path / cam}',
                     '--set', f'metrics_{cam}.plots=false')))
    probe = Probe(ns)
    try:
        restored = {cam: probe.record(f'{cam}/restored/image_raw', Image) for cam in frames}
        dets = {s: probe.record(f'{s}/detections', String)
                for cam in frames for s in (cam, f'{cam}/restored')}
        # The graph's remaps point the cameras at these drivers' topics (absolute names).
        pubs = {cam: probe.publisher(f'/{cam}_camera/image_raw', Image) for cam in frames}

        def log():
            return proc.log_path.read_text()[-3000:]
        assert probe.spin_until(lambda: 'graph up' in proc.log_path.read_text()
                                or proc.poll() is not None, timeout=150.0), log()
        assert proc.poll() is None, log()
        for pub in pubs.values():  # read by the restoration node and the detection node
            assert probe.spin_until(lambda p=pub: p.get_subscription_count() >= 2, 30.0), log()
            probe.wait_matched(pub, 'reliable', timeout=30.0)
        for stream in dets:  # this probe and the camera's metrics node listen to each
            topic = probe.topic(f'{stream}/detections')
            assert probe.spin_until(lambda t=topic: probe.node.count_subscribers(t) >= 2,
                                    30.0), (topic, log())
        sent = {cam: [] for cam in frames}

        def answered(cam, stamp):
            return (find_stamp(restored[cam], stamp) is not None
                    and all(_stamp_in(dets[s], stamp) for s in (cam, f'{cam}/restored')))

        def send_and_check():
            for k, cam in enumerate(frames):
                if not sent[cam] or time.monotonic() - sent[cam][-1][1] > 0.5:
                    stamp = (1_700_000_400 + 100 * k + len(sent[cam]), 7)
                    pubs[cam].publish(image_msg(frames[cam], 'rgb8', stamp, frame_id=cam))
                    sent[cam].append((stamp, time.monotonic()))
            return all(any(answered(cam, st) for st, _ in sent[cam]) for cam in frames)
        assert probe.spin_until(send_and_check, timeout=120.0), log()
        for cam, rgb in frames.items():
            stamp = next(st for st, _ in sent[cam] if answered(cam, st))
            out = find_stamp(restored[cam], stamp)
            assert (out.height, out.width, out.header.frame_id) == (*rgb.shape[:2], cam)
            for stream in (cam, f'{cam}/restored'):
                body = _stamp_in(dets[stream], stamp)
                assert body['image_size'] == list(rgb.shape[:2]) and body['model'] == model.name
        # Each camera's metrics node has paired an answered frame (it may trail this probe).
        for cam in frames:
            def agreed(cam=cam):
                reply = probe.call(Trigger, f'{cam}/write_report', Trigger.Request(), 30.0)
                return reply.success and json.loads(reply.message)['agreement']['images'] >= 1
            assert probe.spin_until(agreed, timeout=30.0), log()
    finally:
        probe.close()
    codes, text = _interrupt(proc)
    assert codes == {'restoration': '0', 'detection': '0', 'metrics_front': '0',
                     'metrics_rear': '0'}, text[-2000:]
    for cam in frames:  # no reference on a robot: agreement only, over the frames answered
        doc = json.loads((tmp_path / cam / 'report.json').read_text())
        assert doc['agreement']['restored']['images'] >= 1 and doc['results'] == {}, doc


def _exit_codes(text):
    """{node key: exit code} from the 'stopped: ...' line `adaqual pipeline` prints."""
    return dict(re.findall(r'(\w+) (-?\d+)', text.split('stopped: ', 1)[1].splitlines()[0]))


def _interrupt(proc):
    """Ctrl-C an `adaqual pipeline` process; it must exit 0. Returns (exit codes, its log)."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=45) == 0, proc.log_path.read_text()[-3000:]
    text = proc.log_path.read_text()
    return _exit_codes(text), text


def _stamp_in(messages, stamp):
    want = stamp[0] * 10**9 + stamp[1]
    for msg in messages:
        body = json.loads(msg.data)
        if body.get('stamp_ns') == want:
            return body
    return None


@pytest.mark.ros
def test_a_node_stopped_while_starting_exits_cleanly(spawn):
    # The pipeline stops its graph when a node dies; a sibling still starting then sees its
    # context shut down under its constructor: a stop, not a failure (no FATAL, exit 0).
    proc = spawn('test/ros/fixtures/stopped_while_starting.py')
    assert proc.wait(timeout=60) == 0, proc.log_path.read_text()
    assert 'cannot start' not in proc.log_path.read_text()


@pytest.mark.ros
def test_adaqual_pipeline_stops_the_graph_when_a_node_dies(spawn, tmp_path):
    junk = tmp_path / 'broken.onnx'
    junk.write_bytes(b'not an onnx model' * 10)
    graph = tmp_path / 'graph.yaml'
    graph.write_text(yaml.safe_dump({
        'namespace': '/t_pipeline_dies',
        'params_file': str(REPO / 'config' / 'params.yaml'),
        'nodes': {'metrics': {'executable': 'metrics_node', 'name': 'adaqual_metrics',
                              'parameters': {'report_on_shutdown': False}},
                  'detect': {'executable': 'detection_node', 'name': 'adaqual_detection',
                             'parameters': {'model': str(junk)}}}}))
    proc = spawn('adaqual_ros.cli.main', 'pipeline', '--params', str(graph),
                 '--log-dir', str(tmp_path / 'logs'))
    assert proc.wait(timeout=120) == 1
    text = proc.log_path.read_text()
    assert 'node detect exited with code 1' in text, text
    codes = _exit_codes(text)
    # The detector dies at once; metrics may still be importing then, and a SIGINT before rclpy
    # installs its handler ends it by the signal (-2), which the pipeline counts as a stop too.
    assert codes['detect'] == '1' and codes['metrics'] in ('0', '-2'), text
    assert set(codes) == {'metrics', 'detect'}, text
    assert 'cannot use detector' in (tmp_path / 'logs' / 'detect.log').read_text()
    assert not [pid for pid in _pids(text) if _alive(pid)]
