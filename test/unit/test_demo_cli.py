"""`adaqual demo --set PARAM=VALUE`: restoration-node parameters for a demo run, checked first."""
from pathlib import Path

import pytest

from adaqual_ros.cli.demo import parse_restoration_params
from adaqual_ros.cli.main import main


def test_set_reads_values_like_ros_and_checks_them(tmp_path):
    got = parse_restoration_params(['steps=1', 'skip_threshold=4', 'cache.enabled=false',
                                    f'model_path={tmp_path}', 'device=cpu'])
    # an integer for a double parameter becomes a double, as the node declares it
    assert got == {'steps': 1, 'skip_threshold': 4.0, 'cache.enabled': False,
                   'model_path': str(tmp_path.resolve()), 'device': 'cpu'}
    assert isinstance(got['skip_threshold'], float)
    assert parse_restoration_params([]) == {}
    for item, reason in [('steps', 'not PARAM=VALUE'),
                         ('stpes=1', 'no such parameter'),
                         ('steps=0', r'steps must be in \[1, 50\]'),
                         ('tile_size=100', 'multiple of 64'),
                         ('steps=two', 'steps must be an integer'),
                         ('backend=classical', 'use --backend'),
                         (f'model_path={tmp_path / "missing"}', 'does not exist')]:
        with pytest.raises(ValueError, match=reason):
            parse_restoration_params([item])


def test_demo_refuses_bad_parameters_before_starting_anything(tmp_path, capsys):
    out = tmp_path / 'demo'
    assert main(['demo', '--out', str(out), '--set', 'skip_threshold=9']) == 2
    assert 'skip_threshold must be in [1.0, 5.0]' in capsys.readouterr().err
    # a folder that exists but holds no checkpoint: an error, not a silent classical fallback
    assert main(['demo', '--out', str(out), '--set', f'model_path={tmp_path}']) == 2
    assert 'no AdaQual checkpoint at' in capsys.readouterr().err
    assert main(['demo', '--out', str(out), '--dim-haze', '1.5']) == 2
    assert '--dim-haze must be in [0, 1]' in capsys.readouterr().err
    assert not Path(out).exists()
