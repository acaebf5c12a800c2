"""
Helpers for ROS tests: every test run gets its own DDS domain on localhost only.

Nodes under test run as real subprocesses (`spawn`); in-process probe nodes use the same env.
"""
import os
from pathlib import Path
import subprocess
import sys

import pytest

try:
    import rclpy  # noqa: F401
    HAVE_RCLPY = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_RCLPY = False

REPO = Path(__file__).resolve().parents[2]


def _domain_id():
    # 1..200, spread by pid so parallel runs on one machine do not cross-talk.
    return 1 + os.getpid() % 200


@pytest.fixture(scope='session')
def ros_env():
    """Environment for ROS subprocesses; also applied to this process for probe nodes."""
    if not HAVE_RCLPY:
        pytest.skip('rclpy is not importable (install the ROS 2 wheels: make test does)')
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(_domain_id())
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['PYTHONUNBUFFERED'] = '1'
    env.pop('ROS_LOCALHOST_ONLY', None)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')})
    return env


@pytest.fixture
def spawn(ros_env, tmp_path):
    """
    Start `python -m module args...` (or `python path/to/script.py args...`) as a subprocess.

    Test fixtures are scripts (test/ros/fixtures/*.py): `python -m test...` would resolve to the
    standard library's `test` package. All processes are stopped after the test.
    """
    procs = []

    def _spawn(module, *args, env=None, log_name=None):
        log = tmp_path / (log_name or f'{Path(module).stem.rsplit(".", 1)[-1]}_{len(procs)}.log')
        handle = open(log, 'w')
        target = [str(REPO / module)] if module.endswith('.py') else ['-m', module]
        proc = subprocess.Popen([sys.executable, *target, *args], cwd=REPO,
                                env={**ros_env, **(env or {})}, stdout=handle,
                                stderr=subprocess.STDOUT)
        proc.log_path = log
        procs.append((proc, handle))
        return proc

    yield _spawn
    for proc, handle in procs:
        if proc.poll() is None:
            proc.send_signal(2)  # SIGINT: a clean shutdown path, like Ctrl-C
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        handle.close()
