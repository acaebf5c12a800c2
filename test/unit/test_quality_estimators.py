"""Quality estimators: shapes and ranges for odd sizes, registry, errors, learned vs classical."""
import numpy as np
import pytest

from adaqual_ros.quality import DEGRADATION_TYPES, ESTIMATORS, build_estimator, grid_shape
from adaqual_ros.quality.deqa import DeQAConfigError
from adaqual_ros.quality.grid import cell_mean
from adaqual_ros.quality.learned import LearnedQualityEstimator, default_checkpoint_path

ODD_SIZES = [(1, 1), (37, 70), (65, 129), (321, 481), (480, 640)]


def _check_map(qmap, h, w, cell):
    assert qmap.image_size == (h, w) and qmap.cell == cell
    assert qmap.scores.shape == grid_shape(h, w, cell)
    assert qmap.type_probs.shape == grid_shape(h, w, cell) + (len(DEGRADATION_TYPES),)
    assert qmap.scores.dtype == np.float32
    assert np.isfinite(qmap.scores).all() and np.isfinite(qmap.type_probs).all()
    assert qmap.scores.min() >= 1.0 and qmap.scores.max() <= 5.0
    assert qmap.type_probs.min() >= 0.0 and qmap.type_probs.max() <= 1.0


@pytest.fixture(scope='module')
def learned():
    if not (default_checkpoint_path() / 'config.json').is_file():
        pytest.fail(f'shipped learned-estimator weights missing in {default_checkpoint_path()}')
    return build_estimator('learned')


@pytest.fixture(scope='module')
def val_image(assets):
    from adaqual_ros.quality.data import heldout_files, read_rgb
    return read_rgb(heldout_files(assets)[3])


def test_cell_mean_partial_cells_match_brute_force():
    rng = np.random.default_rng(0)
    values = rng.random((70, 45, 2)).astype(np.float32)
    out = cell_mean(values, 32)
    assert out.shape == (3, 2, 2)
    for gy in range(3):
        for gx in range(2):
            block = values[gy * 32:(gy + 1) * 32, gx * 32:(gx + 1) * 32]
            np.testing.assert_allclose(out[gy, gx], block.mean(axis=(0, 1)), rtol=1e-5)


@pytest.mark.parametrize('name', ['classical', 'learned'])
@pytest.mark.parametrize('h,w', ODD_SIZES)
def test_scores_in_range_and_shape_for_odd_sizes(name, h, w, request):
    est = request.getfixturevalue('learned') if name == 'learned' else build_estimator('classical')
    rng = np.random.default_rng(h * 1000 + w)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    _check_map(est.estimate(frame), h, w, 64)


def test_other_cell_sizes(learned):
    frame = np.full((100, 150, 3), 128, np.uint8)
    _check_map(build_estimator('classical', cell=20).estimate(frame), 100, 150, 20)
    est = build_estimator('learned', cell=128)
    _check_map(est.estimate(frame), 100, 150, 128)
    est.cell = 32
    _check_map(est.estimate(frame), 100, 150, 32)
    with pytest.raises(ValueError, match='multiple of 32'):
        est.cell = 48


def test_batch_matches_single_and_mixed_sizes(learned, val_image):
    small = val_image[:100, :130].copy()
    maps = learned.estimate_batch([val_image, small, val_image])
    single = learned.estimate(val_image)
    np.testing.assert_allclose(maps[0].scores, single.scores, atol=1e-4)
    np.testing.assert_allclose(maps[2].type_probs, single.type_probs, atol=1e-4)
    assert maps[1].scores.shape == (2, 3)


def test_degradations_lower_the_score_and_name_their_type(val_image, learned):
    from adaqual_ros.weather import synthesize

    for est in (build_estimator('classical'), learned):
        clean = est.estimate(val_image).scores.mean()
        for condition, type_name in (('low', 'low_light'), ('haze', 'haze')):
            sample = synthesize(val_image, condition, 7, severity=0.8, variation=0.0)
            qmap = est.estimate(sample.degraded)
            assert qmap.scores.mean() < clean - 0.3, (est.name, condition)
            dominant = qmap.type_probs.mean(axis=(0, 1)).argmax()
            assert DEGRADATION_TYPES[dominant] == type_name, (est.name, condition)


