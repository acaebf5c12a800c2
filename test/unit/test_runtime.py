"""Restorer runtime: formats, skipping clean regions, tiling, devices, backends, updates."""
import copy
import shutil
import time
import warnings

import numpy as np
import pytest
import torch

from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap, grid_shape
from adaqual_ros.runtime import (
    InvalidFrameError,
    RestorationError,
    Restorer,
    RestorerSettings,
    build_backend,
)
from adaqual_ros.runtime.device import native_bf16_cpu, plan_device, resolve_device

CELL = 64


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def random_pipeline(seed=0):
    """A tiny pipeline whose zero-initialised output layers are randomised (so it does work)."""
    from adaqual_ros.pipelines import AdaQualPipeline

    # The config's own init draws from the global RNG: seeded too, so a test's pipeline does not
    # depend on what ran before it (the bf16 test once saw a pipeline that barely changed frames).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pipe = AdaQualPipeline.from_components_config('tiny')
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in pipe.unet.parameters():
            if not param.abs().sum():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    return pipe


@pytest.fixture(scope='module')
def pipe():
    return random_pipeline()


def scene(h, w, seed=0):
    """A smooth synthetic scene with edges (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(xx / 9.0 + c) * np.cos(yy / 13.0 - c) for c in range(3)], 2)
    img[h // 3: 2 * h // 3, w // 4: w // 2] = [0.9, 0.2, 0.1]
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def haze(rgb, t=0.4, airlight=0.85):
    f = rgb.astype(np.float32) / 255.0
    return ((f * t + airlight * (1 - t)) * 255 + 0.5).astype(np.uint8)


def qmap_for(h, w, degraded=None, score=2.0, kind='haze'):
    """A QualityMap: `degraded` (grid bool) cells at `score` with type `kind`, others clean (5)."""
    gh, gw = grid_shape(h, w, CELL)
    degraded = np.ones((gh, gw), bool) if degraded is None else degraded
    scores = np.where(degraded, score, 5.0).astype(np.float32)
    probs = np.zeros((gh, gw, 4), np.float32)
    probs[..., DEGRADATION_TYPES.index(kind)] = degraded
    return QualityMap(scores, probs, CELL, (h, w))


def settings(**kw):
    kw.setdefault('quality_backend', 'classical')
    kw.setdefault('device', 'cpu')
    return RestorerSettings(**kw)


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize('backend', ['passthrough', 'classical', 'adaqual'])
@pytest.mark.parametrize('h,w', [(37, 53), (131, 97)])
def test_shape_dtype_order_preserved_for_odd_sizes(pipe, backend, h, w):
    restorer = Restorer(settings(backend=backend), pipeline=pipe)
    rgb = haze(scene(h, w))
    qmap = qmap_for(h, w)
    cases = [
        (rgb, 'rgb'), (rgb[..., ::-1].copy(), 'bgr'),
        (np.dstack([rgb, np.full((h, w), 200, np.uint8)]), 'rgb'),
        (rgb[..., 1].copy(), 'mono'), (rgb[..., 1:2].copy(), 'mono'),
        (rgb.astype(np.uint16) * 257, 'rgb'), (rgb.astype(np.float32) / 255.0, 'bgr'),
    ]
    for frame, order in cases:
        result = restorer.restore(frame, 'cam', order, quality_map=qmap)
        assert result.image.shape == frame.shape and result.image.dtype == frame.dtype
        assert result.backend == backend
        if frame.shape[-1:] == (4,):
            assert np.array_equal(result.image[..., 3], frame[..., 3])  # alpha passes through
        if backend == 'passthrough':
            assert np.array_equal(result.image, frame)
        else:
            assert not np.array_equal(result.image, frame), (order, frame.dtype)


@pytest.mark.parametrize('backend', ['classical', 'adaqual'])
def test_bgr_result_is_rgb_result_flipped(pipe, backend):
    rgb = haze(scene(96, 160))
    qmap = qmap_for(96, 160)
    a = Restorer(settings(backend=backend), pipeline=pipe).restore(rgb, 's', 'rgb', qmap).image
    b = Restorer(settings(backend=backend), pipeline=pipe).restore(
        rgb[..., ::-1], 's', 'bgr', qmap).image  # a negative-stride view is fine too
    assert np.array_equal(a, b[..., ::-1])


def test_uint16_and_float_agree_with_uint8(pipe):
    rgb = haze(scene(64, 128))
    qmap = qmap_for(64, 128)
    restorer = Restorer(settings(backend='classical'))
    r8 = restorer.restore(rgb, quality_map=qmap).image.astype(np.float32) / 255
    r16 = restorer.restore(rgb.astype(np.uint16) * 257, quality_map=qmap).image / 65535.0
    rf = restorer.restore(rgb.astype(np.float32) / 255, quality_map=qmap).image
    assert np.abs(r8 - r16).max() <= 1.5 / 255 and np.abs(r8 - rf).max() <= 1.5 / 255


def test_bad_frames_raise_clear_errors():
    restorer = Restorer(settings(backend='passthrough'))
    bad = [
        (np.zeros((8, 8, 3), np.int32), 'rgb', 'dtype'),
        (np.zeros((8, 8, 2), np.uint8), 'rgb', 'HxWxC'),
        (np.zeros((8, 8, 3), np.uint8), 'mono', 'channel'),
        (np.zeros((8, 8), np.uint8), 'rgb', 'channel'),
        (np.zeros((8, 8, 3), np.uint8), 'yuv', 'color_order'),
        (np.full((8, 8, 3), np.nan, np.float32), 'rgb', 'NaN'),
        ([[1, 2]], 'rgb', 'numpy'),
    ]
    for frame, order, word in bad:
        with pytest.raises(InvalidFrameError, match=word):
            restorer.restore(frame, color_order=order)
    assert issubclass(InvalidFrameError, ValueError)


# -- compute follows degradation ---------------------------------------------------------------


class CountingPipeline:
    """Wraps a pipeline and counts network calls (a real pipeline still does the work)."""

    def __init__(self, pipe):
        self._pipe = pipe
        self.calls = 0
        self.pixels = 0

    def __call__(self, image, **kwargs):
        self.calls += 1
        self.pixels += image.shape[0] * image.shape[2] * image.shape[3]
        return self._pipe(image, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pipe, name)


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32])
def test_fully_clean_frame_is_bit_identical_and_skips_the_network(pipe, dtype):
    restorer = Restorer(settings(backend='adaqual'), pipeline=pipe)
    counting = CountingPipeline(restorer._runtime.backend.pipeline)
    restorer._runtime.backend.pipeline = counting
    frame = scene(100, 150)
    frame = {np.uint8: frame, np.uint16: frame.astype(np.uint16) * 257 + 3,
             np.float32: frame.astype(np.float32) / 255.0 - 0.01}[dtype]  # float may leave [0,1]
    result = restorer.restore(frame, quality_map=qmap_for(100, 150, degraded=np.zeros((2, 3))))
    assert result.image.dtype == frame.dtype and np.array_equal(result.image, frame)
    assert result.image is not frame
    assert result.skipped_fraction == 1.0 and result.windows == 0 and counting.calls == 0
    assert result.processed_fraction == 0.0
    assert result.timings['model'] == 0.0


def test_clean_cells_untouched_and_only_degraded_tiles_run(pipe):
    h, w = 192, 320
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[:, 3:] = True  # right 2 of 5 columns
    frame = haze(scene(h, w))
    for merge, windows in ((True, 1), (False, 4)):
        restorer = Restorer(settings(backend='adaqual', tile_size=128, merge_tiles=merge),
                            pipeline=pipe)
        counting = CountingPipeline(restorer._runtime.backend.pipeline)
        restorer._runtime.backend.pipeline = counting
        result = restorer.restore(frame, quality_map=qmap_for(h, w, degraded))
        assert np.array_equal(result.image[:, :192], frame[:, :192])
        assert not np.array_equal(result.image[:, 192:], frame[:, 192:])
        assert result.skipped_fraction == pytest.approx(3 / 5)
        assert result.windows == windows
        assert result.timings['model'] > 0 and result.prompts is not None
        if merge:
            assert counting.pixels == h * 128  # exactly the degraded columns
            assert result.processed_fraction == pytest.approx(128 / 320)


def test_processed_fraction_is_what_the_backend_ran_on():
    # Two degraded strips at the outer columns: the network would run on the two windows, the
    # classical backend runs once on their bounding box (its dehazer needs one airlight).
    h, w = 128, 1024
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[:, :2] = degraded[:, -2:] = True
    frame = haze(scene(h, w))
    result = Restorer(settings(backend='classical', tile_size=256)).restore(
        frame, quality_map=qmap_for(h, w, degraded))
    assert result.windows == 2 and result.processed_fraction == 1.0
    assert np.array_equal(result.image[:, 128:-128], frame[:, 128:-128])  # still skipped


def test_window_bucket_grows_windows_but_leaves_clean_cells_alone(pipe):
    h, w = 320, 640
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[1:3, 2:4] = True  # a 128 px square
    frame = haze(scene(h, w))
    plain, grown = (Restorer(settings(backend='adaqual', tile_size=0, window_bucket=b),
                             pipeline=pipe).restore(frame, quality_map=qmap_for(h, w, degraded))
                    for b in (0, 256))
    assert plain.processed_fraction == pytest.approx(128 * 128 / (h * w))
    assert grown.processed_fraction == pytest.approx(256 * 256 / (h * w))
    clean = np.repeat(np.repeat(~degraded, CELL, 0), CELL, 1)[:h, :w]
    assert np.array_equal(grown.image[clean], frame[clean])
    assert not np.array_equal(grown.image[~clean], frame[~clean])
    with pytest.raises(ValueError, match='window_bucket'):
        Restorer(settings(backend='classical', window_bucket=-64))


def test_auto_tile_size_is_256_px_tiles_on_the_cpu_and_whole_frames_on_cuda(pipe):
    from adaqual_ros.runtime.settings import AUTO_TILE, CPU_TILE, tile_size_for, whole_frames_for

    assert RestorerSettings().tile_size == AUTO_TILE
    assert tile_size_for(AUTO_TILE, torch.device('cpu')) == CPU_TILE == 256
    assert tile_size_for(AUTO_TILE, torch.device('cuda', 1)) == 0
    assert tile_size_for(128, torch.device('cuda')) == 128  # an explicit size is kept
    # Only auto on CUDA runs whole frames; an explicit 0 there is one window over the damage.
    assert whole_frames_for(AUTO_TILE, torch.device('cuda', 1))
    assert whole_frames_for(AUTO_TILE, 'cuda:0')
    assert not whole_frames_for(AUTO_TILE, torch.device('cpu'))
    assert not whole_frames_for(0, torch.device('cuda'))
    assert not whole_frames_for(256, torch.device('cuda'))
    # On the CPU auto plans exactly what 256 px tiles plan: a 1024 px wide frame degraded in its
    # outer columns runs as two windows, the clean middle is never run.
    h, w = 128, 1024
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[:, :2] = degraded[:, -2:] = True
    frame = haze(scene(h, w))
    results = [Restorer(settings(backend='adaqual', tile_size=size), pipeline=pipe).restore(
        frame, quality_map=qmap_for(h, w, degraded)) for size in (AUTO_TILE, 256, 0)]
    assert results[0].windows == results[1].windows == 2
    assert results[0].processed_fraction == results[1].processed_fraction == pytest.approx(0.25)
    assert np.array_equal(results[0].image, results[1].image)
    assert results[2].windows == 1 and results[2].processed_fraction == 1.0
    assert Restorer(settings(backend='classical')).stats()['tile_size'] == 256  # as run
    with pytest.raises(ValueError, match='tile_size'):
        Restorer(settings(tile_size=-2))


def test_skip_border_is_soft(pipe):
    h, w = 64, 256
    degraded = np.array([[False, False, True, True]])
    restorer = Restorer(settings(backend='classical', blend_ramp=16))
    frame = haze(scene(h, w), t=0.3)
    part = restorer.restore(frame, quality_map=qmap_for(h, w, degraded)).image.astype(np.float32)
    change = np.abs(part - frame).mean(axis=(0, 2))
    assert change[:128].max() == 0  # clean side bit-identical
    # Inside the degraded side the change ramps up over the blend width.
    assert change[128] < change[136] < change[150] and change[128] < 0.2 * change[200]


def test_degraded_cells_grow_by_the_skip_margin():
    from adaqual_ros.runtime.restorer import degraded_cells

    scores = np.full((5, 6), 5.0)
    scores[0, 0] = 2.0  # one degraded corner cell
    assert np.array_equal(degraded_cells(scores, 4.0), scores < 4.0)
    grown = degraded_cells(scores, 4.0, margin=1)
    assert grown[:2, :2].all() and grown.sum() == 4  # its neighbours, clipped at the border
    assert degraded_cells(scores, 4.0, margin=2).sum() == 9
    assert not degraded_cells(np.full((5, 6), 4.5), 4.0, margin=3).any()  # clean stays clean


def test_degraded_cells_take_the_whole_frame_above_the_share():
    from adaqual_ros.runtime.restorer import degraded_cells

    scores = np.full((5, 6), 5.0)
    scores[0, :3] = 2.0  # 3 of 30 cells degraded
    assert degraded_cells(scores, 4.0, whole_share=0.1).all()  # at the share: every cell
    assert np.array_equal(degraded_cells(scores, 4.0, whole_share=0.11), scores < 4.0)
    assert degraded_cells(scores, 4.0, margin=1, whole_share=0.11).sum() == 8  # margin as before
    assert not degraded_cells(np.full((5, 6), 4.5), 4.0, whole_share=0.01).any()  # clean stays


def test_whole_frame_share_restores_the_clean_reads_of_a_mostly_degraded_frame(pipe):
    h, w = 192, 192
    degraded = np.zeros((3, 3), bool)
    degraded[:2] = True  # 6 of 9 cells read as degraded
    frame = haze(scene(h, w), t=0.3)
    corner = (slice(160, 192), slice(0, 32))  # a clean-read cell, beyond the blend ramp
    cells, whole = (Restorer(settings(backend='adaqual', whole_frame_share=s), pipeline=pipe)
                    .restore(frame, quality_map=qmap_for(h, w, degraded)) for s in (0.7, 0.6))
    assert np.array_equal(cells.image[corner], frame[corner])  # 6/9 < 0.7: cells on their own
    assert not np.array_equal(whole.image[corner], frame[corner])  # 6/9 >= 0.6: every cell
    assert cells.skipped_fraction == pytest.approx(1 / 3) and whole.skipped_fraction == 0
    clean = Restorer(settings(backend='adaqual', whole_frame_share=0.01), pipeline=pipe).restore(
        frame, quality_map=qmap_for(h, w, np.zeros((3, 3), bool)))
    assert np.array_equal(clean.image, frame) and clean.windows == 0
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match='whole_frame_share'):
            Restorer(settings(backend='passthrough', whole_frame_share=bad))


def test_whole_frame_share_holds_a_stream_whole_within_the_hysteresis(pipe):
    from adaqual_ros.runtime.settings import WHOLE_FRAME_HYSTERESIS

    h, w = 192, 192
    frame = haze(scene(h, w), t=0.3)

    def share_map(n):  # the first n of 9 cells degraded
        cells = np.zeros(9, bool)
        cells[:n] = True
        return qmap_for(h, w, cells.reshape(3, 3))

    assert 6 / 9 >= 0.7 - WHOLE_FRAME_HYSTERESIS > 5 / 9
    restorer = Restorer(settings(backend='classical', whole_frame_share=0.7), pipeline=pipe)

    def skipped(n, stream='cam'):
        return restorer.restore(frame, stream_id=stream, quality_map=share_map(n)).skipped_fraction

    assert skipped(6, 'other') == pytest.approx(3 / 9)  # below 0.7 on a fresh stream: cells
    assert skipped(9) == 0  # whole
    assert skipped(6) == 0  # 0.67: held whole within the band
    assert skipped(5) == pytest.approx(4 / 9)  # 0.56: below the band, cells again
    assert skipped(6) == pytest.approx(3 / 9)  # no longer held
    off = Restorer(settings(backend='classical', whole_frame_share=1.0), pipeline=pipe)
    off.restore(frame, stream_id='cam', quality_map=share_map(9))
    assert off.restore(frame, stream_id='cam',
                       quality_map=share_map(8)).skipped_fraction == pytest.approx(1 / 9)


def test_classical_backend_dehazes_a_fog_frame_restored_whole_everywhere():
    """Cells read clean in a frame restored whole still get the dehazer at full strength."""
    from adaqual_ros.runtime.classical import dehaze

    h, w = 192, 192
    frame = haze(scene(h, w), t=0.4)
    cells = np.ones(9, bool)
    cells[-2:] = False  # 7 of 9 cells read as haze, the last two as clean
    qmap = qmap_for(h, w, cells.reshape(3, 3), score=3.0)
    full = np.clip(dehaze(frame.astype(np.float32) / 255.0) * 255.0 + 0.5, 0, 255)
    whole = Restorer(settings(backend='classical', whole_frame_share=0.7)).restore(
        frame, stream_id='fog', quality_map=qmap)
    assert whole.skipped_fraction == 0
    assert np.abs(whole.image.astype(np.float32) - full).max() <= 1
    # fog_contrast (off by default) equalises the fog frame's contrast as well.
    assert not RestorerSettings().fog_contrast
    contrast = Restorer(settings(backend='classical', whole_frame_share=0.7,
                                 fog_contrast=True)).restore(frame, stream_id='fog',
                                                             quality_map=qmap)
    assert np.abs(contrast.image.astype(np.float32) - full).mean() > 2
    cellwise = Restorer(settings(backend='classical', whole_frame_share=1.0)).restore(
        frame, stream_id='fog', quality_map=qmap)
    assert cellwise.skipped_fraction == pytest.approx(2 / 9)
    assert np.array_equal(cellwise.image[h - CELL:, w // 3:], frame[h - CELL:, w // 3:])


def test_skip_margin_restores_a_lone_clean_read_inside_degraded_cells(pipe):
    h, w = 192, 192
    degraded = np.ones((3, 3), bool)
    degraded[1, 1] = False  # the estimator reads the middle of a foggy frame as clean
    frame = haze(scene(h, w), t=0.3)
    centre = (slice(80, 112), slice(80, 112))  # inside the middle cell, beyond the blend ramp
    # 8 of 9 cells degraded: whole_frame_share off, so that the margin alone decides
    alone, grown = (Restorer(settings(backend='adaqual', skip_margin=m, whole_frame_share=1.0),
                             pipeline=pipe).restore(frame, quality_map=qmap_for(h, w, degraded))
                    for m in (0, 1))
    assert np.array_equal(alone.image[centre], frame[centre])  # passed through on its own score
    assert not np.array_equal(grown.image[centre], frame[centre])  # restored with its neighbours
    assert alone.skipped_fraction == pytest.approx(1 / 9) and grown.skipped_fraction == 0
    # A clean frame still comes back bit-identical whatever the margin.
    clean = Restorer(settings(backend='adaqual', skip_margin=2), pipeline=pipe).restore(
        frame, quality_map=qmap_for(h, w, np.zeros((3, 3), bool)))
    assert np.array_equal(clean.image, frame) and clean.windows == 0
    with pytest.raises(ValueError, match='skip_margin'):
        Restorer(settings(backend='passthrough', skip_margin=9))


def test_per_frame_overrides_change_which_cells_are_restored_and_nothing_else():
    """restore(overrides=...) is one camera's own skip rule; the runtime's settings stay."""
    h, w = 192, 192
    frame = haze(scene(h, w), t=0.3)
    qmap = qmap_for(h, w, score=3.0)  # every cell at 3.0
    restorer = Restorer(settings(backend='classical'))
    base = restorer.restore(frame, 'a', quality_map=qmap)
    assert base.skipped_fraction == 0 and not np.array_equal(base.image, frame)
    skipped = restorer.restore(frame, 'b', quality_map=qmap, overrides={'skip_threshold': 2.5})
    assert skipped.skipped_fraction == 1 and np.array_equal(skipped.image, frame)
    again = restorer.restore(frame, 'a', quality_map=qmap)  # the next frame: the node's again
    assert np.array_equal(again.image, base.image)
    assert restorer.active_settings.skip_threshold == 4.0
    with pytest.raises(ValueError, match=r"cannot override \['steps'\]"):
        restorer.restore(frame, quality_map=qmap, overrides={'steps': 1})
    with pytest.raises(ValueError, match='skip_margin'):
        restorer.restore(frame, quality_map=qmap, overrides={'skip_margin': -1})

def test_tiled_and_untiled_agree(pipe):
    h, w = 192, 256
    frame = haze(scene(h, w, seed=3))
    qmap = qmap_for(h, w)
    untiled = Restorer(settings(backend='adaqual', tile_size=0), pipeline=pipe)
    tiled = Restorer(settings(backend='adaqual', tile_size=128, tile_overlap=64,
                              merge_tiles=False), pipeline=pipe)
    a = untiled.restore(frame, 'cam', quality_map=qmap)
    b = tiled.restore(frame, 'cam', quality_map=qmap)
    assert a.windows == 1 and b.windows == 4
    diff = np.abs(a.image.astype(np.float32) - b.image.astype(np.float32))
    change = np.abs(a.image.astype(np.float32) - frame).mean()
    assert change > 2.0  # the network really changes the frame
    assert diff.mean() < 0.1 * change and np.percentile(diff, 99) <= 6


def test_start_noise_fixed_per_stream(pipe):
    frame = haze(scene(64, 128))
    qmap = qmap_for(64, 128)
    restorer = Restorer(settings(backend='adaqual', seed=5), pipeline=pipe)
    first = restorer.restore(frame, 'left', quality_map=qmap).image
    other = restorer.restore(frame, 'right', quality_map=qmap).image
    again = restorer.restore(frame, 'left', quality_map=qmap).image
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


# -- quality estimation and cache ----------------------------------------------------------


def test_quality_comes_through_the_per_stream_cache():
    frame = haze(scene(128, 192))
    restorer = Restorer(settings(backend='classical'))
    first = restorer.restore(frame, 'a')
    second = restorer.restore(frame, 'a')
    other = restorer.restore(frame, 'b')
    assert first.cache_hit is False and second.cache_hit is True and other.cache_hit is False
    assert first.quality_map.image_size == (128, 192)
    stats = restorer.stats()
    assert stats['frames'] == 3 and stats['cache_lookups'] == 3
    off = Restorer(settings(backend='classical', cache=RestorerSettings().cache.__class__(
        enabled=False)))
    assert off.restore(frame).cache_hit is None


def test_the_cache_ages_maps_by_the_frames_stamps_when_given():
    """Offline runs (a video's frame times) reuse maps however slow the machine is."""
    frame = haze(scene(128, 192))
    cache = RestorerSettings().cache.__class__(max_age_s=0.05)
    restorer = Restorer(settings(backend='classical', cache=cache))
    assert restorer.restore(frame, 'video', stamp=10.0).cache_hit is False
    time.sleep(0.1)  # longer than max_age_s on the wall clock, 0.02 s in the video
    assert restorer.restore(frame, 'video', stamp=10.02).cache_hit is True
    assert restorer.restore(frame, 'video', stamp=10.1).cache_hit is False  # 0.08 s: too old
    assert restorer.restore(frame, 'live').cache_hit is False
    time.sleep(0.1)
    assert restorer.restore(frame, 'live').cache_hit is False  # the wall clock without stamps
    for bad in (float('nan'), float('inf'), '1.0'):
        with pytest.raises(InvalidFrameError, match='stamp'):
            restorer.restore(frame, 'video', stamp=bad)


# -- devices, backends, errors -----------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the fallback on a CPU-only machine')
def test_cuda_request_falls_back_to_cpu_with_a_warning(pipe):
    with pytest.warns(RuntimeWarning, match='CUDA is not available'):
        assert resolve_device('cuda') == torch.device('cpu')
    with pytest.warns(RuntimeWarning, match='CUDA'):
        plan = plan_device('cuda:0', half=True)
    # no fp16 on the CPU: the CPU's own precision
    assert plan.dtype == (torch.bfloat16 if native_bf16_cpu() else torch.float32)
    with pytest.warns(RuntimeWarning, match='CUDA'):
        restorer = Restorer(settings(backend='adaqual', device='cuda'), pipeline=pipe)
    result = restorer.restore(haze(scene(64, 64)), quality_map=qmap_for(64, 64))
    assert result.backend == 'adaqual' and restorer.stats()['device'] == 'cpu'


@pytest.mark.skipif(not native_bf16_cpu(), reason='this CPU has no native bfloat16')
def test_bf16_on_a_native_cpu_by_default_close_to_float32_and_keeps_clean_cells():
    assert plan_device('cpu').dtype == torch.bfloat16
    assert plan_device('cpu', cpu_bf16=False).dtype == torch.float32
    h, w = 128, 192
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[:, 1:] = True
    frame, qmap = haze(scene(h, w, seed=4)), qmap_for(h, w, degraded)
    pipeline = random_pipeline(6)
    full = Restorer(settings(backend='adaqual', cpu_bf16=False), pipeline=copy.deepcopy(pipeline))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # nothing to warn about (diffusers' cast warning)
        fast = Restorer(settings(backend='adaqual'), pipeline=pipeline)
    expected, result = full.restore(frame, quality_map=qmap), fast.restore(frame, quality_map=qmap)
    backend = fast._runtime.backend.pipeline
    assert backend.unet.dtype == backend.text_encoder.dtype == torch.bfloat16
    assert fast.stats()['precision'] == 'bfloat16' and full.stats()['precision'] == 'float32'
    assert result.image.dtype == frame.dtype and result.image.shape == frame.shape
    assert np.array_equal(result.image[:, :64], frame[:, :64])  # the clean column untouched
    change = np.abs(expected.image.astype(int) - frame.astype(int)).mean()
    diff = np.abs(result.image.astype(int) - expected.image.astype(int))
    assert change > 2 and diff.max() <= 3 and diff.mean() < 0.1 * change
    # A change of the setting builds a new backend, in the new precision.
    fast.update(fast.settings.with_changes(cpu_bf16=False), wait=True)
    assert fast._runtime.backend.pipeline.unet.dtype == torch.float32


def test_a_cpu_without_native_bf16_runs_float32_whatever_cpu_bf16_says(monkeypatch):
    # This machine has native bf16; a CPU without it is what the probes would report there.
    import platform

    for name in ('_is_amx_tile_supported', '_is_avx512_bf16_supported'):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    monkeypatch.setattr(platform, 'machine', lambda: 'x86_64')
    assert native_bf16_cpu() is False
    assert plan_device('cpu', cpu_bf16=True).dtype == torch.float32
    restorer = Restorer(settings(backend='adaqual', cpu_bf16=True), pipeline=random_pipeline(1))
    assert restorer._runtime.backend.pipeline.unet.dtype == torch.float32
    assert restorer.stats()['precision'] == 'float32'
    monkeypatch.setattr(platform, 'machine', lambda: 'aarch64')
    assert native_bf16_cpu() is None  # torch cannot tell there: float32 too
    assert plan_device('cpu', cpu_bf16=True).dtype == torch.float32


def test_auto_device_and_bad_device_names():
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert resolve_device('auto').type == expected
    with pytest.raises(ValueError, match='unknown device'):
        resolve_device('tpu')


def test_build_backend_by_name_and_unknown_names(pipe):
    assert build_backend('classical').name == 'classical'
    assert build_backend('passthrough').name == 'passthrough'
    assert build_backend('adaqual', settings(), pipeline=pipe).name == 'adaqual'
    with pytest.raises(ValueError, match=r"names: \['adaqual', 'classical', 'passthrough'\]"):
        build_backend('magic')
    with pytest.raises(ValueError, match='unknown backend'):
        Restorer(settings(backend='magic'))
    with pytest.raises(ValueError, match="unknown compile_mode 'fastest'"):
        Restorer(settings(backend='classical', compile_mode='fastest'))


def test_backend_failure_raises_restoration_error(pipe):
    restorer = Restorer(settings(backend='adaqual'), pipeline=pipe)
    frame = haze(scene(64, 64))
    wrong_cell = QualityMap(np.full((2, 2), 2.0), np.zeros((2, 2, 4)), 32, (64, 64))
    with pytest.raises(RestorationError, match='cell'):
        restorer.restore(frame, quality_map=wrong_cell)
    assert restorer.stats()['errors'] == 1
    with pytest.raises(RestorationError, match='quality map is for'):
        restorer.restore(frame, quality_map=qmap_for(64, 128))
    with pytest.raises(InvalidFrameError, match='QualityMap'):
        restorer.restore(frame, quality_map=np.ones((1, 1)))


def test_a_network_that_returns_nan_fails_the_frame_instead_of_blackening_it():
    broken = random_pipeline(seed=3)
    with torch.no_grad():
        next(broken.unet.parameters()).fill_(float('nan'))
    restorer = Restorer(settings(backend='adaqual'), pipeline=broken)
    frame = haze(scene(64, 96))
    with pytest.raises(RestorationError, match=r'NaN/Inf value\(s\) on a 96x64 window'):
        restorer.restore(frame, quality_map=qmap_for(64, 96))
    assert restorer.stats()['errors'] == 1
    # A clean frame never reaches the network and still comes back as it was.
    clean = restorer.restore(frame, quality_map=qmap_for(64, 96, score=5.0))
    assert np.array_equal(clean.image, frame)


def test_missing_checkpoint_falls_back_to_classical_or_raises(tmp_path):
    missing = str(tmp_path / 'nothing')
    with pytest.warns(RuntimeWarning, match='using classical'):
        restorer = Restorer(settings(backend='adaqual', model_path=missing))
    assert restorer.backend_name == 'classical'
    assert 'adaqual backend unavailable' in restorer.stats()['note']
    with pytest.raises(RestorationError, match='adaqual'):
        Restorer(settings(backend='adaqual', model_path=missing, fallback_to_classical=False))


# -- live updates --------------------------------------------------------------------------------


def test_update_swaps_light_settings_at_once():
    restorer = Restorer(settings(backend='classical'))
    frame = haze(scene(64, 128))
    qmap = qmap_for(64, 128)
    assert restorer.restore(frame, quality_map=qmap).windows == 1
    restorer.update(restorer.settings.with_changes(skip_threshold=1.5))
    assert restorer.restore(frame, quality_map=qmap).windows == 0  # score 2 is now "clean"
    with pytest.raises(ValueError, match='skip_threshold'):
        restorer.update(restorer.settings.with_changes(skip_threshold=9.0))


def test_quality_context_reaches_the_learned_estimator_and_a_change_rebuilds_it():
    restorer = Restorer(settings(backend='passthrough', quality_backend='learned'))
    frame = haze(scene(64, 128))
    restorer.restore(frame, 's')
    first = restorer._runtime.estimator
    assert first.context_window == RestorerSettings().quality_context == 544
    restorer.update(restorer.settings.with_changes(quality_context=0), wait=True)
    assert restorer._runtime.estimator is not first
    assert restorer._runtime.estimator.context_window == 0
    for bad in (-1, 5000):
        with pytest.raises(ValueError, match='quality_context'):
            restorer.update(restorer.settings.with_changes(quality_context=bad))
    # the other estimators have no context window; the setting is theirs to ignore
    restorer.update(restorer.settings.with_changes(quality_backend='classical'), wait=True)
    assert restorer.restore(frame, 's').quality_map is not None


def test_skip_scores_choose_the_cells_of_a_patchwork_frame_only():
    from adaqual_ros.runtime.restorer import degraded_cells

    scores = np.full((4, 4), 5.0)
    scores[:, :3] = 3.0  # 75 % degraded
    skip = scores.copy()
    skip[:, 2] = 4.5     # read clean in its own neighbourhood
    np.testing.assert_array_equal(degraded_cells(scores, 4.0, 0, 1.0, skip), skip < 4.0)
    # whole frames are decided by the scores, so the skip read cannot break one up
    assert degraded_cells(scores, 4.0, 0, 0.7, skip).all()
    np.testing.assert_array_equal(degraded_cells(scores, 4.0, 1, 1.0, skip),
                                  degraded_cells(skip, 4.0, 1, 1.0))
    with pytest.raises(ValueError, match='skip_scores'):
        QualityMap(scores, np.zeros((4, 4, 4)), 64, (256, 256), skip_scores=np.ones((3, 4)))


def test_the_local_context_changes_only_which_cells_of_a_patchwork_frame_pass(assets):
    from adaqual_ros.cli.bench import load_source_frames, make_streams

    sources, _ = load_source_frames(1, assets)
    streams, _ = make_streams(sources, (1280, 720), 'haze_rain', 0.6, seed=0)

    def run(context, frame):
        restorer = Restorer(settings(backend='classical', quality_backend='learned',
                                     quality_context=context))
        return restorer.restore(frame, 's')

    half = [run(c, streams['half_clean'][0]) for c in (0, 544)]
    assert half[1].processed_fraction < half[0].processed_fraction - 0.05
    np.testing.assert_array_equal(half[1].quality_map.scores, half[0].quality_map.scores)
    # a frame restored whole is restored exactly as before
    whole = [run(c, streams['degraded'][0]) for c in (0, 544)]
    assert whole[0].skipped_fraction == whole[1].skipped_fraction == 0.0
    np.testing.assert_array_equal(whole[1].image, whole[0].image)


def test_new_checkpoint_loads_off_the_callers_thread(pipe, tmp_path):
    pipe.save_pretrained(str(tmp_path / 'ckpt'))
    restorer = Restorer(settings(backend='classical'))
    frame = haze(scene(64, 128))
    qmap = qmap_for(64, 128)
    start = time.perf_counter()
    restorer.update(restorer.settings.with_changes(backend='adaqual',
                                                   model_path=str(tmp_path / 'ckpt')))
    returned_s = time.perf_counter() - start
    during = restorer.restore(frame, quality_map=qmap)  # keeps working while it loads
    assert during.backend in ('classical', 'adaqual')
    assert restorer.wait_for_update(timeout=120)
    after = restorer.restore(frame, quality_map=qmap)
    assert after.backend == 'adaqual' and restorer.stats()['updates'] == 1
    assert restorer.active_settings.model_path == str(tmp_path / 'ckpt')
    assert returned_s < 1.0
    # A light change made while a checkpoint loads is kept when the load lands.
    restorer.update(restorer.settings.with_changes(backend='classical'), wait=True)
    restorer.update(restorer.settings.with_changes(backend='adaqual'))
    restorer.update(restorer.settings.with_changes(skip_threshold=1.5))
    assert restorer.active_settings.skip_threshold == 1.5  # at once, on the running backend
    assert restorer.active_settings.backend == 'classical'
    assert restorer.wait_for_update(timeout=120)
    assert restorer.backend_name == 'adaqual' and restorer.active_settings.skip_threshold == 1.5
    restorer.update(restorer.settings.with_changes(skip_threshold=4.0))
    # A failed load keeps the running backend and says why.
    restorer.update(restorer.settings.with_changes(model_path=str(tmp_path / 'missing'),
                                                   fallback_to_classical=False))
    assert restorer.wait_for_update(timeout=60)
    assert restorer.restore(frame, quality_map=qmap).backend == 'adaqual'
    stats = restorer.stats()
    assert stats['failed_updates'] == 1 and 'missing' in stats['last_error']


def test_shipped_checkpoint_restores_any_size():
    from adaqual_ros.pipelines import default_pipeline_path

    if not (default_pipeline_path() / 'model_index.json').is_file():
        pytest.skip('no shipped adaqual_small checkpoint yet')
    restorer = Restorer(settings(backend='adaqual', fallback_to_classical=False))
    assert restorer.backend_name == 'adaqual'
    frame = haze(scene(75, 133), t=0.5)
    result = restorer.restore(frame[..., ::-1].copy(), 'ship', 'bgr',
                              quality_map=qmap_for(75, 133))
    assert result.image.shape == frame.shape and result.image.dtype == np.uint8
    assert result.prompts is not None and 'haze' in result.prompts.global_prompt.lower()
    assert not np.array_equal(result.image, frame[..., ::-1])


def test_thread_setting_applies_to_torch_and_opencv():
    import cv2

    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        Restorer(settings(backend='passthrough', threads=1))
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        with pytest.raises(ValueError, match='threads'):
            Restorer(settings(backend='passthrough', threads=-1))
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


# -- torch.compile ----------------------------------------------------------------------------

def _half_degraded(h=128, w=192):
    degraded = np.zeros(grid_shape(h, w, CELL), bool)
    degraded[:, 2:] = True
    return haze(scene(h, w)), qmap_for(h, w, degraded)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_auto_tiles_on_cuda_run_the_whole_frame_and_clean_cells_stay_untouched():
    # One input shape per camera on a GPU, where every new window shape costs cuDNN set-up.
    frame, qmap = _half_degraded()
    restorer = Restorer(settings(backend='adaqual', device='cuda'), pipeline=random_pipeline(3))
    result = restorer.restore(frame, quality_map=qmap)
    assert result.windows == 1 and result.processed_fraction == 1.0
    assert np.array_equal(result.image[:, :128], frame[:, :128])
    assert not np.array_equal(result.image[:, 128:], frame[:, 128:])
    explicit = Restorer(settings(backend='adaqual', device='cuda', tile_size=0),
                        pipeline=random_pipeline(3)).restore(frame, quality_map=qmap)
    assert explicit.windows == 1 and explicit.processed_fraction < 1.0  # around the damage only


def test_a_freshly_built_pipeline_runs_in_eval_mode_and_reuses_prompt_embeddings():
    # A pipeline left in training mode re-encoded every prompt with autograd on every frame
    # (the untrained configs `adaqual bench --model-config` times).
    pipe = random_pipeline(5)
    assert pipe.text_encoder.training
    restorer = Restorer(settings(backend='adaqual'), pipeline=pipe)
    frame, qmap = _half_degraded()
    restorer.restore(frame, quality_map=qmap)
    misses = pipe.prompt_encoder.stats()['misses']
    assert misses > 0
    restorer.restore(frame, quality_map=qmap)
    assert pipe.prompt_encoder.stats()['misses'] == misses
    assert pipe.prompt_encoder.stats()['hits'] > 0
    assert not pipe.text_encoder.training and not pipe.unet.training


@pytest.mark.skipif(shutil.which('g++') is None, reason='torch.compile on the CPU needs g++')
@pytest.mark.parametrize('mode', ['default', 'reduce-overhead'])
def test_compiled_network_sees_whole_frames_and_clean_cells_stay_untouched(mode):
    frame, qmap = _half_degraded()
    restorer = Restorer(settings(backend='adaqual', compile=True, compile_mode=mode),
                        pipeline=random_pipeline(3))
    for _ in range(2):  # one shape per camera: the second frame reuses the compiled graph
        result = restorer.restore(frame, quality_map=qmap)
        assert result.windows == 1 and result.processed_fraction == 1.0
        assert np.array_equal(result.image[:, :128], frame[:, :128])
        assert not np.array_equal(result.image[:, 128:], frame[:, 128:])
    backend = restorer._runtime.backend
    assert backend.compiled and backend.whole_frames  # compiled, not fallen back
    # CUDA graphs need CUDA: on the CPU that mode runs without them, and the restorer counts it.
    skips = restorer.stats()['cudagraph_skips']
    assert (skips > 0) if mode == 'reduce-overhead' else (skips == 0)


def test_compile_failure_at_the_first_call_runs_eagerly_with_a_warning():
    from torch._inductor import config as inductor_config

    frame, qmap = _half_degraded(128, 256)
    pipeline = random_pipeline(4)
    expected = Restorer(settings(backend='adaqual'), pipeline=pipeline).restore(
        frame, quality_map=qmap).image
    torch._dynamo.reset()
    with inductor_config.patch({'cpp.cxx': ('no-such-compiler',), 'fx_graph_cache': False}):
        restorer = Restorer(settings(backend='adaqual', compile=True), pipeline=pipeline)
        with pytest.warns(RuntimeWarning, match='torch.compile failed at the first call'):
            result = restorer.restore(frame, quality_map=qmap)
    torch._dynamo.reset()
    assert not restorer._runtime.backend.compiled
    assert not restorer._runtime.backend.whole_frames
    # That frame was already planned as one whole window; clean cells stay untouched anyway.
    assert np.array_equal(result.image[:, :128], frame[:, :128])
    # From the next frame on: the eager network on adaptive windows, as without compile.
    assert np.array_equal(restorer.restore(frame, quality_map=qmap).image, expected)


def test_a_pipeline_trained_with_its_estimator_reads_frames_with_it(tmp_path):
    # `adaqual train joint_estimator=true` saves the estimator in the pipeline's estimator/
    # folder; the restorer follows the estimator it trained with, so the runtime must use it.
    from adaqual_ros.pipelines import estimator_weights, paired_estimator_path
    from adaqual_ros.quality.learned import default_checkpoint_path, load_learned_estimator

    folder = tmp_path / 'pipe'
    random_pipeline().save_pretrained(str(folder))
    assert paired_estimator_path(folder) is None
    trained = load_learned_estimator()
    with torch.no_grad():
        # reads every frame as damaged: score logit 0 everywhere, a score of 3
        trained.head[2].weight[0] = 0.0
        trained.head[2].bias[0] = 0.0
    trained.save_pretrained(str(folder / 'estimator'))
    assert paired_estimator_path(folder) == folder / 'estimator'
    # (eval-restore resolves its --quality-model-path the same way)
    assert estimator_weights('learned', '', folder) == folder / 'estimator'
    assert estimator_weights('learned', '/w', folder) == '/w'
    assert estimator_weights('classical', '', folder) is None
    frame = haze(scene(128, 192), t=0.8)

    def read(**kw):
        restorer = Restorer(settings(**{'backend': 'adaqual', 'quality_backend': 'learned',
                                        'model_path': str(folder), **kw}))
        return restorer.restore(frame, 's').quality_map.scores

    paired = trained.estimate(frame).scores
    shipped = load_learned_estimator().estimate(frame).scores
    assert paired.mean() < shipped.mean() - 0.2
    np.testing.assert_allclose(read(), paired, atol=1e-5)
    # told another estimator's weights, it uses those
    np.testing.assert_allclose(read(quality_model_path=str(default_checkpoint_path())), shipped,
                               atol=1e-5)
    # Only the model was trained with it: the classical backend reads with the shipped weights.
    assert estimator_weights('learned', '', folder, paired=False) is None
    np.testing.assert_allclose(read(backend='classical'), shipped, atol=1e-5)
    # A live switch between the two changes the estimator, and maps cached from the other one
    # (the cache is on by default) do not condition the next frame.
    restorer = Restorer(settings(backend='adaqual', quality_backend='learned',
                                 model_path=str(folder)))
    np.testing.assert_allclose(restorer.restore(frame, 's').quality_map.scores, paired, atol=1e-5)
    restorer.update(restorer.settings.with_changes(backend='classical'), wait=True)
    result = restorer.restore(frame, 's')
    assert result.backend == 'classical'
    np.testing.assert_allclose(result.quality_map.scores, shipped, atol=1e-5)
    restorer.update(restorer.settings.with_changes(backend='adaqual'), wait=True)
    np.testing.assert_allclose(restorer.restore(frame, 's').quality_map.scores, paired, atol=1e-5)
    # The classical backend keeps its estimator and cached maps when model_path changes (it
    # reads with the shipped weights whatever the pipeline); the model does not.
    restorer.update(restorer.settings.with_changes(backend='classical'), wait=True)
    before = restorer._runtime
    restorer.update(restorer.settings.with_changes(model_path=''), wait=True)
    assert restorer._runtime.estimator is before.estimator
    assert restorer._runtime.cache is before.cache
    restorer.update(restorer.settings.with_changes(backend='adaqual', model_path=str(folder)),
                    wait=True)
    before = restorer._runtime
    restorer.update(restorer.settings.with_changes(model_path=''), wait=True)
    assert restorer._runtime.estimator is not before.estimator
    np.testing.assert_allclose(restorer.restore(frame, 's').quality_map.scores, shipped,
                               atol=1e-5)
