"""
Training of AdaQual-Diff (denoiser + prompt text encoder) with accelerate, EMA and checkpoints.

Data: random crops of clean photos, degraded on the fly by adaqual_ros.weather.synthesize().
Conditioning during training uses the GROUND-TRUTH quality grid and per-region type strengths
that synthesize() returns (lightly jittered so the model tolerates estimator error); at inference
the pipeline's estimator provides them.

    from adaqual_ros.training.train import TrainConfig, train
    train(TrainConfig(out_dir='runs/small', time_limit_min=45))
"""
from dataclasses import asdict, dataclass, field, fields, replace
import difflib
import json
import math
from pathlib import Path
import time

import numpy as np
import torch

from adaqual_ros.training.losses import LossWeights, adaqual_loss

# Training splits (ASSETS.md); bsds500/val is the held-out synthetic evaluation set.
DEFAULT_CLEAN_DIRS = ('data/clean/bsds500/train', 'data/clean/bsds500/test',
                      'data/clean/sun_hays80', 'data/clean/urban100')
# rain100l clean/2.png is BSDS500 test/104055: keep it out of training.
DEFAULT_EXCLUDE = ('104055',)
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')


@dataclass
class TrainConfig:
    """
    Everything `adaqual train` can be told (YAML file and key=value overrides merge into it).

    Args:
        out_dir (`str`): run folder (checkpoint/, train.log, train_log.jsonl, pipeline/).
        save_to (`str`, *optional*): also save the EMA pipeline here (e.g. the shipped folder)
            whenever validation PSNR improves and beats the input, and at the end.
        model_config (`str`): a name in models.configs.CONFIGS ('small', 'tiny', 'paper', ...).
        assets (`str`, *optional*): assets root (default $ADAQUAL_ASSETS).
        clean_dirs (`list[str]`): clean image folders, relative to the assets root or absolute.
        steps (`int`): maximum optimizer steps.
        time_limit_min (`float`): stop after this much training time (0 = no limit); the
            cosine learning-rate schedule follows max(step / steps, time / limit).
        loss (`LossWeights` fields l1, l2, a, edge): loss weights.
        t_focus (`float`): share of timesteps drawn from the sampler's own timesteps
            (999, 749, 499, 249) instead of uniformly.
        estimator (`str`, *optional*): when set (e.g. 'learned'), a share ``estimator_prob`` of
            the crops is conditioned on that estimator's map of the degraded crop instead of the
            ground truth (the loss weights keep the ground truth), so the model learns to
            tolerate the estimator it meets at inference.
        estimator_path (`str`, *optional*): weights folder of that estimator (default: that of
            the ``init`` pipeline, its ``estimator/`` folder, where it has one, else the shipped
            one); a restorer follows the quirks of the estimator it trained with, so train it
            with the one it will run with.
        estimator_context (`int`): the weather is synthesised (and the estimator run) on a
            square this many crops wide, and the training crop is a cell-aligned part of it: the
            estimator then reads each crop with the context it has in a whole frame at inference
            (on a lone 128 px crop its scores are much further from the truth: adaqual_small
            TRAINING.md). 1 = the crop alone.
        camera_aug (`float`): probability of a video-camera look on the clean crop (blur,
            resize, zoom, sensor noise) and, separately, of JPEG compression of the degraded
            crop (weather/camera.py): real camera frames are softer than the training photos.
        init (`str`, *optional*): pipeline folder whose weights start the run (fine-tuning);
            its architecture replaces ``model_config``.
        dim_haze (`float`): share of haze draws lit as at dusk or at night (dim, blue or sodium
            orange airlight; weather.haze.dim_airlight).
        score_shift (`float`): std of one offset added to all of a crop's input scores (any
            source); estimators differ by a frame-wide score level, and a restorer trained on
            one level loses dB on another.
        unroll (`float`): share of the crops trained at the last step of the ``unroll_steps``-step
            sampler on the input that sampler builds from the model's own earlier predictions
            (one extra forward pass per such crop, no gradient through it).
        unroll_steps (`int`): the sampler's steps for ``unroll`` (the restorer's default, 2).
        joint_estimator (`bool`): train the learned estimator together with the restorer. Its
            maps of the ``estimator_prob`` share of the crops are computed in the training step
            with gradients, so the restorer's loss reaches the estimator through the quality
            input (FiLM); its own loss against the synthesis' maps (weight ``estimator_weight``)
            keeps it a quality estimate (the runtime skips and prompts by it). Needs
            ``estimator='learned'``; the estimator's weights are saved in each saved pipeline's
            ``estimator/`` folder, which the runtime then reads frames with
            (`paired_estimator_path`): a restorer follows the estimator it trained with.
        estimator_weight (`float`): weight of the estimator's own loss (L1 of the cell scores +
            BCE of the cell type strengths) in a joint run.
        estimator_lr (`float`): the estimator's peak learning rate in a joint run (its schedule
            follows the restorer's).
    """

    out_dir: str = 'runs/adaqual_small'
    save_to: str = ''
    model_config: str = 'small'
    assets: str = ''
    clean_dirs: list = field(default_factory=lambda: list(DEFAULT_CLEAN_DIRS))
    exclude: list = field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    cell: int = 64
    crop: int = 128
    scale_min: float = 0.5
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100
    steps: int = 100000
    time_limit_min: float = 45.0
    ema_decay: float = 0.999
    l1: float = 1.0
    l2: float = 0.2
    a: float = 2.0
    edge: float = 0.5
    t_focus: float = 0.5
    clean_prob: float = 0.06
    quality_jitter: float = 0.25
    estimator: str = ''
    estimator_prob: float = 0.5
    estimator_path: str = ''
    estimator_context: int = 1
    camera_aug: float = 0.3
    dim_haze: float = 0.0
    score_shift: float = 0.0
    unroll: float = 0.0
    unroll_steps: int = 2
    joint_estimator: bool = False
    estimator_weight: float = 1.0
    estimator_lr: float = 1e-4
    init: str = ''
    seed: int = 0
    threads: int = 2
    num_workers: int = 1
    val_every: int = 250
    val_images: int = 8
    val_size: int = 192
    checkpoint_every: int = 250
    resume: bool = True
    max_images: int = 0


