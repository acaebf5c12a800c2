"""
Training of the learned quality estimator on the weather synthesis (and calibration fitting for
the classical one). Not imported by the runtime.

Each sample is a random crop of a clean training image (random scale and horizontal flip) under a
random condition from CONDITIONS with a random severity; targets are the synthesis' regional
quality and per-type damage at the network's stride (32 px) and at 64 px cells (pooled from the
32 px damages, which are cell means of a predicted SSIM map).
"""
from dataclasses import asdict, dataclass, replace
import json
import math
from pathlib import Path
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from adaqual_ros.quality.data import extra_clean_images, read_rgb, train_files
from adaqual_ros.quality.learned import LearnedQualityEstimator


@dataclass
class TrainConfig:
    """
    Settings of `train_learned`.

    Args:
        out (`str`): output folder (save_pretrained layout + train_log.json).
        assets (`str`): assets root (data/clean, data/weather_layers).
        steps (`int`): optimiser steps (the run also stops at ``max_minutes``).
        batch (`int`): crops per step.
        crop (`int`): crop edge in pixels (multiple of 64).
        lr (`float`): peak AdamW learning rate (cosine decay to 5 %).
        weight_decay (`float`): AdamW weight decay.
        type_weight (`float`): weight of the type BCE against the score L1.
        cell64_weight (`float`): weight of the 64-px-cell score L1.
        clean_fraction (`float`): share of samples with condition 'clean'.
        seed (`int`): seed of model init and data.
        threads (`int`): torch threads in the training process.
        workers (`int`): data worker processes (synthesis runs there).
        max_minutes (`float`): wall-clock budget.
        max_side (`int`): training images are area-downscaled to this long side first.
        reuse (`int`): samples yielded from the replay pool per freshly synthesised one.
        pool (`int`): replay pool size.
        widths (`str`): comma-separated channel widths of the network.
        camera_aug (`float`): probability of a video-camera look (blur, resize, zoom, noise)
            on the clean crop and, separately, of JPEG compression after the weather
            (weather/camera.py); teaches that soft, flat or compressed video is not weather.
        init (`str`): weights folder to start from (fine-tuning); empty = random init.
        mix_fraction (`float`): share of weather samples whose crop keeps a clean band (one to
            all-but-one 64 px cells wide, at a cell edge; targets 5 / no damage there): real
            frames are partly clean, and without it the frame-level context lowers the clean
            cells next to weather, so they are restored instead of skipped.
        extra_clean (`str`): comma-separated extra clean sources, image folders or videos
            (e.g. clean footage from your own camera), added to the standard splits.
        extra_stride (`int`): videos in `extra_clean`: keep every N-th frame.
        extra_repeat (`int`): list each extra image N times (a few frames against hundreds of
            photos).
        dim_haze (`float`): share of haze draws lit as at dusk or at night (dim, blue or sodium
            orange airlight; weather.haze.dim_airlight): daylight haze alone teaches that dark
            fog is a clean frame.
        anchor_scores (`float`): with ``init``, > 0 keeps the scores where the ``init`` weights
            put them: the score terms follow that model's scores on the same crops (this weight
            times the usual score loss) instead of the synthesis', so only the type read
            learns. A restorer follows the score level of the estimator it was trained with.
    """

    out: str = 'adaqual_ros/checkpoints/quality_learned'
    assets: str = ''
    steps: int = 6000
    batch: int = 16
    crop: int = 192
    lr: float = 3e-3
    weight_decay: float = 1e-4
    type_weight: float = 1.0
    cell64_weight: float = 0.5
    clean_fraction: float = 0.2
    seed: int = 0
    threads: int = 1
    workers: int = 1
    max_minutes: float = 18.0
    max_side: int = 800
    reuse: int = 3
    pool: int = 256
    widths: str = '32,48,64'
    camera_aug: float = 0.5
    init: str = ''
    mix_fraction: float = 0.0
    extra_clean: str = ''
    extra_stride: int = 10
    extra_repeat: int = 1
    dim_haze: float = 0.0
    anchor_scores: float = 0.0


