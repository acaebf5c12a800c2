"""Stopping the graph launchers' node processes: SIGINT, then a stack dump and a kill."""
import signal
import subprocess
import sys
import time

from adaqual_ros.ros.processes import stop_processes

# Registers the stack dump as run_node does; ignores SIGINT unless told to stop on it.
CHILD = """
import faulthandler, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)
if sys.argv[1] == 'hang':
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    # rclpy.init installs its SIGINT handler whatever the launcher left; a shell's background
    # job (`cmd &`) starts with SIGINT ignored, which a plain Python child would keep.
    signal.signal(signal.SIGINT, signal.default_int_handler)
print('ready', flush=True)
def waiting_for_ever():
    while True:
        time.sleep(0.05)
try:
    waiting_for_ever()
except KeyboardInterrupt:
    sys.exit(0)
"""


def start(tmp_path, name, mode):
    log = open(tmp_path / f'{name}.log', 'w')
    proc = subprocess.Popen([sys.executable, '-c', CHILD, mode], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while 'ready' not in (tmp_path / f'{name}.log').read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    return proc, log


def test_a_node_that_stops_on_sigint_exits_0_and_one_that_hangs_is_dumped_and_killed(tmp_path):
    procs = {'good': start(tmp_path, 'good', 'stop'), 'stuck': start(tmp_path, 'stuck', 'hang')}
    t0 = time.monotonic()
    codes = stop_processes(procs, timeout=1.0)
    assert codes == {'good': 0, 'stuck': -signal.SIGKILL}
    assert time.monotonic() - t0 < 10
    stuck = (tmp_path / 'stuck.log').read_text()
    # where it hung, then why it ended; the log written before is kept
    assert stuck.startswith('ready')
    assert 'waiting_for_ever' in stuck
    assert 'no exit 1 s after SIGINT: killed' in stuck
    assert 'killed' not in (tmp_path / 'good.log').read_text()
    assert all(log.closed for _, log in procs.values())
