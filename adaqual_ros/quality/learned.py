"""
Learned regional quality estimator: a small fully convolutional CNN.

The network adds three full-resolution fine-structure channels (|residual|, |dx|, |dy| of
luminance), averages the frame down by ``downscale``, folds it with a pixel-unshuffle (so thin
rain streaks and snow specks survive as channels instead of being blurred away), and runs a few
depthwise-separable blocks with two stride-2 stages plus a frame-level context vector (and, on
frames larger than `context_window`, a second read with each prediction's neighbourhood's
context, for the maps' ``skip_scores``). It predicts,
every ``out_stride`` pixels, a quality score in [1, 5] and four degradation-type strengths in
[0, 1]. Cells of any multiple of ``out_stride`` are coverage-weighted averages of those
predictions, so partial last cells are exact and any frame size works.
"""
from pathlib import Path

import cv2
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from adaqual_ros.quality.base import QualityEstimatorMixin, check_cell
from adaqual_ros.quality.types import DEGRADATION_TYPES

# Long side above which frames are estimated at half size (the training photos are <= 800 px).
MAX_SIDE = 1280

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / 'checkpoints' / 'quality_learned'


def default_checkpoint_path():
    """Folder of the shipped learned-estimator weights (save_pretrained layout)."""
    return CHECKPOINT_DIR


def _window_mean(x, k):
    """
    Mean of ``x`` (B, C, H, W) over the k x k window around each position; windows at the
    borders are shifted inwards, not shrunk, so every mean covers k x k positions (or the whole
    side where it is shorter than k).
    """
    h, w = x.shape[2], x.shape[3]
    kh, kw = min(k, h), min(k, w)
    # Summed-area table in float32: half-precision running sums lose the small differences.
    table = F.pad(x.to(torch.promote_types(x.dtype, torch.float32)), (1, 0, 1, 0))
    table = table.cumsum(2).cumsum(3)
    y0 = torch.clamp(torch.arange(h, device=x.device) - kh // 2, 0, h - kh)
    x0 = torch.clamp(torch.arange(w, device=x.device) - kw // 2, 0, w - kw)
    y1, x1 = y0 + kh, x0 + kw
    rows1, rows0 = table[:, :, y1], table[:, :, y0]
    total = rows1[..., x1] - rows0[..., x1] - rows1[..., x0] + rows0[..., x0]
    return (total / (kh * kw)).to(x.dtype)


class _SepBlock(nn.Module):
    """Residual depthwise 3x3 + pointwise block."""

    def __init__(self, channels, dilation=1):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation,
                            groups=channels, bias=False)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn(self.pw(self.dw(x))))


