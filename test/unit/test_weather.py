"""Weather synthesis: contract, determinism, ranges, monotonicity, ground truth vs SSIM, layers."""
import argparse

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr

from adaqual_ros.cli import synth as synth_cli
from adaqual_ros.metrics.image import psnr, regional_ssim
from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap
from adaqual_ros.weather import (
    CONDITION_TYPES,
    CONDITIONS,
    WeatherLayers,
    WeatherStream,
    load_layers,
    synthesize,
)
from adaqual_ros.weather.fields import cell_means, severity_field
from adaqual_ros.weather.haze import dim_airlight

VAL_IMAGE = 'data/clean/bsds500/val/101085.jpg'
SINGLE = {'low_light': 'low', 'haze': 'haze', 'rain': 'rain', 'snow': 'snow'}


def _read_rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def small_image():
    """A textured 90x130 RGB frame (not a multiple of the cell size)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:90, 0:130]
    base = np.stack([xx * 1.8, yy * 2.5, (xx + yy) % 64 * 3.0], axis=2)
    noise = rng.normal(0, 20, size=base.shape)
    return np.clip(base + noise + 30, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def val_image(asset):
    return _read_rgb(asset(VAL_IMAGE))


def test_condition_names_follow_the_contract():
    assert CONDITIONS == ('clean', 'low', 'haze', 'rain', 'snow', 'low_haze', 'low_rain',
                          'low_snow', 'haze_rain', 'haze_snow', 'low_haze_rain', 'low_haze_snow')
    assert CONDITION_TYPES['clean'] == ()
    assert CONDITION_TYPES['low_haze_snow'] == ('low_light', 'haze', 'snow')
    for kinds in CONDITION_TYPES.values():
        assert set(kinds) <= set(DEGRADATION_TYPES)


@pytest.mark.parametrize('condition', CONDITIONS)
def test_sample_shapes_dtypes_and_ranges(small_image, condition):
    cell = 32
    sample = synthesize(small_image, condition, 3, cell=cell)
    h, w = small_image.shape[:2]
    assert sample.degraded.dtype == np.uint8 and sample.degraded.shape == small_image.shape
    assert np.array_equal(sample.clean, small_image)
    assert sample.condition == condition
    assert tuple(sample.severity) == DEGRADATION_TYPES
    gh, gw = -(-h // cell), -(-w // cell)
    assert sample.quality.shape == (gh, gw) and sample.quality.dtype == np.float32
    assert sample.types.shape == (gh, gw, 4) and sample.types.dtype == np.float32
    assert sample.quality.min() >= 1.0 and sample.quality.max() <= 5.0
    assert sample.types.min() >= 0.0 and sample.types.max() <= 1.0
    present = CONDITION_TYPES[condition]
    for i, kind in enumerate(DEGRADATION_TYPES):
        field = sample.severity[kind]
        assert field.shape == (h, w) and field.dtype == np.float32
        assert field.min() >= 0.0 and field.max() <= 1.0
        if kind in present:
            assert field.mean() > 0.0
        else:
            assert not field.any() and not sample.types[..., i].any()
    if condition == 'clean':
        assert np.array_equal(sample.degraded, small_image)
        assert np.all(sample.quality == 5.0)
    else:
        assert not np.array_equal(sample.degraded, small_image)
        assert sample.quality.min() < 5.0
    qmap = sample.quality_map()
    assert isinstance(qmap, QualityMap) and qmap.image_size == (h, w) and qmap.cell == cell


def test_same_seed_same_sample_other_seed_other_sample(small_image):
    a = synthesize(small_image, 'low_haze_rain', 11)
    b = synthesize(small_image, 'low_haze_rain', 11)
    c = synthesize(small_image, 'low_haze_rain', 12)
    assert np.array_equal(a.degraded, b.degraded)
    assert np.array_equal(a.quality, b.quality) and np.array_equal(a.types, b.types)
    for kind in DEGRADATION_TYPES:
        assert np.array_equal(a.severity[kind], b.severity[kind])
    assert not np.array_equal(a.degraded, c.degraded)
    # A Generator is consumed: two calls on one generator differ, and replaying it repeats them.
    g = np.random.default_rng(5)
    first, second = (synthesize(small_image, 'snow', g).degraded for _ in range(2))
    g = np.random.default_rng(5)
    assert not np.array_equal(first, second)
    assert np.array_equal(first, synthesize(small_image, 'snow', g).degraded)


def test_dim_haze_darkens_the_airlight_and_keeps_the_default_draws(small_image, val_image):
    # dim_haze=0 is the default stream, draw for draw (seeded evaluation sets stay as they were).
    plain = synthesize(small_image, 'haze_rain', 3)
    zero = synthesize(small_image, 'haze_rain', 3, dim_haze=0.0)
    assert np.array_equal(plain.degraded, zero.degraded)
    assert np.array_equal(plain.quality, zero.quality)
    # The same haze field lit by a dim airlight: the frame gets darker, the haze strength (1 - t)
    # and the loss of contrast stay, so the quality is still below clean.
    day = synthesize(val_image, 'haze', 8, severity=0.8, variation=0.0)
    night = synthesize(val_image, 'haze', 8, severity=0.8, variation=0.0, dim_haze=1.0)
    assert np.array_equal(day.strength['haze'], night.strength['haze'])
    assert night.degraded.mean() < day.degraded.mean() - 20
    assert night.quality.mean() < 4.0
    with pytest.raises(ValueError, match='dim_haze'):
        synthesize(small_image, 'haze', 0, dim_haze=1.5)


def test_stream_and_cli_take_dim_haze(tmp_path, small_image, capsys):
    day = WeatherStream('haze', seed=2, severity=0.7, variation=0.0)
    night = WeatherStream('haze', seed=2, severity=0.7, variation=0.0, dim_haze=1.0)
    for _ in range(2):  # the airlight is a stream constant: every frame darker
        assert night.apply(small_image).degraded.mean() < day.apply(small_image).degraded.mean()
    with pytest.raises(ValueError, match='dim_haze'):
        WeatherStream('haze', dim_haze=-0.1)
    src = tmp_path / 'in.png'
    cv2.imwrite(str(src), cv2.cvtColor(small_image, cv2.COLOR_RGB2BGR))
    outs = {}
    for value in ('0', '1'):
        outs[value] = tmp_path / f'out{value}.png'
        assert _run_cli([str(src), '-c', 'haze', '--severity', '0.7', '--dim-haze', value,
                         '-o', str(outs[value])]) == 0
    assert cv2.imread(str(outs['1'])).mean() < cv2.imread(str(outs['0'])).mean()
    capsys.readouterr()
    assert _run_cli([str(src), '-c', 'haze', '--dim-haze', '2']) == 2
    assert '--dim-haze must be in [0, 1]' in capsys.readouterr().err
    assert _run_cli([str(tmp_path), '--heldout', str(tmp_path / 'h'), '--dim-haze', '0.5']) == 2
    assert 'does not apply to --heldout' in capsys.readouterr().err


def test_dim_airlight_range_and_tints():
    rng = np.random.default_rng(0)
    lights = np.array([dim_airlight(rng) for _ in range(300)])
    assert lights.min() >= 0.02 and lights.max() <= 0.85
    assert 0.3 < lights.mean() < 0.6
    # Blue-hour and sodium tints both occur.
    blue_minus_red = lights[:, 2] - lights[:, 0]
    assert (blue_minus_red > 0.08).any() and (blue_minus_red < -0.08).any()


def test_same_seed_shares_fields_across_conditions(small_image):
    # The haze of 'haze' and of 'low_haze' is the same draw, so conditions compare fairly.
    haze = synthesize(small_image, 'haze', 4, severity=0.5)
    low_haze = synthesize(small_image, 'low_haze', 4, severity=0.5)
    assert np.array_equal(haze.severity['haze'], low_haze.severity['haze'])


def test_ground_truth_off_gives_the_same_frame(small_image):
    full = synthesize(small_image, 'haze_snow', 9)
    fast = synthesize(small_image, 'haze_snow', 9, ground_truth=False)
    assert np.array_equal(full.degraded, fast.degraded)
    assert fast.quality is None and fast.types is None
    with pytest.raises(ValueError, match='ground_truth'):
        fast.quality_map()


@pytest.mark.parametrize('bad, match', [
    (np.zeros((10, 10, 3), np.float32), 'uint8'),
    (np.zeros((10, 10), np.uint8), r'\(H, W, 3\)'),
    (np.zeros((10, 10, 4), np.uint8), r'\(H, W, 3\)'),
])
def test_bad_images_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        synthesize(bad, 'rain', 0)


def test_bad_arguments_raise(small_image):
    with pytest.raises(ValueError, match='unknown weather condition'):
        synthesize(small_image, 'fog', 0)
    with pytest.raises(ValueError, match=r'in \[0, 1\]'):
        synthesize(small_image, 'rain', 0, severity=1.5)
    with pytest.raises(ValueError, match='unknown severity keys'):
        synthesize(small_image, 'rain', 0, severity={'fog': 0.5})
    with pytest.raises(ValueError, match='variation'):
        synthesize(small_image, 'rain', 0, variation=2.0)
    with pytest.raises(ValueError, match='cell'):
        synthesize(small_image, 'rain', 0, cell=0)


def test_severity_dict_sets_each_type(small_image):
    sample = synthesize(small_image, 'low_haze', 2, severity={'low_light': 0.2, 'haze': 0.8},
                        variation=0.0)
    assert sample.severity['low_light'].mean() == pytest.approx(0.2, abs=1e-5)
    assert sample.severity['haze'].mean() == pytest.approx(0.8, abs=1e-5)


def test_severity_field_is_smooth_monotone_and_centred():
    rng = np.random.default_rng
    low = severity_field(120, 160, 0.3, rng(1), variation=0.8)
    high = severity_field(120, 160, 0.6, rng(1), variation=0.8)
    assert np.all(high >= low)
    assert abs(float(low.mean()) - 0.3) < 0.1
    # Low-frequency: neighbouring pixels differ by far less than the field's range.
    assert np.abs(np.diff(low, axis=1)).max() < 0.05 * (low.max() - low.min()) + 1e-6
    assert not severity_field(50, 50, 0.0, rng(2)).any()


def test_cell_means_match_a_loop_with_partial_cells():
    field = np.random.default_rng(0).random((70, 45)).astype(np.float32)
    cell = 32
    means = cell_means(field, cell)
    assert means.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            block = field[i * cell:(i + 1) * cell, j * cell:(j + 1) * cell]
            assert means[i, j] == pytest.approx(float(block.mean()), rel=1e-5)


@pytest.mark.parametrize('kind', DEGRADATION_TYPES)
def test_higher_severity_lowers_psnr_and_quality(val_image, kind):
    condition = SINGLE[kind]
    levels = (0.15, 0.4, 0.65, 0.9)
    samples = [synthesize(val_image, condition, 21, severity=s, variation=0.5) for s in levels]
    psnrs = [psnr(s.degraded, val_image) for s in samples]
    quality = [float(s.quality.mean()) for s in samples]
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert all(a > b for a, b in zip(quality, quality[1:])), quality


@pytest.mark.parametrize('condition', CONDITIONS[1:])
def test_quality_grid_ranks_regions_like_ssim(val_image, condition):
    # Random draws (severity, variation) and one strongly varying field at a fixed severity.
    for seed, severity, variation in ((0, None, None), (1, None, None), (2, 0.6, 1.0)):
        sample = synthesize(val_image, condition, seed, severity=severity, variation=variation)
        measured = regional_ssim(sample.degraded, val_image, sample.cell)
        rho = spearmanr(sample.quality.ravel(), measured.ravel())[0]
        assert rho > 0.7, (condition, seed, rho)


@pytest.mark.parametrize('condition', CONDITIONS[1:])
def test_quality_scale_tracks_ssim(val_image, condition):
    # q = 1 + 4 * predicted SSIM: the scale, not only the ranking, is the measured SSIM's.
    sample = synthesize(val_image, condition, 5)
    measured = regional_ssim(sample.degraded, val_image, sample.cell)
    assert float(np.abs(sample.quality - (1.0 + 4.0 * measured)).mean()) < 0.2


@pytest.mark.parametrize('condition', ['low', 'haze_rain', 'low_haze_snow'])
def test_types_combine_into_quality(small_image, condition):
    # Documented identity: q = 5 - 4 * (1 - prod(1 - types)); the present types carry damage.
    sample = synthesize(small_image, condition, 6, severity=0.7, cell=32)
    combined = 5.0 - 4.0 * (1.0 - np.prod(1.0 - sample.types, axis=2))
    np.testing.assert_allclose(combined, sample.quality, atol=1e-4)
    for kind in CONDITION_TYPES[condition]:
        assert sample.types[..., DEGRADATION_TYPES.index(kind)].max() > 0.05


def test_stream_keeps_fields_and_moves_particles(small_image):
    stream = WeatherStream('low_rain', seed=3, severity=0.6)
    a, b = stream.apply(small_image), stream.apply(small_image)
    for kind in DEGRADATION_TYPES:
        assert np.array_equal(a.severity[kind], b.severity[kind])
    assert not np.array_equal(a.degraded, b.degraded)
    again = WeatherStream('low_rain', seed=3, severity=0.6).apply(small_image, frame_index=1)
    assert np.array_equal(again.degraded, b.degraded)


def test_stream_snow_falls_instead_of_flickering():
    frame = np.full((256, 256, 3), 90, np.uint8)
    stream = WeatherStream('snow', seed=2, severity=0.6, variation=0.0, ground_truth=False)
    first = stream.apply(frame).strength['snow']
    later = stream.apply(frame, frame_index=4).strength['snow']  # middle layer fell 6 px

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert corr(np.roll(first, 6, axis=0), later) > corr(first, later) + 0.2


def test_real_layers_load(assets):
    layers = load_layers(assets)
    assert isinstance(layers, WeatherLayers)
    assert len(layers.rain) == 3 and len(layers.snow) == 3
    for mask in layers.rain + layers.snow:
        assert mask.dtype == np.float32 and mask.ndim == 2
        assert 0.0 <= mask.min() and mask.max() <= 1.0 and mask.max() > 0.2
    assert layers.scene_rgb.shape == (720, 1080, 3) and layers.scene_rgb.dtype == np.uint8
    assert layers.scene_depth.shape == (720, 1080)
    # The weather_layers folder itself works too.
    assert load_layers(assets / 'data' / 'weather_layers') is not None


def test_missing_layers_give_none(tmp_path):
    assert load_layers(None) is None
    assert load_layers(tmp_path) is None
    assert load_layers(tmp_path / 'absent') is None
    with pytest.raises(ValueError, match='use_prob'):
        WeatherLayers(use_prob=2.0)


@pytest.mark.parametrize('condition', ['rain', 'snow'])
def test_real_masks_drive_rain_and_snow(assets, small_image, condition):
    real = load_layers(assets, use_prob=1.0)
    procedural = synthesize(small_image, condition, 8, severity=0.7)
    masked = synthesize(small_image, condition, 8, severity=0.7, layers=real)
    again = synthesize(small_image, condition, 8, severity=0.7, layers=real)
    assert np.array_equal(masked.degraded, again.degraded)
    assert not np.array_equal(masked.degraded, procedural.degraded)
    # Masks only add light (screen / blend to white), never darken.
    assert masked.degraded.astype(int).mean() > small_image.astype(int).mean()


@pytest.mark.parametrize('condition', ['rain', 'low_haze_snow'])
def test_quality_grid_with_real_masks_ranks_like_ssim(assets, val_image, condition):
    sample = synthesize(val_image, condition, 4, layers=load_layers(assets, use_prob=1.0))
    measured = regional_ssim(sample.degraded, val_image, sample.cell)
    assert spearmanr(sample.quality.ravel(), measured.ravel())[0] > 0.7


def test_haze_follows_a_given_depth_map(assets):
    layers = load_layers(assets)
    scene = cv2.resize(layers.scene_rgb, (270, 180), interpolation=cv2.INTER_AREA)
    sample = synthesize(scene, 'haze', 1, severity=0.6, variation=0.0,
                        depth=layers.scene_depth)
    depth = cv2.resize(layers.scene_depth, (270, 180))
    airlight_fraction = sample.strength['haze']
    far, near = depth > np.quantile(depth, 0.75), depth < np.quantile(depth, 0.25)
    assert airlight_fraction[far].mean() > airlight_fraction[near].mean() + 0.1


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    return synth_cli.run(parser.parse_args(argv))


def test_cli_grid_writes_a_contact_sheet(tmp_path, val_image, asset):
    out = tmp_path / 'sheet.png'
    assert _run_cli(['--grid', str(out), str(asset(VAL_IMAGE)), '--tile-width', '160']) == 0
    sheet = cv2.imread(str(out))
    tile_h = round(val_image.shape[0] * 160 / val_image.shape[1])
    assert sheet.shape == (3 * tile_h, 4 * 160, 3)


def test_cli_image_folder_and_video(tmp_path, small_image):
    src = tmp_path / 'in'
    src.mkdir()
    for name in ('b.png', 'a.png'):
        cv2.imwrite(str(src / name), cv2.cvtColor(small_image, cv2.COLOR_RGB2BGR))
    out = tmp_path / 'one.png'
    assert _run_cli([str(src / 'a.png'), '-c', 'haze', '--severity', '0.5', '-o', str(out),
                     '--save-gt']) == 0
    expected = synthesize(small_image, 'haze', 0, severity=0.5)
    written = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected.degraded)
    assert np.array_equal(np.load(out.with_suffix('.npz'))['quality'], expected.quality)
    assert _run_cli([str(src), '-c', 'snow', '-o', str(tmp_path / 'dir')]) == 0
    assert sorted(p.name for p in (tmp_path / 'dir').iterdir()) == ['a.png', 'b.png']
    video = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*'MJPG'), 10, (130, 90))
    for _ in range(4):
        writer.write(cv2.cvtColor(small_image, cv2.COLOR_RGB2BGR))
    writer.release()
    assert _run_cli([str(video), '-c', 'rain', '-o', str(tmp_path / 'rain.mp4'),
                     '--max-frames', '3']) == 0
    cap = cv2.VideoCapture(str(tmp_path / 'rain.mp4'))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
    assert _run_cli([str(src), '--severity', '0.5']) == 2
    assert _run_cli([str(tmp_path / 'missing.png'), '-c', 'rain']) == 2
