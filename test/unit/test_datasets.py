"""Datasets: synthetic pairs, paired folders, YOLO folders and the held-out set."""
import json

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from adaqual_ros.training.datasets import (
    HeldoutSet,
    PairedFolder,
    SyntheticPairs,
    YoloFolder,
    build_heldout_set,
    parse_yolo_labels,
)
from adaqual_ros.weather import CONDITIONS


def _write_bgr(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _textured(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _red(h=40, w=50):
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = 255  # red in RGB
    return image


# --- PairedFolder -------------------------------------------------------------------------


def test_paired_folder_is_sorted_and_rgb(tmp_path):
    for name in ('b.png', 'a.png', 'c.png'):
        _write_bgr(tmp_path / 'degraded' / name, _red())
        _write_bgr(tmp_path / 'clean' / name, _red())
    data = PairedFolder(tmp_path)
    assert [p.name for p, _ in data.pairs] == ['a.png', 'b.png', 'c.png']
    item = data[0]
    assert item['lq'].shape == (3, 40, 50) and item['lq'].dtype == torch.float32
    # One BGR -> RGB conversion: the red file comes back red (channel 0), not blue.
    assert torch.all(item['lq'][0] == 1.0) and torch.all(item['lq'][2] == 0.0)
    assert torch.equal(item['lq'], item['gt'])
    assert item['lq_path'].endswith('a.png') and item['gt_path'].endswith('a.png')


def test_paired_folder_raises_on_a_missing_partner(tmp_path):
    _write_bgr(tmp_path / 'degraded' / 'x.png', _red())
    _write_bgr(tmp_path / 'degraded' / 'y.png', _red())
    _write_bgr(tmp_path / 'clean' / 'x.png', _red())
    with pytest.raises(FileNotFoundError, match='y.png'):
        PairedFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        PairedFolder(tmp_path / 'nowhere')


def test_paired_folder_matches_stems_and_checks_sizes(tmp_path):
    _write_bgr(tmp_path / 'degraded' / 'p.png', _red(40, 50))
    _write_bgr(tmp_path / 'clean' / 'p.jpg', _red(40, 60))
    data = PairedFolder(tmp_path)
    assert data.pairs[0][1].name == 'p.jpg'
    with pytest.raises(ValueError, match='differ'):
        data[0]


def test_paired_folder_crops_the_same_window(tmp_path):
    image = _textured(64, 80, 1)
    _write_bgr(tmp_path / 'degraded' / 'a.png', image)
    _write_bgr(tmp_path / 'clean' / 'a.png', image)
    data = PairedFolder(tmp_path, crop=32, flip=True, seed=3)
    item = data[0]
    assert item['lq'].shape == (3, 32, 32)
    assert torch.equal(item['lq'], item['gt'])
    assert torch.equal(data[0]['lq'], item['lq'])  # same seed, same crop


def test_paired_folder_on_real_rain100l(asset):
    data = PairedFolder(asset('data/paired/rain100l'))
    assert len(data) == 3
    item = data[0]
    assert item['lq'].shape == item['gt'].shape
    # Rain adds bright streaks: the degraded frame is brighter than its clean partner.
    assert float(item['lq'].mean()) > float(item['gt'].mean())


# --- YoloFolder ---------------------------------------------------------------------------


def test_yolo_labels_parse_to_pixel_boxes(tmp_path):
    label = tmp_path / 'a.txt'
    label.write_text('2 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.2 0.2 0.3 0.3\n')
    boxes, classes = parse_yolo_labels(label, width=200, height=100)
    np.testing.assert_allclose(boxes, [[80, 30, 120, 70], [0, 10, 40, 30]], atol=1e-4)
    assert classes.tolist() == [2, 0] and classes.dtype == np.int64
    label.write_text('car 0.5 0.5 0.1 0.1\n')
    with pytest.raises(ValueError, match='a.txt:1'):
        parse_yolo_labels(label, 10, 10)
    label.write_text('1 0.5 0.5\n')
    with pytest.raises(ValueError, match='a.txt:1'):
        parse_yolo_labels(label, 10, 10)


def test_yolo_folder_missing_labels(tmp_path):
    _write_bgr(tmp_path / 'images' / 'a.png', _red())
    _write_bgr(tmp_path / 'images' / 'b.png', _red())
    (tmp_path / 'labels').mkdir()
    (tmp_path / 'labels' / 'a.txt').write_text('3 0.5 0.5 0.5 0.5\n')
    data = YoloFolder(tmp_path / 'images')
    assert len(data) == 2
    assert data[0]['class_ids'].tolist() == [3]
    assert data[1]['boxes'].shape == (0, 4)
    assert data[0]['image'][..., 0].min() == 255  # RGB order
    with pytest.raises(FileNotFoundError, match='b.png'):
        YoloFolder(tmp_path / 'images', strict=True)


def test_yolo_folder_on_real_dawn_fog(asset):
    data = YoloFolder(asset('data/dawn_fog_dev/images'), strict=True)
    assert len(data) == 100
    total = 0
    for i in range(0, len(data), 10):
        item = data[i]
        h, w = item['image'].shape[:2]
        boxes = item['boxes']
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert boxes[:, [0, 2]].min() >= -1 and boxes[:, [0, 2]].max() <= w + 1
        assert boxes[:, [1, 3]].min() >= -1 and boxes[:, [1, 3]].max() <= h + 1
        assert set(item['class_ids'].tolist()) <= {0, 1, 2, 3, 5, 7}
        total += len(boxes)
    assert total > 0


# --- SyntheticPairs -----------------------------------------------------------------------


@pytest.fixture
def clean_folder(tmp_path):
    folder = tmp_path / 'clean'
    for i, (h, w) in enumerate(((70, 90), (64, 64), (40, 100))):
        _write_bgr(folder / f'{i}.png', _textured(h, w, i))
    return folder


def test_synthetic_pairs_items(clean_folder):
    data = SyntheticPairs(clean_folder, crop=64, seed=1, cell=32)
    assert len(data) == 3
    item = data[2]  # 40x100 source: upscaled to fit the crop
    assert item['lq'].shape == (3, 64, 64) and item['gt'].shape == (3, 64, 64)
    assert item['lq'].dtype == torch.float32 and 0.0 <= float(item['lq'].min())
    assert float(item['lq'].max()) <= 1.0
    assert item['quality'].shape == (2, 2) and item['types'].shape == (2, 2, 4)
    assert item['severity'].shape == (4, 64, 64)
    assert item['condition'] in CONDITIONS
    assert CONDITIONS[item['condition_id']] == item['condition']
    assert item['path'].endswith('2.png')


def test_synthetic_pairs_are_reproducible_per_epoch(clean_folder):
    a = SyntheticPairs(clean_folder, crop=48, seed=4, length=6)
    b = SyntheticPairs(clean_folder, crop=48, seed=4, length=6)
    for i in range(6):
        assert torch.equal(a[i]['lq'], b[i]['lq'])
    before = [a[i]['lq'] for i in range(6)]
    a.set_epoch(1)
    assert any(not torch.equal(before[i], a[i]['lq']) for i in range(6))
    with pytest.raises(IndexError):
        a[6]


def test_synthetic_pairs_gt_is_a_crop_of_the_source(clean_folder):
    data = SyntheticPairs(clean_folder, crop=32, seed=0, conditions=('clean',), flip=False)
    item = data[0]
    assert torch.equal(item['lq'], item['gt'])
    source = cv2.cvtColor(cv2.imread(str(clean_folder / '0.png')), cv2.COLOR_BGR2RGB)
    gt = (item['gt'].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    found = cv2.matchTemplate(source, gt, cv2.TM_SQDIFF)
    assert found.min() == 0  # the exact window exists in the RGB source


def test_synthetic_pairs_batch_through_a_dataloader(clean_folder):
    data = SyntheticPairs(clean_folder, crop=32, seed=0, length=4)
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch['lq'].shape == (4, 3, 32, 32) and len(batch['condition']) == 4


def test_synthetic_pairs_reject_bad_arguments(clean_folder, tmp_path):
    with pytest.raises(ValueError, match='unknown weather condition'):
        SyntheticPairs(clean_folder, conditions=('fog',))
    with pytest.raises(FileNotFoundError):
        SyntheticPairs(tmp_path / 'absent')
    with pytest.raises(ValueError, match='crop'):
        SyntheticPairs(clean_folder, crop=0)


def test_synthetic_pairs_from_real_video(asset):
    data = SyntheticPairs(asset('data/video/highway_dashcam.mp4'), crop=128, seed=0,
                          video_stride=50, max_side=480)
    assert len(data) == 5  # 221 frames, every 50th
    item = data[1]
    assert item['lq'].shape == (3, 128, 128)
    assert ':' in item['path']


# --- held-out set -------------------------------------------------------------------------


def test_heldout_set_is_written_and_reproducible(tmp_path, clean_folder):
    conditions = ('clean', 'haze', 'low_rain')
    manifest = build_heldout_set(clean_folder, tmp_path / 'a', n=2, seed=9,
                                 conditions=conditions, cell=32)
    assert len(manifest['items']) == 2 * 3
    saved = json.loads((tmp_path / 'a' / 'manifest.json').read_text())
    assert saved == manifest
    build_heldout_set(clean_folder, tmp_path / 'b', n=2, seed=9, conditions=conditions, cell=32)
    for item in manifest['items']:
        a_bytes = (tmp_path / 'a' / item['degraded']).read_bytes()
        assert a_bytes == (tmp_path / 'b' / item['degraded']).read_bytes()
    data = HeldoutSet(tmp_path / 'a')
    assert len(data) == 6
    first = data[0]
    stored = np.load(tmp_path / 'a' / manifest['items'][0]['gt'])
    assert np.array_equal(first['quality'].numpy(), stored['quality'])
    assert first['lq'].shape == first['gt'].shape
    only_haze = HeldoutSet(tmp_path / 'a' / 'manifest.json', conditions=['haze'])
    assert len(only_haze) == 2 and {d['condition'] for d in only_haze.items} == {'haze'}
    clean_item = next(d for d in data.items if d['condition'] == 'clean')
    clean_png = (tmp_path / 'a' / clean_item['degraded']).read_bytes()
    assert clean_png == (tmp_path / 'a' / clean_item['clean']).read_bytes()


def test_heldout_set_refuses_bad_requests(tmp_path, clean_folder):
    with pytest.raises(ValueError, match='n must be'):
        build_heldout_set(clean_folder, tmp_path / 'x', n=10, seed=0)
    out = tmp_path / 'busy'
    out.mkdir()
    (out / 'file').write_text('x')
    with pytest.raises(FileExistsError):
        build_heldout_set(clean_folder, out, n=1, seed=0)
    with pytest.raises(FileNotFoundError):
        HeldoutSet(tmp_path / 'nothing')


def test_heldout_set_from_real_bsds_val(tmp_path, asset):
    manifest = build_heldout_set(asset('data/clean/bsds500/val'), tmp_path, n=1, seed=0)
    assert [item['condition'] for item in manifest['items']] == list(CONDITIONS)
    data = HeldoutSet(tmp_path)
    qualities = [float(data[i]['quality'].mean()) for i in range(len(data))]
    assert qualities[0] == 5.0 and max(qualities[1:]) < 5.0


def test_synth_cli_writes_the_heldout_set(tmp_path, clean_folder):
    import argparse

    from adaqual_ros.cli import synth

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    out = tmp_path / 'heldout'
    args = parser.parse_args([str(clean_folder), '--heldout', str(out), '--n', '1', '--cell',
                              '32'])
    assert synth.run(args) == 0
    assert len(HeldoutSet(out)) == len(CONDITIONS)
    assert synth.run(args) == 2  # a non-empty folder needs --overwrite
    assert synth.run(parser.parse_args([str(clean_folder), '--heldout', str(out), '--n', '1',
                                        '--overwrite'])) == 0
