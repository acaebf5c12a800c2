"""Tile planning, seamless blending, skip ramps and the classical restorer."""
import cv2
import numpy as np
import pytest

from adaqual_ros.metrics.image import psnr
from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap, grid_shape
from adaqual_ros.runtime import classical_restore
from adaqual_ros.runtime.classical import guided_filter
from adaqual_ros.runtime.tiling import plan_windows, run_windows, skip_alpha

CELL = 64


def covered_cells(windows, shape):
    mask = np.zeros(shape, bool)
    for w in windows:
        cy, cx, ch, cw = w.core
        mask[cy // CELL:-(-(cy + ch) // CELL), cx // CELL:-(-(cx + cw) // CELL)] = True
    return mask


def test_no_degraded_cell_means_no_window():
    assert plan_windows(np.zeros((3, 4), bool), (180, 250), CELL) == []


def test_fully_degraded_frame_is_one_window_when_merged():
    windows = plan_windows(np.ones((8, 10), bool), (480, 640), CELL, tile_size=256)
    assert [(w.y0, w.x0, w.h, w.w) for w in windows] == [(0, 0, 480, 640)]
    split = plan_windows(np.ones((8, 10), bool), (480, 640), CELL, tile_size=256, merge=False)
    assert len(split) == 6


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('merge', [True, False])
def test_windows_cover_degraded_cells_and_stay_cell_aligned(seed, merge):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(65, 700)), int(rng.integers(65, 700))
    degraded = rng.random(grid_shape(h, w, CELL)) < 0.3
    windows = plan_windows(degraded, (h, w), CELL, tile_size=128, overlap=64, merge=merge)
    cover = covered_cells(windows, degraded.shape)
    assert (cover >= degraded).all()
    cores = np.zeros((h, w), int)
    for win in windows:
        assert win.y0 % CELL == 0 and win.x0 % CELL == 0
        assert 0 < win.h and 0 < win.w and win.y0 + win.h <= h and win.x0 + win.w <= w
        cy, cx, ch, cw = win.core
        cores[cy:cy + ch, cx:cx + cw] += 1
        # Margins only towards other windows, never into a clean-only area for no reason.
        assert all(m in (0, 64) or m < 64 for m in win.margins)
    assert cores.max() == 1  # cores never overlap


def test_half_clean_frame_runs_half_the_pixels():
    degraded = np.zeros((8, 10), bool)
    degraded[:, 5:] = True
    windows = plan_windows(degraded, (480, 640), CELL, tile_size=256, overlap=64)
    assert sum(w.area for w in windows) == 480 * 320


def test_stray_cells_beside_a_degraded_region_do_not_pull_clean_cells_in():
    # The estimator's typical misread on a half-hazy frame: a few cells of the clean half, one
    # clean column away from the hazy half, inside one of its tiles.
    degraded = np.zeros((12, 20), bool)
    degraded[:, 10:] = True
    degraded[5:7, 8] = True
    windows = plan_windows(degraded, (768, 1280), CELL, tile_size=256, overlap=64)
    assert sum(w.area for w in windows) == (12 * 10 + 2) * CELL * CELL
    assert not covered_cells(windows, degraded.shape)[:, 9].any()
    assert all(w.margins == (0, 0, 0, 0) for w in windows)  # the two never touch
    # Whole-frame planning (the GPU's) keeps one window over every degraded cell.
    whole = plan_windows(degraded, (768, 1280), CELL, tile_size=0, overlap=64)
    assert [(w.y0, w.x0, w.h, w.w) for w in whole] == [(0, 512, 768, 768)]


def test_touching_regions_join_when_their_seams_would_cost_more_than_the_join():
    degraded = np.zeros((11, 20), bool)
    degraded[:8, 10:] = True   # 80 cells
    degraded[8:, 8:] = True    # 36 cells, two columns wider
    windows = plan_windows(degraded, (704, 1280), CELL, tile_size=256, overlap=64)
    # Apart, each grows a 64 px margin into the other along its whole touching side:
    # 80 + 36 + 10 + 12 = 138 cells through the network. Joined: 11 x 12 = 132, no seam.
    assert [(w.y0, w.x0, w.h, w.w) for w in windows] == [(0, 512, 704, 768)]
    # Without overlap margins there is nothing to save, and the 16 clean cells stay out.
    apart = plan_windows(degraded, (704, 1280), CELL, tile_size=256, overlap=0)
    assert sum(w.area for w in apart) == 116 * CELL * CELL