def merge_config(base=None, overrides=None):
    """
    TrainConfig from a dict of values (YAML) and 'key=value' strings; unknown keys raise.

    Values are parsed as YAML scalars/lists ('lr=2e-4', 'clean_dirs=[a, b]').
    """
    import yaml

    cfg = TrainConfig()
    names = {f.name: f for f in fields(TrainConfig)}
    items = dict(base or {})
    for text in overrides or []:
        if '=' not in text:
            raise ValueError(f'override {text!r} is not key=value')
        key, value = text.split('=', 1)
        items[key.strip()] = yaml.safe_load(value)
    for key, value in items.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f'; did you mean {close[0]!r}?' if close else ''
            raise ValueError(f'unknown training option {key!r}{hint}')
        default = getattr(cfg, key)
        if isinstance(default, bool):
            value = bool(value)
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            value = type(default)(value)
        elif isinstance(default, list):
            value = list(value) if isinstance(value, (list, tuple)) else [value]
        setattr(cfg, key, value)
    return cfg


def _resolve_dir(path, assets):
    p = Path(path)
    if not p.is_absolute():
        if assets is None:
            raise FileNotFoundError(f'{path} is relative but no assets root is set '
                                    '(ADAQUAL_ASSETS or assets=...)')
        p = Path(assets) / p
    if not p.is_dir():
        raise FileNotFoundError(f'clean image folder not found: {p}')
    return p


def list_images(dirs, assets, exclude=()):
    """Sorted image files of the given folders (names containing an ``exclude`` entry dropped)."""
    files = []
    for d in dirs:
        root = _resolve_dir(d, assets)
        files += sorted(f for f in root.rglob('*') if f.suffix.lower() in IMAGE_EXTS
                        and not any(x in f.name for x in exclude))
    if not files:
        raise FileNotFoundError(f'no images in {list(dirs)}')
    return files