def test_learned_save_load_round_trip(tmp_path, val_image):
    model = LearnedQualityEstimator(widths=(8, 8, 8))
    model.save_pretrained(str(tmp_path))
    loaded = build_estimator('learned', path=str(tmp_path))
    np.testing.assert_allclose(loaded.estimate(val_image).scores,
                               model.eval().estimate(val_image).scores, atol=1e-5)
    assert loaded.config.widths == [8, 8, 8] or tuple(loaded.config.widths) == (8, 8, 8)


def test_shipped_checkpoint_is_small_safetensors():
    folder = default_checkpoint_path()
    weights = folder / 'diffusion_pytorch_model.safetensors'
    assert weights.is_file() and weights.stat().st_size < 5 * 1024 * 1024
    assert (folder / 'TRAINING.md').is_file()


def test_registry_and_errors(tmp_path):
    assert set(ESTIMATORS) == {'learned', 'classical', 'deqa'}
    with pytest.raises(ValueError, match='valid names'):
        build_estimator('nope')
    with pytest.raises(ValueError, match='no weights'):
        build_estimator('classical', path='/some/where')
    with pytest.raises(FileNotFoundError, match='no learned quality estimator weights'):
        build_estimator('learned', path=str(tmp_path))
    with pytest.raises(DeQAConfigError, match='local DeQA-Score folder'):
        build_estimator('deqa')
    with pytest.raises(DeQAConfigError, match='config.json missing'):
        build_estimator('deqa', path=str(tmp_path))
    with pytest.raises(ValueError, match='cell'):
        build_estimator('classical', cell=0)


@pytest.mark.parametrize('bad', [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8), [[1, 2, 3]]])
def test_bad_frames_raise(bad):
    with pytest.raises((ValueError, TypeError)):
        build_estimator('classical').estimate(bad)


def test_learned_beats_classical_on_heldout(assets, learned):
    from adaqual_ros.quality.evaluation import evaluate_heldout

    results = evaluate_heldout({'learned': learned, 'classical': build_estimator('classical')},
                               assets, n_images=4, seed=0)
    assert results['learned']['spearman'] > results['classical']['spearman'] + 0.02, results
    assert results['learned']['mae'] < results['classical']['mae']
    assert results['learned']['spearman'] > 0.8


def test_frames_above_max_side_are_read_at_half_size(learned, val_image):
    """A full-HD frame is estimated at half size with half the cell: same grid, same numbers."""
    import cv2

    from adaqual_ros.weather import synthesize

    rainy = synthesize(val_image, 'haze_rain', 0, severity=0.5, ground_truth=False).degraded
    big = cv2.resize(rainy, (1922, 1082), interpolation=cv2.INTER_CUBIC)
    half = cv2.resize(big, (961, 541), interpolation=cv2.INTER_AREA)
    got = learned.estimate(big)
    assert got.scores.shape == grid_shape(1082, 1922, learned.cell)
    assert got.image_size == (1082, 1922)
    old_cell = learned.cell
    learned.cell = old_cell // 2
    try:
        want = learned.estimate(half)
    finally:
        learned.cell = old_cell
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    # at or below max_side nothing is resized: the full-size read differs from the half-size one
    small = big[:720, :1280]
    full = learned.estimate(small)
    learned.max_side = 10_000
    try:
        assert np.array_equal(learned.estimate(small).scores, full.scores)
        assert not np.allclose(learned.estimate(big).scores, got.scores, atol=1e-3)
    finally:
        learned.max_side = 1280


