"""`adaqual bench`: the JSON contract scripts read, on a quick run."""
import argparse
import json

import pytest

from adaqual_ros.cli import bench
from adaqual_ros.runtime.device import native_bf16_cpu


def _args(tmp_path, *flags, **kw):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ['--out', str(tmp_path), '--frames', '2', '--warmup', '1', '--resolutions', '160x128',
            '--backends', 'adaqual,classical,passthrough', '--model-config', 'tiny',
            '--quality-backend', 'classical', '--threads', '1', '--device', 'cpu']
    for key, value in kw.items():
        argv += [f'--{key}', str(value)]
    return parser.parse_args(argv + [f'--{flag}' for flag in flags])


def test_bench_writes_the_contract_json(tmp_path, capsys):
    assert bench.run(_args(tmp_path)) == 0
    report = json.loads((tmp_path / 'bench.json').read_text())
    keys = {(r['resolution'], r['backend'], r['stream']) for r in report['records']}
    assert keys == {('160x128', b, s) for b in ('adaqual', 'classical', 'passthrough')
                    for s in ('degraded', 'clean')}
    for rec in report['records']:
        assert rec['fps'] > 0 and rec['ms_per_frame'] > 0
        assert set(rec['ms_by_stage']) >= {'quality', 'prompts', 'model', 'blend'}
        assert rec['peak_memory']['process_max_rss_mb'] > 0
        assert rec['backend_used'] == rec['backend']
        assert rec['tile_size'] == 256  # the auto default on the CPU
        # cpu_bf16 resolved for this CPU; the classical backends have no network
        expected = 'bfloat16' if native_bf16_cpu() and rec['backend'] == 'adaqual' else 'float32'
        assert rec['precision'] == expected
        assert rec['cpu_ms_per_frame'] > 0 and 0 <= rec['processed_fraction'] <= 1.5
    ratios = report['ratios']
    assert set(ratios) >= {'clean_over_degraded', 'adaptive_speedup', 'cache_speedup'}
    assert all(ratios[k] > 0 for k in ('clean_over_degraded', 'adaptive_speedup',
                                       'cache_speedup'))
    assert ratios['backend'] == 'adaqual'
    assert 'untrained' in report['model']
    out = capsys.readouterr().out
    assert 'ms/frame' in out and 'bench.json' in out
    assert f'network in {"bfloat16" if native_bf16_cpu() else "float32"}' in out
    run = report['ratio_details'][0]['half_clean_processed_fraction']
    assert f'half_clean_run={run:.2f}' in out


def test_bench_profile_writes_the_op_tables(tmp_path):
    assert bench.run(_args(tmp_path, 'profile', 'no-ratios', backends='adaqual')) == 0
    table = (tmp_path / 'profile_160x128_adaqual.txt').read_text()
    # the CPU table of a real run: the denoiser's convolutions are in it
    assert table.startswith('torch ') and 'by CPU time' in table
    assert 'aten::conv2d' in table
    assert 'by device time' not in table  # no CUDA here


def test_bench_flops_count_the_network_passes(tmp_path):
    # The classical estimator and backend run no torch ops, so the adaqual figure is the
    # network's alone: two sampling steps are two passes of one cost.
    gflops = {}
    for steps in (1, 2):
        args = _args(tmp_path / str(steps), 'flops', 'no-ratios', steps=steps,
                     backends='adaqual,classical')
        assert bench.run(args) == 0
        report = json.loads((tmp_path / str(steps) / 'bench.json').read_text())
        recs = {(r['backend'], r['stream']): r for r in report['records']}
        assert 'gflops_per_frame' not in recs['adaqual', 'clean']
        assert recs['classical', 'degraded']['gflops_per_frame'] == 0
        gflops[steps] = recs['adaqual', 'degraded']['gflops_per_frame']
    assert gflops[1] > 0
    assert gflops[2] == pytest.approx(2 * gflops[1], rel=0.01)


def test_bench_rejects_bad_lists(tmp_path, capsys):
    assert bench.run(_args(tmp_path, resolutions='640by480')) == 2
    assert bench.run(_args(tmp_path, backends='adaqual,magic')) == 2
    err = capsys.readouterr().err
    assert '640by480' in err and 'magic' in err
    with pytest.raises(ValueError, match='WxH'):
        bench.parse_resolutions('0x480')


def test_node_knobs_parse_as_the_node_takes_them(tmp_path, capsys):
    from adaqual_ros.cli.restorer_options import resolved_options, restorer_changes

    args = _args(tmp_path)
    assert restorer_changes(args) == {}  # unset: the runtime's defaults
    assert resolved_options(args)['fog_contrast'] is False
    args = _args(tmp_path, **{'fog-contrast': 'true', 'whole-frame-share': 1.0})
    assert restorer_changes(args) == {'fog_contrast': True, 'whole_frame_share': 1.0}
    with pytest.raises(SystemExit):
        _args(tmp_path, **{'fog-contrast': 'maybe'})
    assert "invalid true/false value: 'maybe'" in capsys.readouterr().err


def test_frame_stride_spreads_the_streams_over_the_clip(assets, tmp_path, capsys):
    import numpy as np

    from adaqual_ros.io.video import FrameSource

    frames, desc = bench.load_source_frames(3, assets, stride=50)
    video = assets / 'data' / 'video' / 'people.mp4'
    expected = [f.image for f in FrameSource(video, stride=50, limit=3)]
    assert len(frames) == 3 and 'every 50th frame' in desc
    assert all(np.array_equal(a, b) for a, b in zip(frames, expected))
    assert bench.run(_args(tmp_path, **{'frame-stride': 0})) == 2
    assert '--frame-stride' in capsys.readouterr().err
