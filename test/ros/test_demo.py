"""
`adaqual demo` end to end: the real graph (player, restoration, three YOLO nodes, metrics), each
node its own process, on a short stream, must produce a complete report.

The demo runs as a subprocess in this test session's own DDS domain (the `ros_env` fixture); the
classical restoration backend keeps it short.
"""
import json
from pathlib import Path
import subprocess
import sys

import cv2
import pytest

REPO = Path(__file__).resolve().parents[2]
FRAMES = 3


def run_demo(env, out, *args, timeout=240):
    cmd = [sys.executable, '-m', 'adaqual_ros.cli.main', 'demo', '--out', str(out),
           '--frames', str(FRAMES), '--backend', 'classical', '--width', '320', *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads((out / 'report.json').read_text())


def check_common(out, report, conditions):
    assert report['conditions'] == list(conditions)
    assert report['status'] == 'complete'
    # Every node was stopped with SIGINT and exited cleanly.
    codes = report['graph']['exit_codes']
    assert codes and all(code == 0 for code in codes.values()), (codes, {
        name: (out / 'logs' / f'{name}.log').read_text()[-3000:]
        for name, code in codes.items() if code and (out / 'logs' / f'{name}.log').is_file()})
    for cond in conditions:
        counts = report['accounting'][cond]
        assert counts['played'] == FRAMES, counts
        assert 1 <= counts['restored'] <= FRAMES, counts
    restoration = report['restoration']
    # The clean pass's raw frame is the clean frame; weather makes the raw frame differ from it.
    assert restoration['clean']['raw_ssim'] == pytest.approx(1.0)
    assert restoration['haze']['raw_psnr'] < 30.0
    assert restoration['haze']['frames'] >= 1
    assert report['latency_ms']['restoration']['count'] >= len(conditions)
    # The restoration node's per-frame JSON (backend, stage timings) reached the demo.
    assert report['backends'].get('classical', 0) >= len(conditions), report['backends']
    assert restoration['haze']['stage_ms_p50'].get('total', 0) > 0
    md = (out / 'report.md').read_text()
    assert '## Restoration quality' in md and '## Frame accounting' in md
    strip = cv2.imread(str(out / 'frames_strip.png'))
    assert strip is not None
    # One row per condition, four tiles per row (raw, restored, quality map, clean).
    frame = cv2.imread(str(sorted((out / 'stream').glob('frame_*.png'))[0]))
    tile_w = strip.shape[1] // 4
    assert strip.shape[1] == 4 * tile_w
    assert strip.shape[0] == len(conditions) * round(frame.shape[0] * tile_w / frame.shape[1])
    for name in ('restoration_quality.png', 'latency.png'):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.ros
def test_demo_graph_with_detector_writes_a_complete_report(ros_env, asset, tmp_path):
    detector = asset('models/yolov8n_int8.onnx')
    video = asset('data/video/people.mp4')
    out = tmp_path / 'demo'
    conditions = ('clean', 'haze')
    stdout, report = run_demo(ros_env, out, '--conditions', ','.join(conditions),
                              '--detector', str(detector), '--video', str(video),
                              '--rate', '1.0')
    check_common(out, report, conditions)
    assert 'Detection (reference: the detector on the clean frames)' in stdout
    per_cond = report['detection_per_condition']
    for cond in conditions:
        assert per_cond[cond]['raw']['images'] >= 1
        assert per_cond[cond]['raw']['instances'] > 0  # people.mp4 has people in every frame
    # On the clean pass the raw frame is its own reference.
    assert per_cond['clean']['raw']['recall'] == pytest.approx(1.0)
    # The metrics node (its own process, pairing by stamp) and the demo's recorder scored the
    # same weather frames independently: they must agree.
    node = report['metrics_node']['results']
    mine = per_cond['all weather']
    for row in ('raw', 'restored'):
        assert node[row]['images'] == mine[row]['images']
        for key in ('precision', 'recall', 'mAP50', 'mAP50-95'):
            assert node[row][key] == pytest.approx(mine[row][key], abs=1e-4), (row, key)
    assert (out / 'metrics_node' / 'report.json').is_file()
    # Agreement needs no reference: the clean pass counts there too.
    agreement = report['metrics_node']['agreement']
    assert agreement['images'] > node['raw']['images']
    assert f'Raw vs restored on the same {agreement["images"]} frames' in \
        (out / 'report.md').read_text()
    for name in ('mAP50_per_condition.png', 'recall_per_condition.png', 'metrics.png'):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.ros
def test_demo_on_a_fresh_machine_without_detector(ros_env, tmp_path):
    """No assets, no detector: sample pictures from installed packages, restoration report."""
    env = {k: v for k, v in ros_env.items() if k not in ('ADAQUAL_ASSETS', 'ADAQUAL_DETECTOR')}
    out = tmp_path / 'fresh'
    conditions = ('clean', 'haze')
    stdout, report = run_demo(env, out, '--conditions', ','.join(conditions), '--rate', '1.5')
    assert 'NO DETECTOR' in stdout
    assert report['meta']['detector'] == 'none found offline'
    assert 'sample pictures' in report['meta']['stream']
    assert report['detection_per_condition'] == {}
    check_common(out, report, conditions)


@pytest.mark.ros
def test_demo_set_reaches_the_restoration_node(ros_env, tmp_path):
    """--set skip_threshold=1.0: every region counts as clean, the node passes frames through."""
    env = {k: v for k, v in ros_env.items() if k not in ('ADAQUAL_ASSETS', 'ADAQUAL_DETECTOR')}
    out = tmp_path / 'set'
    stdout, report = run_demo(env, out, '--conditions', 'haze', '--rate', '1.5',
                              '--set', 'skip_threshold=1.0')
    assert 'restoration parameters: skip_threshold=1.0' in stdout
    assert report['meta']['restoration_params'] == {'skip_threshold': 1.0}
    haze = report['restoration']['haze']
    assert haze['frames'] >= 1 and haze['skipped_fraction'] == 1.0
    assert haze['restored_psnr'] == haze['raw_psnr'] < 30.0


# ---- the conductor's pure helpers (no processes) -----------------------------------------------

def test_node_command_and_values_round_trip_through_ros_yaml():
    demo_graph = pytest.importorskip('adaqual_ros.ros.demo_graph')
    assert demo_graph.ros_value(True) == 'true'
    assert demo_graph.ros_value(2.0) == '2.0'  # stays a double
    assert demo_graph.ros_value(3) == '3'
    assert demo_graph.ros_value('/tmp/x') == '/tmp/x'
    assert demo_graph.ros_value('0') == "'0'"  # a string that YAML would read as a number
    cmd = demo_graph.node_command('adaqual_ros.ros.player_node', 'p', '/ns',
                                  {'publish_rate': 1.0, 'condition': 'haze'}, {'a': 'b/c'})
    assert cmd[1:] == ['-m', 'adaqual_ros.ros.player_node', '--ros-args', '-r', '__node:=p',
                       '-r', '__ns:=/ns', '-p', 'publish_rate:=1.0', '-p', 'condition:=haze',
                       '-r', 'a:=b/c']


def test_graph_env_keeps_the_users_domain_and_defaults_to_localhost():
    demo_graph = pytest.importorskip('adaqual_ros.ros.demo_graph')
    env = demo_graph.graph_env({'PATH': '/bin'})
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert 1 <= int(env['ROS_DOMAIN_ID']) <= 100
    env = demo_graph.graph_env({'ROS_DOMAIN_ID': '7', 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'})
    assert env['ROS_DOMAIN_ID'] == '7' and env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'SUBNET'


def test_pacer_rate_covers_the_slowest_node_and_the_shared_cpu(monkeypatch):
    demo_graph = pytest.importorskip('adaqual_ros.ros.demo_graph')
    monkeypatch.setattr(demo_graph.os, 'cpu_count', lambda: 2)
    pacer = demo_graph.Pacer(None, None, rate=2.0, enabled=True, headroom=1.0)
    assert pacer.target({}) == 2.0
    # One slow node: its time sets the interval.
    assert pacer.target({'restoration': 1000.0, 'detection raw': 100.0}) == pytest.approx(1.0)
    # Many busy nodes on two cores: their summed time, halved, sets it.
    assert pacer.target(dict.fromkeys('abcd', 800.0)) == pytest.approx(1000.0 / 1600.0)
    # Never above the configured rate, never below the player's minimum.
    assert pacer.target({'restoration': 1.0}) == 2.0
    assert pacer.target({'restoration': 1e6}) == pytest.approx(0.1)
