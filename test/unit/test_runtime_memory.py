"""
Restorer runtime under memory faults: out-of-memory retries (smaller batches, smaller tiles, then
the CPU) and alpha channels that survive restoration.

A GPU out-of-memory cannot be caused on a CPU machine, so these tests use the runtime's test hook
(ADAQUAL_TEST_FAULT_OOM): network calls over a pixel budget raise torch.OutOfMemoryError. The
model code is real (the tiny config, randomised so it changes the frame). The move to the CPU needs
a CUDA device; those tests skip without one, and one of them causes a real CUDA out-of-memory.
"""
import copy

import numpy as np
import pytest
from test_runtime import haze, qmap_for, random_pipeline, scene, settings
import torch

from adaqual_ros.quality.types import QualityMap
from adaqual_ros.runtime import RestorationError, Restorer, build_backend
from adaqual_ros.runtime.device import native_bf16_cpu
from adaqual_ros.runtime.faults import FAULT_OOM_ENV, OomFault, is_out_of_memory
from adaqual_ros.runtime.restorer import MIN_OOM_TILE

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def pipe():
    return random_pipeline()


def fault(monkeypatch, value):
    """Set the out-of-memory hook; backends built after this read it."""
    monkeypatch.setenv(FAULT_OOM_ENV, value)


def test_out_of_memory_is_recognised_and_the_hook_is_parsed():
    assert is_out_of_memory(torch.OutOfMemoryError('x'))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate'))
    assert is_out_of_memory(RuntimeError('CUDA error: out of memory'))
    assert not is_out_of_memory(RuntimeError('shape mismatch'))
    assert not is_out_of_memory(ValueError('out of memory'))  # not an allocator failure
    assert OomFault.from_env({}) is None and OomFault.from_env({FAULT_OOM_ENV: ' '}) is None
    assert OomFault.from_env({FAULT_OOM_ENV: '4096@cuda'}) == OomFault(4096, 'cuda')
    for bad in ('lots', '-1', '1.5@cuda'):
        with pytest.raises(ValueError, match='max_pixels'):
            OomFault.from_env({FAULT_OOM_ENV: bad})
    hook = OomFault(100, 'cuda')
    hook.check((4, 64, 64, 3), 'cpu')  # another device: fits
    with pytest.raises(torch.OutOfMemoryError, match='16384 pixels'):
        OomFault(100).check((4, 64, 64, 3), 'cpu')