def load_rgb(path):
    """Read an image file as RGB uint8 (the one BGR->RGB conversion of the training path)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot read image {path}')
    return np.ascontiguousarray(bgr[:, :, ::-1])


class SyntheticCrops(torch.utils.data.IterableDataset):
    """
    Endless random crops of clean photos with synthetic weather and its ground-truth quality.

    Yields dicts: 'degraded', 'clean' (3, crop, crop) float [0, 1]; 'quality' (5, g, g) model
    input ((q - 3) / 2 and 4 type strengths); 'scores' (g, g) ground-truth q. With ``joint``
    the estimator is not run here (the training step runs it with gradients): the picked crops
    keep the truth in 'quality' and every sample adds the estimator's input and targets,
    'est_image' (3, side, side) (the synthesised region, side = crop x context), 'est_scores'
    (G, G), 'est_types' (G, G, 4), 'est_cells' (2,) the crop's first cell row and column in
    that region, and 'est_pick' (whether its conditioning is the estimator's map).
    """

    def __init__(self, files, crop, cell, seed, scale_min=0.5, clean_prob=0.06,
                 quality_jitter=0.25, layers=None, estimator='', estimator_prob=0.5,
                 camera_aug=0.0, context=1, dim_haze=0.0, estimator_path='', score_shift=0.0,
                 joint=False):
        super().__init__()
        if crop % cell:
            raise ValueError(f'crop {crop} must be a multiple of cell {cell}')
        if int(context) < 1:
            raise ValueError(f'estimator_context must be >= 1, got {context}')
        self.context = int(context)
        self.files, self.crop, self.cell, self.seed = list(files), crop, cell, seed
        self.scale_min, self.clean_prob = scale_min, clean_prob
        self.quality_jitter, self.layers = quality_jitter, layers
        self.estimator_name, self.estimator_prob = estimator, estimator_prob
        self.camera_aug = camera_aug
        from adaqual_ros.weather.compose import check_dim_haze
        self.dim_haze = check_dim_haze(dim_haze)  # here, not first inside a data worker
        self.estimator_path = estimator_path or None
        if score_shift < 0:
            raise ValueError(f'score_shift must be >= 0, got {score_shift}')
        self.score_shift = float(score_shift)
        self.joint = bool(joint)
        self._estimator = None
        self._cache = {}

    def _estimate(self, degraded):
        if self._estimator is None:  # built lazily, inside the worker process
            from adaqual_ros.quality import build_estimator
            self._estimator = build_estimator(self.estimator_name, cell=self.cell,
                                              path=self.estimator_path)
        with torch.no_grad():
            qmap = self._estimator.estimate(degraded)
        return qmap.scores.astype(np.float32), qmap.type_probs.astype(np.float32)

    def _image(self, i):
        if i not in self._cache:
            self._cache[i] = load_rgb(self.files[i])
        return self._cache[i]

    def sample(self, rng):
        import cv2

        from adaqual_ros.weather import CONDITIONS, synthesize
        from adaqual_ros.weather.camera import camera_look, compression

        img = self._image(int(rng.integers(len(self.files))))
        h, w = img.shape[:2]
        side = self.crop * self.context  # synthesised (and estimated) region
        lo = max(self.scale_min, side / min(h, w))
        scale = float(rng.uniform(lo, 1.0)) if lo < 1.0 else lo
        if abs(scale - 1.0) > 1e-3:
            img = cv2.resize(img, (max(side, round(w * scale)), max(side,
                             round(h * scale))), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        clean = np.ascontiguousarray(img[y:y + side, x:x + side])
        if rng.random() < 0.5:
            clean = np.ascontiguousarray(clean[:, ::-1])
        clean = camera_look(clean, rng, self.camera_aug)
        cond = 'clean' if rng.random() < self.clean_prob else CONDITIONS[
            1 + int(rng.integers(len(CONDITIONS) - 1))]
        s = synthesize(clean, cond, rng, cell=self.cell, layers=self.layers,
                       dim_haze=self.dim_haze)
        scores, types = s.quality.astype(np.float32), s.types.astype(np.float32)
        degraded = compression(s.degraded, rng, self.camera_aug * 0.8)
        q_in, t_in = scores, types
        picked = bool(self.estimator_name) and rng.random() < self.estimator_prob
        if picked and not self.joint:
            q_in, t_in = self._estimate(degraded)
            if not (np.isfinite(q_in).all() and np.isfinite(t_in).all()):
                # an estimator failure must not poison the batch: this crop keeps the truth
                q_in, t_in = scores, types
        elif not picked and self.quality_jitter > 0 and rng.random() < 0.5:
            q_in = np.clip(scores + rng.normal(0, self.quality_jitter, scores.shape), 1, 5)
            t_in = np.clip(types + rng.normal(0, self.quality_jitter * 0.4, types.shape), 0, 1)
        if self.score_shift > 0:
            q_in = np.clip(q_in + rng.normal(0.0, self.score_shift), 1, 5).astype(np.float32)
        clean = s.clean
        to_t = lambda a: torch.from_numpy(  # noqa: E731
            np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255))
        r = c = 0
        joint = {}
        if self.joint:  # the whole region: the estimator reads it as in a frame
            joint = {'est_image': to_t(degraded), 'est_scores': torch.from_numpy(scores),
                     'est_types': torch.from_numpy(types),
                     'est_pick': torch.tensor(picked)}
        if self.context > 1:  # the training crop: whole cells of the region
            n = self.crop // self.cell
            r, c = (int(v) for v in rng.integers(side // self.cell - n + 1, size=2))
            cells = (slice(r, r + n), slice(c, c + n))
            pixels = tuple(slice(v.start * self.cell, v.stop * self.cell) for v in cells)
            degraded, clean = degraded[pixels], clean[pixels]
            scores, types, q_in, t_in = (a[cells] for a in (scores, types, q_in, t_in))
        if self.joint:
            joint['est_cells'] = torch.tensor([r, c])
        quality = np.concatenate([((q_in - 3.0) / 2.0)[None], np.moveaxis(t_in, -1, 0)], 0)
        return {'degraded': to_t(degraded), 'clean': to_t(clean),
                'quality': torch.from_numpy(quality.astype(np.float32)),
                'scores': torch.from_numpy(scores), 'condition': cond, **joint}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else info.id
        rng = np.random.default_rng([*np.ravel(self.seed), wid])
        while True:
            yield self.sample(rng)


def _collate(items):
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if k != 'condition'}
    out['condition'] = [it['condition'] for it in items]
    return out


def _worker_init(_):
    import cv2
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _qmaps_from_batch(quality, cell, size):
    """QualityMaps from a (B, 5, g, g) quality tensor (for building prompts)."""
    from adaqual_ros.quality.types import QualityMap

    q = quality.detach().cpu().numpy()
    return [QualityMap(np.clip(qi[0] * 2 + 3, 1, 5), np.moveaxis(qi[1:], 0, -1).clip(0, 1), cell,
                       size) for qi in q]


def build_validation_set(assets, n, size, cell, seed=1234, layers=None):
    """
    Fixed validation frames from bsds500/val: centre crops, conditions cycled, seeded weather.

    Returns a list of (degraded uint8, clean uint8, QualityMap with ground-truth grid).
    """
    from adaqual_ros.quality.types import QualityMap
    from adaqual_ros.weather import CONDITIONS, synthesize

    files = list_images(['data/clean/bsds500/val'], assets)[:n]
    out = []
    for i, f in enumerate(files):
        img = load_rgb(f)
        h, w = img.shape[:2]
        side = min(size, h, w)
        y, x = (h - side) // 2, (w - side) // 2
        clean = np.ascontiguousarray(img[y:y + side, x:x + side])
        cond = CONDITIONS[1 + i % (len(CONDITIONS) - 1)]
        s = synthesize(clean, cond, seed + i, cell=cell, layers=layers)
        out.append((s.degraded, s.clean, QualityMap(s.quality, s.types, cell, clean.shape[:2])))
    return out


def validate(pipe, val_set, steps=2, seed=0, estimated=False):
    """
    Mean PSNR (dB) of the pipeline's restorations and of the inputs over the validation set,
    conditioned on the ground-truth maps, or with ``estimated`` on the pipeline's estimator's.
    """
    from adaqual_ros.metrics.image import psnr

    res, inp = [], []
    for degraded, clean, qmap in val_set:
        x = torch.from_numpy(degraded).permute(2, 0, 1)[None].float() / 255
        g = torch.Generator().manual_seed(seed)
        out = pipe(x, None if estimated else [qmap], generator=g,
                   num_inference_steps=steps).images[0]
        restored = (out.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
        res.append(psnr(restored, clean))
        inp.append(psnr(degraded, clean))
    return float(np.mean(res)), float(np.mean(inp))


def _lr_at(cfg, step, elapsed_s):
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = step / max(1, cfg.steps)
    if cfg.time_limit_min > 0:
        frac = max(frac, elapsed_s / (cfg.time_limit_min * 60))
    frac = min(1.0, frac)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))


def sample_timesteps(batch, num_train, focus, generator):
    """Uniform timesteps, with a share ``focus`` drawn from the trailing sampler's own steps."""
    t = torch.randint(0, num_train, (batch,), generator=generator)
    sampler_ts = torch.tensor([num_train - 1, num_train * 3 // 4 - 1, num_train // 2 - 1,
                               num_train // 4 - 1])
    pick = torch.rand(batch, generator=generator) < focus
    idx = torch.randint(0, len(sampler_ts), (batch,), generator=generator)
    return torch.where(pick, sampler_ts[idx], t)


def sampler_last_input(unet, scheduler, degraded, cond, noise, steps):
    """
    The input of the sampler's last step, built as the pipeline builds it: start from ``noise``
    at the first timestep and take DDIM steps (eta 0) with the model's own predictions (no
    gradient), all but the last one.

    Returns:
        `(x, t)`: the noisy residual (B, 3, H, W) and the last step's timestep (an int).
    """
    from adaqual_ros.pipelines.pipeline_adaqual import ddim_steps

    scheduler.set_timesteps(int(steps), device=noise.device)
    timesteps = scheduler.timesteps
    with torch.no_grad():
        x = ddim_steps(unet, scheduler, noise, degraded, cond, timesteps[:-1])
    return x, int(timesteps[-1])


def estimator_conditioning(estimator, batch, cell, device='cpu'):
    """
    The learned estimator's maps of a joint batch, with gradients.

    Runs the estimator on each sample's synthesised region ('est_image'), averages its
    predictions over ``cell`` px cells as at inference (`to_cells`), and cuts the training
    crop's cells out of them.

    Returns:
        `(quality, loss, terms)`: the model's (B, 5, g, g) quality input for the crops, and the
        estimator's own loss over the whole regions (L1 of the cell scores + BCE of the cell
        type strengths against the synthesis').
    """
    import torch.nn.functional as F

    image = batch['est_image'].to(device)
    scores, logits = estimator(image)
    cs, cp = getattr(estimator, 'module', estimator).to_cells(scores, logits, image.shape[2:],
                                                              cell)
    l_score = F.l1_loss(cs, batch['est_scores'].to(device))
    l_types = F.binary_cross_entropy(cp.clamp(1e-6, 1 - 1e-6), batch['est_types'].to(device))
    n = batch['quality'].shape[-1]
    quality = torch.stack([
        torch.cat([((cs[i, r:r + n, c:c + n] - 3.0) / 2.0)[None],
                   cp[i, r:r + n, c:c + n].permute(2, 0, 1)])
        for i, (r, c) in enumerate(batch['est_cells'].tolist())])
    return quality, l_score + l_types, {'est_l1': l_score.item(), 'est_bce': l_types.item()}


def training_loss(unet, encoder, prompter, scheduler, batch, weights, generator, t_focus=0.5,
                  cell=64, device='cpu', unroll=0.0, unroll_steps=2, estimator=None,
                  estimator_weight=1.0):
    """
    Loss of one batch: prompts from the batch's (ground-truth) quality, noisy residual, r0 loss.

    Args:
        unet (`AdaQualUNet`), encoder (`PromptEncoder`), prompter (`Prompter`),
        scheduler (`DDIMScheduler`): the parts being trained / used.
        batch (`dict`): 'degraded', 'clean' (B, 3, H, W) in [0, 1], 'quality' (B, 5, gh, gw),
            'scores' (B, gh, gw).
        weights (`LossWeights`), generator (`torch.Generator`): loss weights, noise source.
        unroll (`float`): share of the crops trained at the last step of an ``unroll_steps``-step
            sampler on the input the sampler builds there from the model's own earlier
            predictions (`sampler_last_input`) instead of the true residual plus noise.
        estimator (`LearnedQualityEstimator`, *optional*): joint training; the batch's picked
            crops ('est_pick') are conditioned on its maps (`estimator_conditioning`), and its
            own loss, times ``estimator_weight``, is added.

    Returns:
        `(loss, terms)`.
    """
    degraded = batch['degraded'].to(device)
    clean = batch['clean'].to(device)
    quality = batch['quality'].to(device)
    b, _, h, w = degraded.shape
    est_loss, est_terms = None, {}
    if estimator is not None:
        q_est, est_loss, est_terms = estimator_conditioning(estimator, batch, cell, device)
        pick = batch['est_pick'].to(device)[:, None, None, None]
        quality = torch.where(pick, q_est.to(quality.dtype), quality)
    cond = {'quality': quality, 'cell': cell}
    # (a DDP-wrapped model keeps its config on .module)
    if getattr(unet, 'module', unet).config.use_prompts:
        # prompts are text: built from the map as it is, no gradient through them
        prompts = [prompter.build(q) for q in _qmaps_from_batch(quality, cell, (h, w))]
        ge, gm, le, lm = encoder.encode_prompt_sets(prompts)
        cond.update(global_embeds=ge, global_mask=gm, local_embeds=le, local_mask=lm)
    residual = clean - degraded
    noise = torch.randn(residual.shape, generator=generator).to(device)
    t = sample_timesteps(b, scheduler.config.num_train_timesteps, t_focus, generator).to(device)
    noisy = scheduler.add_noise(residual, noise, t)
    if unroll > 0:
        # Few-step sampling meets, at its later steps, inputs made from the model's own earlier
        # predictions, never the true residual plus noise it trains on: train on those too.
        pick = torch.rand(b, generator=generator) < unroll
        if pick.any():
            idx = pick.nonzero().flatten().to(device)
            sub = {k: (v.index_select(0, idx) if torch.is_tensor(v) else v)
                   for k, v in cond.items()}
            x, t_last = sampler_last_input(unet, scheduler, degraded.index_select(0, idx), sub,
                                           noise.index_select(0, idx), unroll_steps)
            noisy = noisy.index_copy(0, idx, x.to(noisy.dtype))
            t = t.index_fill(0, idx, t_last)
    pred = unet(noisy, t, degraded, **cond).sample
    scores_pixel = torch.repeat_interleave(torch.repeat_interleave(
        batch['scores'].to(device)[:, None], cell, dim=2), cell, dim=3)[:, :, :h, :w]
    loss, terms = adaqual_loss(pred, degraded, clean, scores_pixel, weights)
    if est_loss is not None:
        loss = loss + estimator_weight * est_loss
        terms = {**terms, **est_terms, 'total': loss.item()}
    return loss, terms


def check_gradients(modules):
    """Raise if any trainable parameter received no gradient (a disconnected conditioning path)."""
    missing = [f'{prefix}.{name}' for prefix, module in modules.items()
               for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise RuntimeError(f'{len(missing)} parameters got no gradient after the first step '
                           f'(disconnected from the loss): {missing[:10]}')


class _Log:
    def __init__(self, out_dir):
        self.text = open(Path(out_dir) / 'train.log', 'a', buffering=1)
        self.jsonl = open(Path(out_dir) / 'train_log.jsonl', 'a', buffering=1)

    def __call__(self, record, message=None):
        self.jsonl.write(json.dumps(record) + '\n')
        if message:
            self.text.write(time.strftime('%H:%M:%S ') + message + '\n')

    def close(self):
        self.text.close()
        self.jsonl.close()


def train(cfg):
    """
    Train (or resume) a run; returns a dict summary (steps, best validation PSNR, wall time).
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from adaqual_ros.assets import assets_root
    from adaqual_ros.pipelines.pipeline_adaqual import AdaQualPipeline
    from adaqual_ros.prompting.text_encoder import PromptEncoder
    from adaqual_ros.weather import load_layers

    if not 0.0 <= cfg.unroll <= 1.0:
        raise ValueError(f'unroll must be in [0, 1], got {cfg.unroll}')
    if cfg.unroll and cfg.unroll_steps < 2:
        raise ValueError(f'unroll_steps must be >= 2 (a sampler with earlier steps), got '
                         f'{cfg.unroll_steps}')
    if cfg.joint_estimator and cfg.estimator != 'learned':
        raise ValueError(f'joint_estimator trains the learned estimator: set estimator=learned '
                         f'(got estimator={cfg.estimator!r})')
    if cfg.joint_estimator and cfg.estimator_weight < 0:
        raise ValueError(f'estimator_weight must be >= 0, got {cfg.estimator_weight}')
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.init and cfg.estimator:
        # A fine-tune goes on with the estimator its starting weights were trained with.
        from adaqual_ros.pipelines import estimator_weights

        cfg = replace(cfg, estimator_path=str(
            estimator_weights(cfg.estimator, cfg.estimator_path, cfg.init) or ''))
    weights = LossWeights(cfg.l1, cfg.l2, cfg.a, cfg.edge)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'config.json').write_text(json.dumps(asdict(cfg), indent=2))
    assets = assets_root(cfg.assets or None)
    files = list_images(cfg.clean_dirs, assets, cfg.exclude)
    if cfg.max_images:
        files = files[:cfg.max_images]
    layers = load_layers(assets / 'data' / 'weather_layers') if assets else None

    torch.manual_seed(cfg.seed)
    if cfg.init:
        pipe = AdaQualPipeline.from_pretrained(cfg.init)
    else:
        pipe = AdaQualPipeline.from_components_config(cfg.model_config, cell=cfg.cell)
    unet, text_encoder, scheduler = pipe.unet, pipe.text_encoder, pipe.scheduler
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    groups = [{'params': params, 'scale': 1.0}]
    estimator = None
    if cfg.joint_estimator:
        from adaqual_ros.quality.learned import load_learned_estimator

        estimator = load_learned_estimator(cfg.estimator_path or None, cell=cfg.cell)
        # Batch statistics of a few crops would drift the norms it reads frames with: its
        # batch norms stay in inference mode, its weights train.
        estimator.eval()
        estimator.requires_grad_(True)
        groups.append({'params': list(estimator.parameters()),
                       'scale': cfg.estimator_lr / cfg.lr if cfg.lr else 0.0})
    trained = [p for g in groups for p in g['params']]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.99))
    ema = EMAModel(trained, decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
    state = {'step': 0, 'elapsed_s': 0.0, 'best_psnr': -1.0, 'input_psnr': None,
             'saved_psnr': None}
    accelerator = Accelerator(project_dir=str(out))
    unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    if estimator is not None:
        estimator = accelerator.prepare(estimator)
    accelerator.register_for_checkpointing(ema)
    ckpt = out / 'checkpoint'
    if cfg.resume and (ckpt / 'trainer_state.json').is_file():
        accelerator.load_state(str(ckpt))
        state.update(json.loads((ckpt / 'trainer_state.json').read_text()))
    ema.to(accelerator.device)

    data = SyntheticCrops(files, cfg.crop, cfg.cell, [cfg.seed, state['step']],
                          scale_min=cfg.scale_min, clean_prob=cfg.clean_prob,
                          quality_jitter=cfg.quality_jitter, layers=layers,
                          estimator=cfg.estimator, estimator_prob=cfg.estimator_prob,
                          camera_aug=cfg.camera_aug, context=cfg.estimator_context,
                          dim_haze=cfg.dim_haze, estimator_path=cfg.estimator_path,
                          score_shift=cfg.score_shift, joint=cfg.joint_estimator)
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.batch_size, collate_fn=_collate, num_workers=cfg.num_workers,
        worker_init_fn=_worker_init if cfg.num_workers else None,
        persistent_workers=cfg.num_workers > 0,
        # fork after OpenCV/OpenMP thread pools exist can deadlock the worker: spawn instead
        multiprocessing_context='spawn' if cfg.num_workers else None)
    val_set = build_validation_set(assets, cfg.val_images, cfg.val_size, cfg.cell, layers=layers)
    encoder = PromptEncoder(pipe.tokenizer, accelerator.unwrap_model(text_encoder), cache_size=0)
    log = _Log(out)
    log({'event': 'start', 'step': state['step'], 'images': len(files),
         'config': asdict(cfg)}, f'start at step {state["step"]}: {len(files)} clean images, '
        f'{sum(p.numel() for p in trained)} parameters'
        + (' (estimator trained jointly)' if estimator is not None else ''))
    gen = torch.Generator().manual_seed(cfg.seed * 1000003 + state['step'])
    cell, device = cfg.cell, accelerator.device

    def ema_pipeline():
        base_unet = accelerator.unwrap_model(unet)
        base_te = accelerator.unwrap_model(text_encoder)
        base_est = None if estimator is None else accelerator.unwrap_model(estimator)
        live = [p for m in (base_unet, base_te, base_est) if m is not None
                for p in m.parameters()]
        ema.store(live)
        ema.copy_to(live)
        p = AdaQualPipeline(base_unet, scheduler, pipe.tokenizer, base_te, cell=cell,
                            estimator=base_est)
        return p, live

    def save(p, folder):
        p.save_pretrained(str(folder))
        if estimator is not None:  # the pair: this restorer follows this estimator
            p.estimator.save_pretrained(str(Path(folder) / 'estimator'))

    def run_validation():
        p, live = ema_pipeline()
        p.unet.eval()
        p.text_encoder.eval()
        try:
            # A joint run is judged with its own estimator's maps: the pair is what ships.
            val_psnr, in_psnr = validate(p, val_set, estimated=estimator is not None)
            improved = val_psnr > state['best_psnr']
            if improved:
                state['best_psnr'] = val_psnr
                save(p, out / 'pipeline')
                if cfg.save_to and val_psnr > in_psnr:
                    save(p, cfg.save_to)
                    state['saved_psnr'] = val_psnr
        finally:
            ema.restore(live)
            p.unet.train()
            p.text_encoder.train()
        state['input_psnr'] = in_psnr
        return val_psnr, in_psnr, improved

    def save_checkpoint():
        accelerator.save_state(str(ckpt))
        (ckpt / 'trainer_state.json').write_text(json.dumps(state))

    maps = ", the estimator's maps" if estimator is not None else ', ground-truth maps'
    t_start = time.time() - state['elapsed_s']
    bar = tqdm(total=cfg.steps, initial=state['step'], mininterval=30, desc='train')
    it = iter(loader)
    running, first_step = {}, True
    while state['step'] < cfg.steps:
        state['elapsed_s'] = time.time() - t_start
        if cfg.time_limit_min > 0 and state['elapsed_s'] > cfg.time_limit_min * 60:
            break
        batch = next(it)
        loss, terms = training_loss(unet, encoder, pipe.prompter, scheduler, batch, weights,
                                    gen, cfg.t_focus, cell, device, cfg.unroll, cfg.unroll_steps,
                                    estimator, cfg.estimator_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f'non-finite loss at step {state["step"]}: {terms}')
        lr = _lr_at(cfg, state['step'], state['elapsed_s'])
        for group in optimizer.param_groups:
            group['lr'] = lr * group['scale']
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if first_step:
            first_step = False
            check_gradients({'unet': accelerator.unwrap_model(unet),
                             'text_encoder': accelerator.unwrap_model(text_encoder),
                             **({} if estimator is None else
                                {'estimator': accelerator.unwrap_model(estimator)})})
        accelerator.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        ema.step(trained)
        state['step'] += 1
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + v
        running['n'] = running.get('n', 0) + 1
        bar.update(1)
        step = state['step']
        if step % 50 == 0:
            n = running.pop('n')
            avg = {k: v / n for k, v in running.items()}
            running = {}
            log({'event': 'train', 'step': step, 'lr': lr, 'time_s': round(time.time() - t_start,
                 1), **avg}, f'step {step} lr {lr:.2e} ' + ' '.join(
                     f'{k} {v:.4f}' for k, v in avg.items()))
        if step % cfg.val_every == 0:
            val_psnr, in_psnr, improved = run_validation()
            log({'event': 'val', 'step': step, 'psnr': val_psnr, 'input_psnr': in_psnr,
                 'time_s': round(time.time() - t_start, 1)},
                f'val step {step}: PSNR {val_psnr:.2f} dB (input {in_psnr:.2f} dB)' + maps
                + (' *' if improved else ''))
        if step % cfg.checkpoint_every == 0:
            state['elapsed_s'] = time.time() - t_start
            save_checkpoint()
    bar.close()
    state['elapsed_s'] = time.time() - t_start
    val_psnr, in_psnr, _ = run_validation()
    p, live = ema_pipeline()
    try:
        save(p, out / 'pipeline_final')
        if cfg.save_to and val_psnr >= state['best_psnr'] - 1e-6 and val_psnr > in_psnr:
            save(p, cfg.save_to)
            state['saved_psnr'] = val_psnr
    finally:
        ema.restore(live)
    save_checkpoint()
    summary = {'event': 'end', 'step': state['step'], 'val_psnr': val_psnr,
               'input_psnr': in_psnr, 'best_psnr': state['best_psnr'],
               'saved_psnr': state['saved_psnr'], 'wall_s': round(state['elapsed_s'], 1)}
    log(summary, f'end at step {state["step"]}: val PSNR {val_psnr:.2f} dB (input '
        f'{in_psnr:.2f} dB), best {state["best_psnr"]:.2f}, {state["elapsed_s"] / 60:.1f} min')
    log.close()
    return summary