def test_clean_band_restores_clean_cells_and_their_targets(val_image):
    from adaqual_ros.quality.training import keep_clean_band
    from adaqual_ros.weather import synthesize

    rng = np.random.default_rng(3)
    crop = np.ascontiguousarray(val_image[:192, :192])
    sample = synthesize(crop, 'haze_rain', rng, cell=32)
    seen = set()
    for seed in range(12):
        mixed = keep_clean_band(sample, np.random.default_rng(seed))
        clean_px = (mixed.degraded == crop).all(axis=2)
        # The band is whole 64 px cells along one edge, one to two cells wide; every cell is
        # either back to the clean crop (targets: 5, no damage) or untouched.
        cells = clean_px.reshape(3, 64, 3, 64).all(axis=(1, 3))
        assert 1 <= cells.sum() <= 6 and cells.sum() % 3 == 0
        q_cells = np.kron(cells, np.ones((2, 2), dtype=bool))
        assert np.all(mixed.quality[q_cells] == 5.0) and np.all(mixed.types[q_cells] == 0.0)
        assert np.array_equal(mixed.quality[~q_cells], sample.quality[~q_cells])
        assert np.array_equal(mixed.degraded[~np.kron(cells, np.ones((64, 64), dtype=bool))],
                              sample.degraded[~np.kron(cells, np.ones((64, 64), dtype=bool))])
        seen.add((tuple(cells.any(axis=1)), tuple(cells.any(axis=0))))
    assert len(seen) > 2  # different edges and widths


def test_partial_edge_blocks_read_mirrored_frame_content(learned, val_image):
    import torch

    # 200x275 is not a multiple of the 32 px prediction stride: the last row and column of
    # predictions see the frame mirrored out to whole blocks, as if the caller had padded it.
    frame = np.ascontiguousarray(val_image[:200, :275])
    padded = np.pad(frame, ((0, 24), (0, 13), (0, 0)), mode='reflect')
    learned.eval()
    with torch.inference_mode():
        scores, logits = learned(torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255)
    ref_scores, _ = learned.to_cells(scores, logits, frame.shape[:2], 64)
    assert np.allclose(learned.estimate(frame).scores, ref_scores[0].numpy(), atol=1e-4)