def test_out_of_memory_halves_tiles_then_batches_and_the_caps_stick(pipe, monkeypatch):
    # 256x256: one 256 px window (65536 px) does not fit 40000; four 128 px tiles (192 px with
    # their overlap, 36864 px each) fit one per call, not four or two.
    fault(monkeypatch, '40000')
    restorer = Restorer(settings(backend='adaqual', tile_size=256, tile_batch=4), pipeline=pipe)
    frame = haze(scene(256, 256, seed=1))
    qmap = qmap_for(256, 256)
    result = restorer.restore(frame, 'cam', quality_map=qmap)
    assert result.oom_retries == 3  # tile 256 -> 128, then 4 -> 2 -> 1 tiles per call
    stats = restorer.stats()
    assert (stats['oom_retries'], stats['moved_to_cpu'], stats['errors']) == (3, 0, 0)
    assert (stats['tile_cap'], stats['tile_batch_cap']) == (MIN_OOM_TILE, 1)
    assert 'out of memory on cpu' in stats['note']
    # The frame is what the runtime gives with those caps from the start (nothing half-done).
    monkeypatch.delenv(FAULT_OOM_ENV)
    capped = Restorer(settings(backend='adaqual', tile_size=128, tile_batch=1,
                               merge_tiles=False), pipeline=pipe)
    expected = capped.restore(frame, 'cam', quality_map=qmap)
    assert result.windows == expected.windows == 4
    np.testing.assert_array_equal(result.image, expected.image)
    assert np.abs(result.image.astype(np.float32) - frame).mean() > 2.0  # really restored
    # Sticky: the next frame starts from the caps, no retry; colour order, dtype and alpha kept.
    rgba16 = np.dstack([frame[..., ::-1], np.arange(256 * 256).reshape(256, 256) % 251])
    rgba16 = rgba16.astype(np.uint16) * 257
    again = restorer.restore(rgba16, 'cam', 'bgr', quality_map=qmap)
    assert again.oom_retries == 0 and restorer.stats()['oom_retries'] == 3
    assert again.image.shape == rgba16.shape and again.image.dtype == np.uint16
    np.testing.assert_array_equal(again.image[..., 3], rgba16[..., 3])
    bgr8 = ((again.image[..., :3].astype(np.uint32) + 128) // 257).astype(np.int32)
    assert np.abs(bgr8[..., ::-1] - expected.image.astype(np.int32)).max() <= 1


def test_out_of_memory_at_the_smallest_tiles_on_the_cpu_fails_the_frame(pipe, monkeypatch):
    fault(monkeypatch, '1000')  # nothing fits
    restorer = Restorer(settings(backend='adaqual', tile_size=256), pipeline=pipe)
    frame = haze(scene(256, 256))
    qmap = qmap_for(256, 256)
    with pytest.raises(RestorationError, match='out of memory on cpu with tiles of at most 128'):
        restorer.restore(frame, 'cam', quality_map=qmap)
    stats = restorer.stats()
    assert stats['errors'] == 1 and stats['oom_retries'] >= 2 and stats['moved_to_cpu'] == 0
    # The caps stay: the next frame fails at once instead of walking down the ladder again.
    retries = stats['oom_retries']
    with pytest.raises(RestorationError, match='out of memory'):
        restorer.restore(frame, 'cam', quality_map=qmap)
    assert restorer.stats()['oom_retries'] == retries and restorer.stats()['errors'] == 2
    # Other errors are not retried as memory faults.
    monkeypatch.delenv(FAULT_OOM_ENV)
    fresh = Restorer(settings(backend='adaqual'), pipeline=pipe)
    wrong_cell = QualityMap(np.full((8, 8), 2.0), np.zeros((8, 8, 4)), 32, (256, 256))
    with pytest.raises(RestorationError, match='quality map cell'):
        fresh.restore(frame, 'cam', quality_map=wrong_cell)
    assert fresh.stats()['oom_retries'] == 0


def test_a_new_backend_drops_the_caps(pipe, monkeypatch):
    fault(monkeypatch, '40000')
    restorer = Restorer(settings(backend='adaqual', tile_size=256), pipeline=pipe)
    frame = haze(scene(256, 256))
    restorer.restore(frame, 'cam', quality_map=qmap_for(256, 256))
    assert restorer.stats()['tile_cap'] == MIN_OOM_TILE
    restorer.update(restorer.settings.with_changes(skip_threshold=3.5))  # same backend
    assert restorer.stats()['tile_cap'] == MIN_OOM_TILE
    restorer.update(restorer.settings.with_changes(backend='classical'), wait=True)
    assert (restorer.stats()['tile_cap'], restorer.stats()['note']) == (0, '')


def test_a_backend_moved_to_the_cpu_takes_the_cpus_precision_over_the_same_weights(monkeypatch):
    # What the move does, checked on any machine (from the CPU to the CPU here).
    source = random_pipeline()
    backend = build_backend('adaqual', settings(), pipeline=source)
    with torch.no_grad():  # the encoder caches what it embeds without gradients
        source.prompt_encoder.encode(['a hazy road'])
    assert source.prompt_encoder.stats()['size'] == 1
    moved = backend.on_cpu(settings(device='cuda', half=True, compile=True))
    assert moved.pipeline is source and backend.pipeline is None  # no second copy of weights
    # bf16 where the CPU computes it natively (cpu_bf16's default), else float32; never fp16
    cpu_dtype = torch.bfloat16 if native_bf16_cpu() else torch.float32
    assert (moved.device.type, moved.plan.dtype, moved.plan.compile) == ('cpu', cpu_dtype, False)
    assert moved.pipeline.unet.dtype == cpu_dtype
    other = build_backend('adaqual', settings(), pipeline=random_pipeline())
    assert other.on_cpu(settings(cpu_bf16=False)).plan.dtype == torch.float32
    # Embeddings cached on the old device would not fit the new one.
    assert source.prompt_encoder.stats()['size'] == 0
    assert build_backend('classical').on_cpu(settings()) is None  # no network to move


@needs_cuda
@pytest.mark.parametrize('half', [False, True])
def test_out_of_memory_on_cuda_moves_the_backend_to_the_cpu(monkeypatch, half):
    fault(monkeypatch, '1@cuda')  # every call on the GPU runs out of memory; the CPU has room
    source = random_pipeline()
    reference = copy.deepcopy(source)
    restorer = Restorer(settings(backend='adaqual', device='cuda', half=half, tile_size=256),
                        pipeline=source)
    frame = haze(scene(256, 256, seed=2))
    qmap = qmap_for(256, 256)
    result = restorer.restore(frame, 'cam', quality_map=qmap)
    stats = restorer.stats()
    assert stats['moved_to_cpu'] == 1 and stats['device'] == 'cpu' and stats['errors'] == 0
    assert result.oom_retries == stats['oom_retries'] == 4  # tile, batch 2, batch 1, CPU
    assert 'running on the CPU' in stats['note'] and stats['tile_cap'] == 0
    assert source.unet.dtype == torch.float32 and source.unet.device.type == 'cpu'
    # The same frame from a CPU float32 restorer of the same weights (fp16 rounds them).
    if half:
        reference = reference.to(dtype=torch.float16).to(dtype=torch.float32)
    expected = Restorer(settings(backend='adaqual', device='cpu', tile_size=256),
                        pipeline=reference).restore(frame, 'cam', quality_map=qmap)
    assert result.image.shape == frame.shape and result.image.dtype == frame.dtype
    np.testing.assert_array_equal(result.image, expected.image)
    assert restorer.restore(frame, 'cam', quality_map=qmap).oom_retries == 0  # sticky


@needs_cuda
def test_a_real_cuda_out_of_memory_is_recovered():
    # Cap this process's CUDA allocator so that a 2048x2048 frame in one window cannot fit,
    # while the model and small tiles can: a real torch.cuda.OutOfMemoryError, no hook.
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    restorer = Restorer(settings(backend='adaqual', device='cuda', half=False, tile_size=0),
                        pipeline=random_pipeline())
    frame = haze(scene(2048, 2048))
    torch.cuda.set_per_process_memory_fraction(256 * 2 ** 20 / total)
    try:
        result = restorer.restore(frame, 'cam', quality_map=qmap_for(2048, 2048))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    stats = restorer.stats()
    assert result.oom_retries >= 1 and stats['errors'] == 0, stats
    assert result.image.shape == frame.shape and result.image.dtype == frame.dtype
    assert np.abs(result.image.astype(np.float32) - frame).mean() > 2.0