@pytest.mark.parametrize('tile', [64, 256])
def test_merging_never_runs_more_pixels_than_keeping_windows_apart(tile):
    # Joins are judged by the cells each window takes with its overlap margins, against the
    # windows' other neighbours too: a join that saves a seam must not cost more elsewhere.
    rng = np.random.default_rng(0)
    for _ in range(10):
        for share in (0.1, 0.3, 0.5):
            degraded = rng.random((17, 30)) < share
            merged = plan_windows(degraded, (1080, 1920), CELL, tile_size=tile, overlap=64)
            apart = plan_windows(degraded, (1080, 1920), CELL, tile_size=tile, overlap=64,
                                 merge=False)
            assert sum(w.area for w in merged) <= sum(w.area for w in apart)


def test_margins_grow_only_into_touching_windows():
    degraded = np.zeros((2, 6), bool)
    degraded[:, :2] = True
    degraded[:, 4:] = True  # two separate groups
    windows = plan_windows(degraded, (128, 384), CELL, tile_size=128, overlap=64, merge=False)
    assert all(w.margins == (0, 0, 0, 0) for w in windows)
    degraded[:, 2:4] = True
    windows = plan_windows(degraded, (128, 384), CELL, tile_size=128, overlap=64, merge=False)
    middle = [w for w in windows if w.core[1] == 128][0]
    assert middle.margins == (0, 0, 64, 64)


def test_bad_tile_settings_raise():
    with pytest.raises(ValueError, match='multiple of the cell'):
        plan_windows(np.ones((2, 2), bool), (128, 128), CELL, tile_size=100)
    with pytest.raises(ValueError, match='does not match grid'):
        plan_windows(np.ones((3, 3), bool), (128, 128), CELL)


def test_tiled_blend_matches_whole_frame_for_a_local_operator():
    rng = np.random.default_rng(0)
    image = rng.random((300, 420, 3)).astype(np.float32)

    def blur(_, batch):
        return np.stack([cv2.GaussianBlur(b, (7, 7), 0, borderType=cv2.BORDER_REFLECT)
                         for b in batch])

    whole = blur(None, image[None])[0]
    degraded = np.ones(grid_shape(300, 420, CELL), bool)
    windows = plan_windows(degraded, (300, 420), CELL, tile_size=128, overlap=64, merge=False)
    assert len(windows) > 4
    calls = []
    tiled = run_windows(image, windows, lambda ws, b: calls.append(len(ws)) or blur(ws, b),
                        batch_size=3)
    assert max(calls) <= 3 and sum(calls) == len(windows)
    # Seams fall inside 64-pixel overlaps, far wider than the 7x7 kernel: no seam at all.
    assert np.abs(tiled - whole).max() < 1e-5


def test_run_windows_leaves_uncovered_pixels_alone():
    image = np.random.default_rng(1).random((128, 256, 3)).astype(np.float32)
    degraded = np.array([[True, False, False, False], [False, False, False, False]])
    windows = plan_windows(degraded, (128, 256), CELL)
    out = run_windows(image, windows, lambda ws, b: 1.0 - b)
    assert np.array_equal(out[64:], image[64:]) and np.array_equal(out[:, 64:], image[:, 64:])
    assert np.allclose(out[:64, :64], 1.0 - image[:64, :64])


def test_skip_alpha_is_zero_on_clean_cells_and_ramps_inside_degraded_ones():
    degraded = np.array([[False, True, True]])
    alpha = skip_alpha(degraded, (64, 150), CELL, ramp=16)
    assert alpha[:, :64].max() == 0
    assert 0 < alpha[0, 64] < 0.2 and alpha[0, 72] < alpha[0, 79] < 1.0
    assert np.all(alpha[:, 81:] == 1.0)  # frame edges do not count as clean
    assert np.array_equal(skip_alpha(degraded, (64, 150), CELL, ramp=0) > 0,
                          np.repeat(degraded, 64, 1)[:, :150].repeat(64, 0))
    # A region sees clean pixels just outside it; a region with no clean pixel near is all 1.
    assert np.array_equal(skip_alpha(degraded, (64, 150), CELL, 16, (0, 64, 64, 150)),
                          alpha[:, 64:])
    assert skip_alpha(degraded, (64, 150), CELL, 16, (0, 100, 64, 150)) is None
    # The same pattern again (a cached quality map) reuses the weights, which nobody can change.
    again = skip_alpha(degraded.copy(), (64, 150), CELL, ramp=16)
    assert again is alpha and not alpha.flags.writeable
    assert skip_alpha(~degraded, (64, 150), CELL, ramp=16) is not alpha


