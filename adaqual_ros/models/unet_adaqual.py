"""AdaQualUNet: NAFNet-style conditional UNet predicting the clean residual of a degraded frame."""
from dataclasses import dataclass
import math

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
import torch
from torch import nn
import torch.nn.functional as F

from adaqual_ros.models.blocks import CondNAFBlock, RegionCrossAttention, cell_index


@dataclass
class AdaQualUNetOutput(BaseOutput):
    """
    Output of AdaQualUNet.

    Args:
        sample (`torch.Tensor` of shape `(B, 3, H, W)`): the predicted clean residual r0.
    """

    sample: torch.Tensor


class AdaQualUNet(ModelMixin, ConfigMixin):
    """
    NAFNet-style conditional UNet for residual diffusion.

    The input is the degraded frame (conditioning) concatenated with the noisy residual x_t; the
    output is the predicted clean residual r0 = clean - degraded. Each block is FiLM-modulated by
    the timestep embedding and by per-pixel quality features (score + type probabilities of the
    position's region); region-masked cross-attention lets each position read the global prompt
    tokens and its own region's prompt tokens. The last convolution starts at zero, so an
    untrained model predicts r0 = 0 (returns its input). Any H, W: the model pads internally.

    Args:
        in_channels (`int`, defaults to 3): channels of the frame and of the residual.
        width (`int`, defaults to 16): channels of the first level.
        enc_blocks (`tuple[int]`, defaults to (1, 1, 2)): NAF blocks per encoder level.
        middle_blocks (`int`, defaults to 2): NAF blocks at the bottleneck.
        dec_blocks (`tuple[int]`, defaults to (1, 1, 1)): NAF blocks per decoder level (same
            length as enc_blocks, listed from the deepest level up).
        unshuffle (`int`, defaults to 2): pixel-unshuffle factor at the input (1 = full res).
        time_dim (`int`, defaults to 64): timestep embedding size.
        quality_channels (`int`, defaults to 5): quality-map channels (score + 4 type probs).
        quality_dim (`int`, defaults to 16): channels of the per-pixel quality features.
        use_prompts (`bool`, defaults to True): build the cross-attention layers; forward then
            requires prompt embeddings.
        context_dim (`int`, defaults to 64): prompt embedding size (the text encoder's hidden).
        attn_heads (`int`, defaults to 1): cross-attention heads.
        attn_dec_levels (`tuple[int]`, defaults to (0,)): decoder levels (0 = deepest) that get
            a cross-attention layer; the bottleneck always has one when prompts are used.
        dw_expand (`int`, defaults to 2), ffn_expand (`int`, defaults to 2): block expansions.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, in_channels=3, width=16, enc_blocks=(1, 1, 2), middle_blocks=2,
                 dec_blocks=(1, 1, 1), unshuffle=2, time_dim=64, quality_channels=5,
                 quality_dim=16, use_prompts=True, context_dim=64, attn_heads=1,
                 attn_dec_levels=(0,), dw_expand=2, ffn_expand=2):
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f'enc_blocks {tuple(enc_blocks)} and dec_blocks {tuple(dec_blocks)} '
                             'must have the same length')
        if unshuffle < 1:
            raise ValueError(f'unshuffle must be >= 1, got {unshuffle}')
        bad = [lv for lv in attn_dec_levels if not 0 <= lv < len(dec_blocks)]
        if bad:
            raise ValueError(f'attn_dec_levels {bad} outside 0..{len(dec_blocks) - 1}')
        u2 = unshuffle * unshuffle
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_dim, time_dim)
        self.quality_embed = nn.Sequential(nn.Conv2d(quality_channels, quality_dim, 1), nn.SiLU(),
                                           nn.Conv2d(quality_dim, quality_dim, 1))
        self.intro = nn.Conv2d(2 * in_channels * u2, width, 3, padding=1)

        def stage(ch, n):
            return nn.ModuleList(CondNAFBlock(ch, time_dim, quality_dim, dw_expand, ffn_expand)
                                 for _ in range(n))

        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in enc_blocks:
            self.encoders.append(stage(ch, n))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, stride=2))
            ch *= 2
        self.middle = stage(ch, middle_blocks)
        self.middle_attn = RegionCrossAttention(ch, context_dim, attn_heads) if use_prompts \
            else None
        self.ups, self.decoders, self.dec_attn = nn.ModuleList(), nn.ModuleList(), nn.ModuleDict()
        for level, n in enumerate(dec_blocks):
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False),
                                          nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(stage(ch, n))
            if use_prompts and level in attn_dec_levels:
                self.dec_attn[str(level)] = RegionCrossAttention(ch, context_dim, attn_heads)
        self.ending = nn.Conv2d(width, in_channels * u2, 3, padding=1)
        # Zero-init: an untrained model predicts a zero residual (returns the degraded input).
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)

    @property
    def size_multiple(self):
        """Frame sizes are padded internally to a multiple of this."""
        return self.config.unshuffle * 2 ** len(self.config.enc_blocks)

    @staticmethod
    def _cell_indices(grid, size, factor, cell, device):
        """The quality cell of each feature row and column at a level downsampled by factor."""
        return tuple(cell_index(n, factor, cell, g, device) for n, g in zip(size, grid))

    def forward(self, sample, timestep, condition, quality, cell=64, global_embeds=None,
                global_mask=None, local_embeds=None, local_mask=None, return_dict=True):
        """
        Predict the clean residual.

        Args:
            sample (`torch.Tensor`, (B, 3, H, W)): noisy residual x_t.
            timestep (`torch.Tensor` or `int`): diffusion timestep(s), scalar or (B,).
            condition (`torch.Tensor`, (B, 3, H, W)): degraded frame in [0, 1].
            quality (`torch.Tensor`, (B, 5, gh, gw)): per-region (score - 3) / 2 and the 4 type
                probabilities; gh, gw = ceil(H / cell), ceil(W / cell).
            cell (`int`, defaults to 64): quality cell size in pixels.
            global_embeds (`torch.Tensor`, (B, Lg, D), *optional*): global prompt tokens.
            global_mask (`torch.Tensor`, (B, Lg) bool, *optional*): valid global tokens.
            local_embeds (`torch.Tensor`, (B, gh * gw, Ll, D), *optional*): region prompt tokens
                (row-major cells).
            local_mask (`torch.Tensor`, (B, gh * gw, Ll) bool, *optional*).
            return_dict (`bool`, defaults to True): return AdaQualUNetOutput or a tuple.
        """
        cfg = self.config
        if sample.shape != condition.shape or sample.ndim != 4:
            raise ValueError(f'sample {tuple(sample.shape)} and condition '
                             f'{tuple(condition.shape)} must be equal (B, C, H, W) shapes')
        b, _, h, w = sample.shape
        gh, gw = math.ceil(h / cell), math.ceil(w / cell)
        if quality is None or tuple(quality.shape) != (b, cfg.quality_channels, gh, gw):
            got = None if quality is None else tuple(quality.shape)
            raise ValueError(f'quality must be (B, {cfg.quality_channels}, {gh}, {gw}) for a '
                             f'{h}x{w} frame and cell {cell}, got {got}')
        prompts = (global_embeds, global_mask, local_embeds, local_mask)
        if cfg.use_prompts:
            if any(p is None for p in prompts):
                raise ValueError('this model uses prompts: global_embeds, global_mask, '
                                 'local_embeds and local_mask are required')
            if local_embeds.shape[:2] != (b, gh * gw):
                raise ValueError(f'local_embeds must be (B={b}, {gh * gw} cells, L, D), got '
                                 f'{tuple(local_embeds.shape)}')
        elif any(p is not None for p in prompts):
            raise ValueError('this model was built with use_prompts=False; got prompt embeddings')

        # Pad to the size multiple; the quality grid (and the region prompts) extend by edge
        # replication over the padding.
        m = self.size_multiple
        hp, wp = -(-h // m) * m, -(-w // m) * m
        x = torch.cat([condition * 2 - 1, sample], dim=1)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h), mode='replicate')
        gph, gpw = math.ceil(hp / cell), math.ceil(wp / cell)
        ri = torch.clamp(torch.arange(gph, device=x.device), max=gh - 1)
        ci = torch.clamp(torch.arange(gpw, device=x.device), max=gw - 1)
        quality = quality.to(x.dtype)[:, :, ri][:, :, :, ci]
        if cfg.use_prompts:
            flat = (ri[:, None] * gw + ci[None, :]).reshape(-1)
            local_embeds, local_mask = local_embeds[:, flat], local_mask[:, flat]
            attn_args = (cell, (gph, gpw), global_embeds.to(x.dtype), global_mask.bool(),
                         local_embeds.to(x.dtype), local_mask.bool())

        t = torch.as_tensor(timestep, device=x.device)
        t = t.reshape(1).expand(b) if t.ndim == 0 else t
        temb = self.time_embedding(self.time_proj(t).to(x.dtype))
        qemb = self.quality_embed(quality)

        u = cfg.unshuffle
        x = F.pixel_unshuffle(x, u) if u > 1 else x
        x = self.intro(x)
        factor, skips = u, []
        for blocks, down in zip(self.encoders, self.downs):
            idx = self._cell_indices(qemb.shape[-2:], x.shape[-2:], factor, cell, x.device)
            for blk in blocks:
                x = blk(x, temb, qemb, *idx)
            skips.append(x)
            x = down(x)
            factor *= 2
        idx = self._cell_indices(qemb.shape[-2:], x.shape[-2:], factor, cell, x.device)
        for blk in self.middle:
            x = blk(x, temb, qemb, *idx)
        if self.middle_attn is not None:
            x = self.middle_attn(x, factor, *attn_args)
        for level, (up, blocks) in enumerate(zip(self.ups, self.decoders)):
            x = up(x) + skips.pop()
            factor //= 2
            idx = self._cell_indices(qemb.shape[-2:], x.shape[-2:], factor, cell, x.device)
            for blk in blocks:
                x = blk(x, temb, qemb, *idx)
            if str(level) in self.dec_attn:
                x = self.dec_attn[str(level)](x, factor, *attn_args)
        x = self.ending(x)
        x = F.pixel_shuffle(x, u) if u > 1 else x
        out = x[:, :, :h, :w]
        if not return_dict:
            return (out,)
        return AdaQualUNetOutput(sample=out)


def quality_tensor(quality_maps, device=None, dtype=torch.float32):
    """
    Stack QualityMaps (same grid) into the model's (B, 5, gh, gw) quality input.

    Channel 0 is (score - 3) / 2 in [-1, 1]; channels 1..4 the type probabilities.
    """
    import numpy as np

    grids = {tuple(q.scores.shape) for q in quality_maps}
    if len(grids) != 1:
        raise ValueError(f'quality maps in one batch must share a grid, got {sorted(grids)}')
    arr = np.stack([np.concatenate([((q.scores - 3.0) / 2.0)[None],
                                    np.moveaxis(q.type_probs, -1, 0)], axis=0)
                    for q in quality_maps]).astype(np.float32)
    return torch.from_numpy(arr).to(device=device, dtype=dtype)
