"""`adaqual eval-quality` end to end on a small slice: the quality.json contract scripts read."""
import json

import torch

from adaqual_ros.cli import eval_quality
from adaqual_ros.cli.main import main


def test_eval_quality_writes_contract_json(assets, tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        code = main(['eval-quality', '--out', str(tmp_path), '--assets', str(assets),
                     '--estimators', 'learned', '--n-images', '1', '--bench-frames', '12',
                     '--ordering-images', '6', '--threads', '1'])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    out = capsys.readouterr().out
    assert 'spearman' in out and 'hit_rate' in out
    report = json.loads((tmp_path / 'quality.json').read_text())
    assert -1.0 <= report['spearman'] <= 1.0
    assert 0.0 <= report['type_accuracy'] <= 1.0
    assert 0.0 <= report['cache']['hit_rate'] <= 1.0
    assert report['cache']['mean_abs_error'] >= 0.0
    per_condition = report['heldout']['estimators']['learned']['per_condition']
    assert set(per_condition) >= {'clean', 'haze', 'rain', 'snow', 'low', 'low_haze_snow'}
    strength = report['heldout']['estimators']['learned']['type_strength']
    assert set(strength) == {'low_light', 'haze', 'rain', 'snow'}
    for v in strength.values():
        assert 0.0 <= v['mae'] <= 1.0 and 0.0 <= v['true_mean'] <= 1.0
    assert 'Type strengths' in out
    assert set(report['ordering']['learned']) >= {'fog_mean', 'clean_mean', 'ordered'}
    assert len(report['cache_benchmark']['results']) >= 3


def test_eval_quality_without_assets_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('ADAQUAL_ASSETS', raising=False)
    code = main(['eval-quality', '--out', str(tmp_path), '--assets', str(tmp_path / 'missing')])
    assert code == 2
    assert 'no assets folder' in capsys.readouterr().out
    assert eval_quality.BENCH_SETTINGS