# -- classical backend -------------------------------------------------------------------------


def _real_or_synthetic(assets_dir=None):
    if assets_dir is not None:
        paths = sorted((assets_dir / 'data' / 'clean' / 'bsds500' / 'val').glob('*'))
        if paths:
            return cv2.cvtColor(cv2.imread(str(paths[0])), cv2.COLOR_BGR2RGB)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(xx / (7 + c)) * np.cos(yy / 11.0) for c in range(3)], 2)
    return (img * 255).astype(np.uint8)


def test_guided_filter_keeps_constants_and_edges():
    guide = np.zeros((64, 64), np.float32)
    guide[:, 32:] = 1.0
    assert np.allclose(guided_filter(guide, np.full((64, 64), 0.3, np.float32), 4), 0.3,
                       atol=1e-4)
    out = guided_filter(guide, guide, 4, eps=1e-4)
    assert out[:, 28].max() < 0.05 and out[:, 36].min() > 0.95  # the step survives


@pytest.mark.parametrize('condition', ['haze', 'low', 'rain'])
def test_classical_restore_improves_synthetic_weather(assets, condition):
    from adaqual_ros.weather import synthesize

    clean = _real_or_synthetic(assets)
    sample = synthesize(clean, condition, 7, severity=0.6)
    qmap = QualityMap(sample.quality, sample.types, 64, clean.shape[:2])
    restored = classical_restore(sample.degraded, qmap)
    assert restored.shape == clean.shape and restored.dtype == np.uint8
    before, after = psnr(sample.degraded, clean), psnr(restored, clean)
    assert after > before + (0.3 if condition == 'rain' else 2.0), (before, after)


def test_classical_restore_with_a_clean_map_changes_nothing():
    img = _real_or_synthetic()
    gh, gw = grid_shape(*img.shape[:2], 64)
    clean_map = QualityMap(np.full((gh, gw), 5.0), np.zeros((gh, gw, len(DEGRADATION_TYPES))), 64,
                           img.shape[:2])
    assert np.array_equal(classical_restore(img, clean_map), img)
    with pytest.raises(ValueError, match='uint8 RGB'):
        classical_restore(img.astype(np.float32))
    with pytest.raises(ValueError, match='quality map is for'):
        classical_restore(img[:100], clean_map)


def test_classical_restore_barely_acts_on_a_minor_type():
    """A little haze on a rain cell (as estimators report) does not dehaze it."""
    img = _real_or_synthetic()
    gh, gw = grid_shape(*img.shape[:2], 64)

    def rain_map(haze):
        probs = np.zeros((gh, gw, len(DEGRADATION_TYPES)))
        probs[..., DEGRADATION_TYPES.index('rain')] = 0.6
        probs[..., DEGRADATION_TYPES.index('haze')] = haze
        return QualityMap(np.full((gh, gw), 2.0), probs, 64, img.shape[:2])

    rain_only = classical_restore(img, rain_map(0.0)).astype(np.float64)
    minor = np.abs(classical_restore(img, rain_map(0.06)) - rain_only).mean()
    major = np.abs(classical_restore(img, rain_map(0.6)) - rain_only).mean()
    # haze weight 0.18 (3 x 0.06) times its share of the strongest type (0.1): 0.018
    assert minor < 0.5 and major > 10 * minor, (minor, major)