def test_extra_clean_sources_folders_and_videos(assets, tmp_path, val_image):
    """train-quality --extra-clean: a folder's images and a video's frames join the training."""
    import cv2

    from adaqual_ros.quality.data import extra_clean_images
    from adaqual_ros.quality.training import SyntheticQualityCrops

    video = assets / 'data' / 'video' / 'people.mp4'
    if not video.is_file():
        pytest.skip('people.mp4 not in the assets')
    folder = tmp_path / 'cam'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), val_image[..., ::-1])
    n_video = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
    # the folder as given, the video relative to the assets root
    images = extra_clean_images(f'{folder},data/video/people.mp4', assets, stride=150, repeat=2,
                                max_side=480)
    assert len(images) == 2 * (1 + -(-n_video // 150))
    from adaqual_ros.quality.data import read_rgb

    assert np.array_equal(images[0], read_rgb(folder / 'a.png', 480))
    assert all(max(im.shape[:2]) == 480 for im in images)  # both downscaled to max_side
    assert images[len(images) // 2] is images[0]  # repeated, not copied
    with pytest.raises(FileNotFoundError, match='not found'):
        extra_clean_images('no/such/place', assets)
    # in-memory frames are valid dataset entries next to paths
    data = SyntheticQualityCrops(images[1:3], crop=192, clean_fraction=0.0, seed=0, reuse=1)
    image, q32, t32, q64, t64 = next(iter(data))
    assert image.shape == (3, 192, 192) and q64.shape == (3, 3)
    with pytest.raises(ValueError, match='dim_haze'):
        SyntheticQualityCrops(images[1:3], dim_haze=-0.5)


def test_anchored_scores_follow_the_init_weights_not_the_synthesis(val_image):
    # train-quality --anchor-scores: the score terms compare with the init model's scores, so a
    # fine-tune changes the type read and keeps the score level its restorer was trained on.
    import copy

    import torch

    from adaqual_ros.quality.learned import load_learned_estimator
    from adaqual_ros.quality.training import TrainConfig, quality_loss, train_learned
    from adaqual_ros.weather import synthesize

    model = load_learned_estimator().eval()
    anchor = copy.deepcopy(model)
    crop = np.ascontiguousarray(val_image[:192, :192])
    sample = synthesize(crop, 'haze_rain', np.random.default_rng(0), cell=32)
    q64 = sample.quality.reshape(3, 2, 3, 2).mean(axis=(1, 3))
    t64 = sample.types.reshape(3, 2, 3, 2, -1).mean(axis=(1, 3))
    batch = [torch.from_numpy(x).float()[None] for x in (
        np.moveaxis(sample.degraded, -1, 0) / 255.0, sample.quality, sample.types, q64, t64)]
    cfg = TrainConfig(anchor_scores=3.0)
    _, plain = quality_loss(model, batch, cfg)
    total, anchored = quality_loss(model, batch, cfg, anchor)
    assert plain['l1_q32'] > 0.05  # the synthesis' scores differ from the model's
    assert anchored['l1_q32'] < 1e-6 and anchored['l1_q64'] < 1e-6
    expected = cfg.type_weight * anchored['bce_types']
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match='init'):
        train_learned(TrainConfig(anchor_scores=1.0, init=''))


def test_window_mean_matches_brute_force():
    import torch

    from adaqual_ros.quality.learned import _window_mean

    x = torch.randn(2, 3, 7, 11, dtype=torch.float64)
    for k in (1, 3, 4, 7, 20):
        got = _window_mean(x, k)
        kh, kw = min(k, 7), min(k, 11)
        for i in range(7):
            for j in range(11):
                # the window is shifted inwards at the borders, never shrunk
                y0 = min(max(i - kh // 2, 0), 7 - kh)
                x0 = min(max(j - kw // 2, 0), 11 - kw)
                want = x[:, :, y0:y0 + kh, x0:x0 + kw].mean(dim=(2, 3))
                torch.testing.assert_close(got[:, :, i, j], want)


def test_context_window_is_validated_and_rounded_to_the_prediction_stride(learned):
    from adaqual_ros.quality.learned import load_learned_estimator
    from adaqual_ros.runtime.settings import RestorerSettings

    # the estimator alone reads as trained; the restorer asks for its window
    assert learned.context_window == 0 and RestorerSettings().quality_context == 544
    est = load_learned_estimator(context_window=100)
    assert est.context_window == 128  # rounded up to the 32 px stride
    for bad in (-32, 1.5, True, 'x'):
        with pytest.raises((ValueError, TypeError)):
            est.context_window = bad


def test_local_context_lifts_the_clean_half_of_a_large_half_hazy_frame(assets, learned):
    """
    On a large frame whose right half is hazy, the whole-frame context reads part of the clean
    half as degraded; the both-contexts read (`skip_scores`) takes most of that back, leaves the
    hazy half degraded and is never below the whole-frame read, which stays as it was (it
    conditions the model). Frames no larger than the window get no skip_scores.
    """
    from adaqual_ros.cli.bench import load_source_frames, make_streams

    sources, _ = load_source_frames(3, assets)
    streams, truth = make_streams(sources, (1280, 720), 'haze_rain', 0.6, seed=0)
    window = 544
    try:
        plain = [learned.estimate(f) for f in streams['half_clean']]
        learned.context_window = window
        both = [learned.estimate(f) for f in streams['half_clean']]
        assert all(q.skip_scores is None for q in plain)
        leak = {'whole': 0, 'both': 0}
        hazy_read = 0.0
        for p, b, t in zip(plain, both, truth['half_clean']):
            np.testing.assert_array_equal(b.scores, p.scores)
            assert (b.skip_scores >= b.scores - 1e-5).all()
            clean = t.scores >= 4.99
            leak['whole'] += int((p.scores[clean] < 4).sum())
            leak['both'] += int((b.skip_scores[clean] < 4).sum())
            hazy_read += (b.skip_scores[t.scores < 4] < 4).mean() / len(both)
        assert hazy_read > 0.95, hazy_read
        assert leak['whole'] >= 15 and leak['both'] <= leak['whole'] // 2, leak
        assert learned.estimate(streams['clean'][0][:window, :window]).skip_scores is None
        # crops carry them (the restorer's windows)
        crop = both[0].crop(64, 128, 256, 320)
        np.testing.assert_array_equal(crop.skip_scores, both[0].skip_scores[1:5, 2:7])
    finally:
        learned.context_window = 0
