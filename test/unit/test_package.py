"""Package-level guarantees: offline defaults, layering, CLI wiring."""
import os
from pathlib import Path
import re
import subprocess
import sys

PKG = Path(__file__).resolve().parents[2] / 'adaqual_ros'


def test_import_sets_offline_defaults_without_overriding_user():
    code = ('import os; os.environ["YOLO_OFFLINE"]="0"; import adaqual_ros; '
            'print(os.environ["YOLO_OFFLINE"], os.environ["YOLO_AUTOINSTALL"])')
    env = {k: v for k, v in os.environ.items() if not k.startswith('YOLO_')}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['0', '0']
    code = 'import os, adaqual_ros; print(os.environ["YOLO_OFFLINE"])'
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['1']


def test_only_ros_layer_imports_rclpy():
    pattern = re.compile(r'^\s*(import rclpy|from rclpy)', re.M)
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob('*.py')
                 if p.parent.name != 'ros' and pattern.search(p.read_text())]
    assert offenders == []


def test_cli_lists_subcommands():
    out = subprocess.run([sys.executable, '-m', 'adaqual_ros.cli.main', '--help'],
                         capture_output=True, text=True, check=True).stdout
    for name in ('synth', 'eval-quality', 'train', 'bench', 'evaluate', 'demo', 'soak'):
        assert name in out
