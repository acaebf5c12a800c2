"""
Child node processes of the graph launchers (`adaqual pipeline`, `adaqual demo`): stopping them.

No rclpy here: the launchers only start and signal processes.
"""
import signal
import subprocess
import time


def stop_processes(procs, timeout):
    """
    Stop node processes: SIGINT to every running one, wait up to ``timeout`` seconds in all, and
    kill what is left, after asking it for its threads' stacks (SIGUSR1, `run_node`), which land
    in its log, so that a hang can be told from a slow exit.

    Args:
        procs (`dict`): name -> (subprocess.Popen, open log file or None); the files are closed.
        timeout (`float`): seconds for all of them together.

    Returns:
        `dict` name -> exit status (negative: the signal that ended it).
    """
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    codes = {}
    for name, (proc, log) in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if hasattr(signal, 'SIGUSR1'):
                proc.send_signal(signal.SIGUSR1)
                try:
                    proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if log is not None:
                log.write(f'\n[stopped] no exit {timeout:.0f} s after SIGINT: killed\n')
        codes[name] = proc.returncode
        if log is not None:
            log.close()
    return codes