class SyntheticQualityCrops(torch.utils.data.IterableDataset):
    """Endless stream of (image (3,c,c) float, q32, t32, q64, t64) from the weather synthesis."""

    def __init__(self, files, crop=192, clean_fraction=0.1, seed=0, layers_root=None,
                 max_side=800, reuse=1, pool=256, camera_aug=0.0, mix_fraction=0.0,
                 dim_haze=0.0):
        super().__init__()
        if crop % 64:
            raise ValueError(f'crop must be a multiple of 64, got {crop}')
        if reuse < 1 or pool < 1:
            raise ValueError(f'reuse ({reuse}) and pool ({pool}) must be >= 1')
        self.files = list(files)
        self.crop = crop
        self.clean_fraction = clean_fraction
        self.seed = seed
        self.layers_root = layers_root
        self.max_side = max_side
        self.reuse = reuse
        self.pool = pool
        self.camera_aug = camera_aug
        self.mix_fraction = mix_fraction
        from adaqual_ros.weather.compose import check_dim_haze
        self.dim_haze = check_dim_haze(dim_haze)  # here, not first inside a data worker

    def __iter__(self):
        """
        Yield samples; with ``reuse`` > 1 every new sample enters a replay pool and ``reuse``
        random (randomly flipped) pool samples are yielded, since synthesis costs more than a
        training step on a 2-core machine.
        """
        rng = np.random.default_rng([self.seed, 7])
        pool = []
        for sample in self._fresh():
            if self.reuse == 1:
                yield sample
                continue
            if len(pool) < self.pool:
                pool.append(sample)
            else:
                pool[int(rng.integers(len(pool)))] = sample
            for _ in range(self.reuse):
                image, q32, t32, q64, t64 = pool[int(rng.integers(len(pool)))]
                if rng.random() < 0.5:
                    image, q32, t32, q64, t64 = (image.flip(-1), q32.flip(-1), t32.flip(-2),
                                                 q64.flip(-1), t64.flip(-2))
                yield image.float() / 255.0, q32, t32, q64, t64

    def _fresh(self):
        from adaqual_ros.weather import CONDITIONS, load_layers, synthesize
        from adaqual_ros.weather.camera import camera_look, compression

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, worker])
        layers = load_layers(self.layers_root) if self.layers_root else None
        # Entries are paths or images already in memory (frames of an extra video).
        images = [f if isinstance(f, np.ndarray) else read_rgb(f, self.max_side)
                  for f in self.files]
        degraded_conditions = [c for c in CONDITIONS if c != 'clean']
        c = self.crop
        while True:
            image = images[int(rng.integers(len(images)))]
            h, w = image.shape[:2]
            # Random scale so the net sees weather at several apparent resolutions.
            scale = float(rng.uniform(max(c / min(h, w), 0.5), 1.0))
            if scale < 0.999:
                image = cv2.resize(image, (max(c, round(w * scale)), max(c, round(h * scale))),
                                   interpolation=cv2.INTER_AREA)
                h, w = image.shape[:2]
            y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            patch = image[y:y + c, x:x + c]
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            patch = camera_look(np.ascontiguousarray(patch), rng, self.camera_aug)
            if rng.random() < self.clean_fraction:
                condition = 'clean'
            else:
                condition = degraded_conditions[int(rng.integers(len(degraded_conditions)))]
            sample = synthesize(patch, condition, rng, cell=32, layers=layers,
                                dim_haze=self.dim_haze)
            if condition != 'clean' and rng.random() < self.mix_fraction:
                sample = keep_clean_band(sample, rng)
            # Damage is one minus a cell-mean SSIM, so 64 px damage is the mean of its four
            # 32 px cells; the types then combine into quality as in the synthesis.
            t64 = sample.types.reshape(c // 64, 2, c // 64, 2, -1).mean(axis=(1, 3))
            q64 = (5.0 - 4.0 * (1.0 - np.prod(1.0 - t64, axis=2))).astype(np.float32)
            degraded = compression(sample.degraded, rng, self.camera_aug * 0.8)
            image = torch.from_numpy(degraded).permute(2, 0, 1)
            if self.reuse == 1:
                image = image.float() / 255.0
            yield (image, torch.from_numpy(sample.quality), torch.from_numpy(sample.types),
                   torch.from_numpy(q64), torch.from_numpy(t64))


def keep_clean_band(sample, rng, cell=64):
    """
    The (square) sample with a band of whole ``cell`` px cells along one edge put back to its
    clean input: targets there become quality 5 and no damage (on the synthesis' grid).
    """
    clean = sample.clean
    size = clean.shape[0]
    n = size // cell
    if n < 2:
        return sample
    width = int(rng.integers(1, n)) * cell  # at least one cell of each kind
    edge = int(rng.integers(4))  # top, bottom, left, right
    mask = np.zeros(clean.shape[:2], dtype=bool)
    band = slice(0, width) if edge in (0, 2) else slice(size - width, size)
    if edge < 2:
        mask[band] = True
    else:
        mask[:, band] = True
    degraded = sample.degraded.copy()
    degraded[mask] = clean[mask]
    s = sample.quality.shape[0]
    cells = mask.reshape(s, size // s, s, size // s).all(axis=(1, 3))
    quality, types = sample.quality.copy(), sample.types.copy()
    quality[cells], types[cells] = 5.0, 0.0
    return replace(sample, degraded=degraded, quality=quality, types=types)


def quality_loss(model, batch, cfg, anchor=None):
    """
    Score L1 at stride 32 and on 64 px cells + type BCE; returns (total, terms dict). With an
    ``anchor`` model (``cfg.anchor_scores``) the score terms follow its scores instead.
    """
    image, q32, t32, q64, t64 = batch
    scores, logits = model(image)
    weight = 1.0
    if anchor is not None:
        with torch.no_grad():
            fixed = anchor(image)[0]
        q32 = fixed[:, 0]
        q64 = anchor.to_cells(fixed, torch.zeros_like(logits), image.shape[2:], cell=64)[0]
        weight = cfg.anchor_scores
    l_q = F.l1_loss(scores[:, 0], q32)
    l_t = F.binary_cross_entropy_with_logits(logits.permute(0, 2, 3, 1), t32)
    s64, _ = model.to_cells(scores, logits, image.shape[2:], cell=64)
    l_q64 = F.l1_loss(s64, q64)
    total = weight * (l_q + cfg.cell64_weight * l_q64) + cfg.type_weight * l_t
    return total, {'l1_q32': l_q.item(), 'l1_q64': l_q64.item(), 'bce_types': l_t.item()}


def train_learned(cfg, log=print):
    """
    Train `LearnedQualityEstimator` and save it to ``cfg.out``.

    Returns:
        `dict`: summary (steps, wall_s, final losses) also written to out/train_log.json.
    """
    if cfg.anchor_scores > 0 and not cfg.init:
        raise ValueError('anchor_scores keeps the scores of the init weights: set init too')
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    files = train_files(cfg.assets)
    if cfg.extra_clean:
        files += extra_clean_images(cfg.extra_clean, cfg.assets, cfg.extra_stride,
                                    cfg.extra_repeat, cfg.max_side)
    layers_root = cfg.assets if (Path(cfg.assets) / 'data' / 'weather_layers').is_dir() else None
    data = SyntheticQualityCrops(files, cfg.crop, cfg.clean_fraction, cfg.seed, layers_root,
                                 max_side=cfg.max_side, reuse=cfg.reuse, pool=cfg.pool,
                                 camera_aug=cfg.camera_aug, mix_fraction=cfg.mix_fraction,
                                 dim_haze=cfg.dim_haze)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch, num_workers=cfg.workers,
                                         persistent_workers=cfg.workers > 0)
    anchor = None
    if cfg.init:
        model = LearnedQualityEstimator.from_pretrained(cfg.init)
        if cfg.anchor_scores > 0:
            anchor = LearnedQualityEstimator.from_pretrained(cfg.init).eval()
            anchor.requires_grad_(False)
    else:
        model = LearnedQualityEstimator(widths=tuple(int(w) for w in cfg.widths.split(',')))
    model.train()
    if anchor is not None:
        # Batch statistics would move the scores away from the anchor's on their own: the
        # normalisation stays as the init weights have it, so the run starts on the anchor.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step):
        warm = 200
        if step < warm:
            return cfg.lr * (step + 1) / warm
        # Progress is the larger of the step and wall-clock fractions, so the cosine decay
        # completes even when the time budget ends the run first.
        t = max((step - warm) / max(1, cfg.steps - warm),
                (time.monotonic() - start) / (cfg.max_minutes * 60))
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    log(f'training on {len(files)} images, {cfg.steps} steps of {cfg.batch}x{cfg.crop}^2, '
        f'{sum(p.numel() for p in model.parameters())} parameters')
    start = time.monotonic()
    history, running = [], {}
    step = 0
    for step, batch in enumerate(loader):
        if step >= cfg.steps or (time.monotonic() - start) > cfg.max_minutes * 60:
            break
        for group in opt.param_groups:
            group['lr'] = lr_at(step)
        loss, terms = quality_loss(model, batch, cfg, anchor)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            if missing:
                raise RuntimeError(f'parameters without gradient: {missing}')
        opt.step()
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + v
        if (step + 1) % 100 == 0:
            means = {k: round(v / 100, 4) for k, v in running.items()}
            elapsed = time.monotonic() - start
            history.append({'step': step + 1, 'wall_s': round(elapsed, 1), **means})
            log(f'step {step + 1} {elapsed:.0f}s lr {lr_at(step):.2e} {means}')
            running = {}
    wall = time.monotonic() - start
    model.eval()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    summary = {'config': asdict(cfg), 'steps': step, 'wall_s': round(wall, 1),
               'history': history}
    (out / 'train_log.json').write_text(json.dumps(summary, indent=1))
    log(f'saved {out} after {step} steps, {wall / 60:.1f} min')
    return summary


def fit_classical_calibration(assets, n_samples=600, seed=0, cell=64):
    """
    Least-squares fit of the classical estimator's per-type calibration on training crops.

    Returns:
        `dict` in the `classical.CALIBRATION` format (print it and paste it there).
    """
    from adaqual_ros.quality.classical import FEATURES, TYPE_ORDER, cell_features
    from adaqual_ros.weather import CONDITIONS, synthesize

    rng = np.random.default_rng(seed)
    files = train_files(assets)
    feats, targets = [], []
    for _ in range(n_samples):
        image = read_rgb(files[int(rng.integers(len(files)))], 640)
        condition = CONDITIONS[int(rng.integers(len(CONDITIONS)))]
        sample = synthesize(image, condition, rng, cell=cell)
        feats.append(cell_features(sample.degraded, cell).reshape(-1, len(FEATURES)))
        targets.append(sample.types.reshape(-1, len(TYPE_ORDER)))
    x = np.concatenate(feats)
    y = np.concatenate(targets)
    design = np.concatenate([np.ones((len(x), 1), np.float32), x], axis=1)
    calibration = {}
    for k, kind in enumerate(TYPE_ORDER):
        coef, *_ = np.linalg.lstsq(design, y[:, k], rcond=None)
        calibration[kind] = {'bias': round(float(coef[0]), 4)}
        calibration[kind].update({n: round(float(c), 4) for n, c in zip(FEATURES, coef[1:])})
    return calibration