def test_classical_restore_dehazes_a_fog_frame_restored_whole_at_full_strength():
    """Fog covers frames: restored whole with haze leading, the dehazer is not cell-weighted."""
    from adaqual_ros.runtime.classical import dehaze, haze_leads

    img = _real_or_synthetic()
    hazy = ((img.astype(np.float32) * 0.5 + 0.85 * 255 * 0.5) + 0.5).astype(np.uint8)
    gh, gw = grid_shape(*img.shape[:2], 64)

    def haze_map(kind_probs):
        probs = np.zeros((gh, gw, len(DEGRADATION_TYPES)))
        for kind, p in kind_probs.items():
            probs[..., DEGRADATION_TYPES.index(kind)] = p
        # Weakly read fog (quality 4.5 everywhere): the per-cell weight is 0.5.
        return QualityMap(np.full((gh, gw), 4.5), probs, 64, img.shape[:2])

    fog = haze_map({'haze': 1.0})
    assert haze_leads(fog)
    full = (dehaze(hazy.astype(np.float32) / 255.0) * 255.0 + 0.5).astype(np.uint8)
    whole = classical_restore(hazy, fog, whole_frame=True)
    assert np.array_equal(whole, full)
    cell_weighted = classical_restore(hazy, fog)
    assert np.abs(cell_weighted.astype(int) - full).mean() > 5  # half strength
    # Rain leads: restoring the frame whole does not dehaze it at full strength.
    rainy = haze_map({'rain': 0.6, 'haze': 0.3})
    assert not haze_leads(rainy)
    assert np.array_equal(classical_restore(hazy, rainy, whole_frame=True),
                          classical_restore(hazy, rainy))
    assert not haze_leads(haze_map({}))  # a clean map has no leading damage
    assert not haze_leads(haze_map({'haze': 0.1}))  # traces of haze (strength 0.15) do not lead
    # fog_contrast: the dehazed fog frame's lightness equalised, nothing else touched.
    from adaqual_ros.runtime.classical import clahe_lightness

    assert np.array_equal(classical_restore(hazy, fog, whole_frame=True, fog_contrast=True),
                          clahe_lightness(full))
    assert np.array_equal(classical_restore(hazy, fog, fog_contrast=True), cell_weighted)
    assert np.array_equal(classical_restore(hazy, rainy, whole_frame=True, fog_contrast=True),
                          classical_restore(hazy, rainy))


def test_scattered_cells_stay_small_and_merging_is_fast():
    degraded = np.zeros((17, 30), bool)  # 1080p grid
    degraded[2, 3] = degraded[9, 20] = degraded[15, 28] = degraded[9, 21] = True
    windows = plan_windows(degraded, (1080, 1920), CELL, tile_size=256)
    cores = sorted(w.core for w in windows)
    assert sum(w.core[2] * w.core[3] for w in windows) == 4 * CELL * CELL
    assert (576, 1280, 64, 128) in cores  # two touching cells, one window
    import time

    rng = np.random.default_rng(0)
    mask = rng.random((17, 30)) < 0.3
    start = time.perf_counter()
    for tile in (64, 256):
        plan_windows(mask, (1080, 1920), CELL, tile_size=tile)
    assert time.perf_counter() - start < 2.0


def test_bucketed_windows_repeat_their_shapes_and_keep_their_cores():
    rng = np.random.default_rng(3)
    h, w = 720, 1280
    shapes = set()
    for _ in range(20):
        degraded = np.zeros(grid_shape(h, w, CELL), bool)
        for _ in range(int(rng.integers(1, 4))):  # a few regions of random size and place
            r, c = int(rng.integers(0, 12)), int(rng.integers(0, 20))
            degraded[r:r + int(rng.integers(1, 6)), c:c + int(rng.integers(1, 9))] = True
        plain = plan_windows(degraded, (h, w), CELL, tile_size=0)
        grown = plan_windows(degraded, (h, w), CELL, tile_size=0, bucket=256)
        assert [p.core for p in plain] == [g.core for g in grown]
        for win in grown:
            cy, cx, ch, cw = win.core
            assert win.y0 % CELL == 0 and win.x0 % CELL == 0
            assert win.y0 <= cy and cy + ch <= win.y0 + win.h <= h
            assert win.x0 <= cx and cx + cw <= win.x0 + win.w <= w
            # a multiple of the bucket, or the span that ends at the frame's edge
            assert win.h % 256 == 0 or win.y0 + win.h == h
            assert win.w % 256 == 0 or win.x0 + win.w == w
            shapes.add((win.h, win.w))
    # Twenty frames of changing damage, a handful of shapes (the GPU sets each up once).
    assert len(shapes) <= 12
    frame = rng.integers(0, 255, (h, w, 3)).astype(np.float32)
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[2:4, 3:5] = True
    out = run_windows(frame, plan_windows(degraded, (h, w), CELL, tile_size=0, bucket=256),
                      lambda wins, batch: batch + 1.0)
    assert np.array_equal(out[128:256, 192:320], frame[128:256, 192:320] + 1.0)