class _Down(nn.Module):
    """Stride-2 3x3 convolution (ceil of the input size) + BN + ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class LearnedQualityEstimator(QualityEstimatorMixin, ModelMixin, ConfigMixin):
    """
    Small CNN predicting per-region quality and degradation types.

    Args:
        downscale (`int`, *optional*, defaults to 2): average-pool factor applied to the frame
            first.
        unshuffle (`int`, *optional*, defaults to 4): pixel-unshuffle factor after the pool.
        widths (`tuple[int, int, int]`, *optional*, defaults to (32, 48, 64)): channels at
            strides downscale*unshuffle, x2, x4.
        cell (`int`, *optional*, defaults to 64): cell size of the maps `estimate` returns; a
            multiple of `out_stride` (change it on a loaded model with ``model.cell = 128``).
        highpass (`bool`, *optional*, defaults to True): add full-resolution fine-structure
            channels (|residual|, |dx|, |dy| of luminance) before pooling.

    The forward pass takes ``(B, 3, H, W)`` float RGB in [0, 1] (any H, W) and returns
    ``(scores, type_logits)`` at `out_stride`: ``(B, 1, ceil(H/s), ceil(W/s))`` in [1, 5] and
    ``(B, 4, ceil(H/s), ceil(W/s))`` logits in DEGRADATION_TYPES order.

    Example:
        ```py
        from adaqual_ros.quality import build_estimator
        estimator = build_estimator('learned')        # shipped weights, CPU
        qmap = estimator.estimate(frame_rgb_uint8)     # QualityMap, cell 64
        ```
    """

    name = 'learned'

    @register_to_config
    def __init__(self, downscale=2, unshuffle=4, widths=(32, 48, 64), cell=64, highpass=True):
        super().__init__()
        if downscale < 1 or unshuffle < 1:
            raise ValueError(f'downscale ({downscale}) and unshuffle ({unshuffle}) must be >= 1')
        if len(widths) != 3:
            raise ValueError(f'widths needs 3 entries, got {widths}')
        c1, c2, c3 = widths
        cin = 6 if highpass else 3
        self.stem = nn.Sequential(
            nn.Conv2d(cin * unshuffle * unshuffle, c1, 1, bias=False), nn.BatchNorm2d(c1),
            nn.ReLU())
        self.block1 = _SepBlock(c1)
        self.down1 = _Down(c1, c2)
        self.block2 = _SepBlock(c2)
        self.down2 = _Down(c2, c3)
        self.block3 = _SepBlock(c3)
        self.block4 = _SepBlock(c3, dilation=2)
        # Frame-level context: low light and haze are largely global, the cell alone is ambiguous.
        self.context = nn.Linear(c3, c3)
        self.head = nn.Sequential(nn.Conv2d(c3, c3, 1), nn.ReLU(),
                                  nn.Conv2d(c3, 1 + len(DEGRADATION_TYPES), 1))
        self._cell = None
        # Frames with a longer side are estimated at half size (see _training_scale).
        self.max_side = MAX_SIDE
        self.cell = cell
        self._context_window = 0  # the whole frame's context only, as trained
        self._hp_kernel = None

    @property
    def out_stride(self):
        """Pixels of the input frame per prediction."""
        return self.config.downscale * self.config.unshuffle * 4

    @property
    def cell(self):
        return self._cell

    @cell.setter
    def cell(self, value):
        self._cell = check_cell(value, self.out_stride)

    @property
    def context_window(self):
        """
        Side in pixels (at the estimation scale, rounded up to `out_stride`) of each prediction's
        local context, which gives the maps' ``skip_scores``; 0 = none (``skip_scores`` None).

        Why two contexts: the whole frame's mean features are what lift the borderline cells of
        a clean frame (smooth pavement, sky) above the skip threshold, but on a large frame with
        a hazy half they pull the clean half down too. For ``skip_scores`` each prediction is
        read with both and keeps the higher score, so a cell counts as degraded only when it
        reads so in its own neighbourhood as well as in the whole frame. ``scores`` stay the
        whole-frame read the restorer was trained with; they condition it and decide whether a
        frame is restored whole. Frames no larger than the window (every training crop) get no
        ``skip_scores``.
        """
        return self._context_window

    @context_window.setter
    def context_window(self, value):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f'context_window must be whole pixels >= 0, got {value!r}')
        s = self.out_stride
        self._context_window = -(-int(value) // s) * s

    def forward(self, image):
        scores, type_logits, _ = self.read(image)
        return scores, type_logits

    def read(self, image):
        """
        The forward pass plus, on frames larger than `context_window`, the both-contexts scores:
        ``(scores, type_logits, skip_scores or None)``, the last shaped like ``scores``.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f'image must be (B, 3, H, W), got {tuple(image.shape)}')
        # Mirror the frame out to whole prediction blocks: a partial last row/column is then read
        # from real content, not from zero-padded convolution borders (which scored the bottom
        # 16 px row of clean 1280x720 frames as degraded); pooling and unshuffle then divide.
        s = self.out_stride
        ph, pw = (-image.shape[2]) % s, (-image.shape[3]) % s
        if ph or pw:
            tiny = ph >= image.shape[2] or pw >= image.shape[3]  # too small to mirror
            image = F.pad(image, (0, pw, 0, ph), mode='replicate' if tiny else 'reflect')
        x = image
        hp = self._highpass(x) if self.config.highpass else None
        if self.config.downscale > 1:
            x = F.avg_pool2d(x, self.config.downscale, ceil_mode=True)
            hp = None if hp is None else F.avg_pool2d(hp, self.config.downscale, ceil_mode=True)
        if hp is not None:
            # Concatenating after the pool touches a quarter of the pixels.
            x = torch.cat([x, hp], dim=1)
        x = F.pixel_unshuffle(x, self.config.unshuffle)
        x = self.block1(self.stem(x))
        x = self.block2(self.down1(x))
        x = self.block4(self.block3(self.down2(x)))
        out = self.head(F.relu(x + self.context(x.mean(dim=(2, 3)))[:, :, None, None]))
        skip = None
        k = self._context_window // self.out_stride
        if k and (x.shape[2] > k or x.shape[3] > k):
            # The Linear on a window mean = the Linear's weights on each position's window mean.
            local = F.conv2d(_window_mean(x, k), self.context.weight[:, :, None, None],
                             self.context.bias)
            skip = 1.0 + 4.0 * torch.sigmoid(torch.maximum(
                self.head(F.relu(x + local))[:, :1], out[:, :1]))
        return 1.0 + 4.0 * torch.sigmoid(out[:, :1]), out[:, 1:], skip

    def _highpass(self, image):
        """
        Full-resolution fine-structure energy: |residual|, |d/dx|, |d/dy| of luminance.

        Pooling raw pixels blurs a one-pixel rain streak or snow speck away; pooling these
        magnitudes keeps its energy and orientation (streaks are mostly vertical).
        """
        kernels = self._hp_kernel
        if kernels is None or kernels[0].device != image.device or \
                kernels[0].dtype != image.dtype:
            lum = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            spatial = torch.zeros(3, 1, 3, 3)
            spatial[0] = -4.0 / 9.0
            spatial[0, 0, 1, 1] += 4.0  # 4 x (pixel - 3x3 mean)
            spatial[1, 0, 1, 0], spatial[1, 0, 1, 2] = -1.0, 1.0
            spatial[2, 0, 0, 1], spatial[2, 0, 2, 1] = -1.0, 1.0
            kernels = tuple(k.to(image.device, image.dtype) for k in (lum, spatial))
            self._hp_kernel = kernels
        # Luminance first, so the padded copy has one channel instead of three.
        lum = F.conv2d(image, kernels[0])
        padded = F.pad(lum, (1, 1, 1, 1), mode='replicate')
        return F.conv2d(padded, kernels[1]).abs_()

    def to_cells(self, scores, type_logits, image_size, cell=None):
        """
        Coverage-weighted average of stride-level predictions over cells.

        Returns:
            ``(scores (B, gh, gw), type_probs (B, gh, gw, 4))`` tensors.
        """
        cell = self.cell if cell is None else check_cell(cell, self.out_stride)
        h, w = image_size
        s = self.out_stride
        gh, gw = scores.shape[2], scores.shape[3]
        # Fraction of each stride block inside the frame (the last row/column may be partial).
        cov_y = torch.clamp(torch.tensor(h, dtype=scores.dtype) - s * torch.arange(gh), max=s) / s
        cov_x = torch.clamp(torch.tensor(w, dtype=scores.dtype) - s * torch.arange(gw), max=s) / s
        weight = (cov_y[:, None] * cov_x[None, :]).to(scores.device)[None, None]
        values = torch.cat([scores, torch.sigmoid(type_logits)], dim=1) * weight
        k = cell // s
        if k > 1:
            values = F.avg_pool2d(values, k, ceil_mode=True)
            weight = F.avg_pool2d(weight, k, ceil_mode=True)
        values = values / weight
        return values[:, 0], values[:, 1:].permute(0, 2, 3, 1)

    def _training_scale(self, frames):
        """
        Frames larger than the training images (long side over ``max_side``) at half size, with
        half the cell, so the grid still matches the full frame's cells.

        The net learned weather and texture at the apparent scale of <= 800 px photos; a soft
        1920x1080 video frame read at full size looks hazy to it.
        """
        out, cells = [], []
        for frame in frames:
            h, w = frame.shape[:2]
            if max(h, w) > self.max_side and self.cell % (2 * self.out_stride) == 0:
                frame = cv2.resize(frame, ((w + 1) // 2, (h + 1) // 2),
                                   interpolation=cv2.INTER_AREA)
                cells.append(self.cell // 2)
            else:
                cells.append(self.cell)
            out.append(frame)
        return out, cells

    @torch.inference_mode()
    def _estimate_grids(self, frames):
        was_training = self.training
        self.eval()
        try:
            results = []
            # Same-size frames run as one batch; others one by one.
            groups = {}
            frames, cells = self._training_scale(frames)
            for i, frame in enumerate(frames):
                groups.setdefault((frame.shape, cells[i]), []).append(i)
            out = [None] * len(frames)
            for (shape, cell), idx in groups.items():
                batch = np.stack([frames[i] for i in idx])
                # Convert while still HWC-contiguous; the permuted view is channels_last, which
                # pooling and convolution read directly (no strided copy of the full frame).
                x = torch.from_numpy(batch).to(self.device).to(self.dtype).mul_(1.0 / 255.0)
                x = x.permute(0, 3, 1, 2)
                scores, logits, skip = self.read(x)
                cs, cp = self.to_cells(scores.float(), logits.float(), shape[:2], cell)
                cs, cp = cs.cpu().numpy(), cp.cpu().numpy()
                if skip is not None:
                    skip = self.to_cells(skip.float(), logits.float(), shape[:2], cell)[0]
                    skip = skip.cpu().numpy()
                for j, i in enumerate(idx):
                    out[i] = (cs[j], cp[j]) + (() if skip is None else (skip[j],))
            results.extend(out)
            return results
        finally:
            self.train(was_training)


def load_learned_estimator(path=None, cell=64, device='cpu', context_window=0, **kwargs):
    """
    Load the learned estimator from a save_pretrained folder (default: the shipped weights).
    ``context_window`` (px): see `LearnedQualityEstimator.context_window` (0 = off).

    Raises:
        FileNotFoundError: when the folder holds no weights.
    """
    folder = Path(path) if path else default_checkpoint_path()
    if not (folder / 'config.json').is_file():
        raise FileNotFoundError(
            f'no learned quality estimator weights in {folder} (expected config.json and '
            f'diffusion_pytorch_model.safetensors); train them with `adaqual train-quality` or '
            f"use build_estimator('classical')")
    model = LearnedQualityEstimator.from_pretrained(str(folder), local_files_only=True, **kwargs)
    model.cell = cell
    model.context_window = context_window
    return model.to(device).eval()
