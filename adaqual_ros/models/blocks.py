"""Building blocks of the AdaQual denoiser: NAFNet blocks with FiLM, region-masked attention."""
import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) tensor (NAFNet's channel LayerNorm)."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        if x.is_cuda and x.shape[1] % 4:
            return self.forward_unfused(x)
        # One fused layer_norm kernel on the channels-last view (it computes in float32 under
        # fp16 too); written out as mean/var/div it was ~9 full-size passes, the bulk of the
        # network's GPU time. The result keeps the input's memory format.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        y = y.permute(0, 3, 1, 2)
        return y if channels_last(x) else y.contiguous()

    def forward_unfused(self, x):
        """
        The same normalisation in four passes. CUDA's vectorised layer_norm needs the channel
        count to divide by 4; otherwise it falls back to one thread block per row, which took
        4.4 ms per call at 1280x720 with 42 channels (the paper config's width; H200 profile).
        """
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias[:, None, None], y, self.weight[:, None, None])


def channels_last(x):
    """Whether a 4-D tensor is laid out channels-last (and not also plain contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def expand_cells(grid, rows, cols, like):
    """
    Per-cell values (B, C, gh, gw) at every feature position: ``grid[:, :, rows][..., cols]``.

    Gathered in ``like``'s memory format so the elementwise ops that use it stay vectorised.
    """
    if channels_last(like):
        return grid.permute(0, 2, 3, 1)[:, rows][:, :, cols].permute(0, 3, 1, 2)
    return grid[:, :, rows][:, :, :, cols]


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (NAFNet's activation)."""

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return a * b


class CondNAFBlock(nn.Module):
    """
    A NAFNet block whose normalised input is modulated (FiLM) by time and quality.

    Args:
        channels (`int`): feature channels.
        time_dim (`int`): size of the timestep embedding.
        quality_dim (`int`): channels of the per-cell quality features.
        dw_expand (`int`, defaults to 2): expansion of the depth-wise branch.
        ffn_expand (`int`, defaults to 2): expansion of the feed-forward branch.
    """

    def __init__(self, channels, time_dim, quality_dim, dw_expand=2, ffn_expand=2):
        super().__init__()
        c, dw = channels, channels * dw_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, c * ffn_expand, 1)
        self.conv5 = nn.Conv2d(c * ffn_expand // 2, c, 1)
        self.time_film = nn.Linear(time_dim, 2 * c)
        self.quality_film = nn.Conv2d(quality_dim, 2 * c, 1)
        # Block starts as the identity (NAFNet): the residual branches are scaled by zero.
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x, temb, qgrid, rows, cols):
        """
        Args:
            x (`torch.Tensor`, (B, C, H, W)): features.
            temb (`torch.Tensor`, (B, time_dim)): timestep embedding.
            qgrid (`torch.Tensor`, (B, quality_dim, gh, gw)): quality features per cell.
            rows, cols (`torch.Tensor` long): the cell of each feature row / column.
        """
        # Quality is constant per cell: the 1x1 FiLM projection runs on the cell grid and only
        # its result is spread over the positions (same values as projecting every position).
        film = self.quality_film(qgrid) + self.time_film(temb)[:, :, None, None]
        film[:, :film.shape[1] // 2] += 1  # scale = 1 + projection (a fresh grid-size tensor)
        scale, shift = expand_cells(film, rows, cols, x).chunk(2, dim=1)
        y = torch.addcmul(shift, self.norm1(x), scale)
        y = self.gate(self.conv2(self.conv1(y)))
        y = y * self.sca(y)
        x = torch.addcmul(x, self.conv3(y), self.beta)
        y = self.conv5(self.gate(self.conv4(self.norm2(x))))
        return torch.addcmul(x, y, self.gamma)


def cell_index(size, factor, cell, grid, device=None):
    """
    Cell index of every feature row (or column) of a level downsampled by ``factor``.

    The centre pixel of the feature's footprint decides its cell; indices are clamped to the grid.
    """
    pos = torch.arange(size, device=device) * factor + factor // 2
    return torch.clamp(pos // cell, max=grid - 1)


def attend(q, k, v, mask, pad_to=1):
    """
    Scaled dot-product attention with the head size zero-padded to a multiple of ``pad_to``.

    The padding changes nothing (zero query/key columns add nothing to the scores, zero value
    columns are cut off; the scale stays that of the real head size), but CUDA's fused kernels
    need head sizes that divide by 8: the paper config's 42 / 6 = 7 fell back to the math
    kernel, which writes out every attention matrix.
    """
    d = q.shape[-1]
    extra = -d % pad_to
    if not extra:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    pad = (0, extra)
    out = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad),
                                         attn_mask=mask, scale=d ** -0.5)
    return out[..., :d]


class RegionCrossAttention(nn.Module):
    """
    Cross-attention where each position sees the global tokens plus its own region's tokens.

    Positions are grouped by quality cell, so each group attends to [global tokens ; its cell's
    local tokens] with one batched scaled-dot-product call (padding tokens masked out).

    Args:
        channels (`int`): feature channels (queries and output).
        context_dim (`int`): size of the prompt embeddings.
        heads (`int`, defaults to 1): attention heads (``channels`` must divide by it).
    """

    def __init__(self, channels, context_dim, heads=1):
        super().__init__()
        if channels % heads:
            raise ValueError(f'channels {channels} not divisible by heads {heads}')
        self.heads = heads
        self.norm = LayerNorm2d(channels)
        self.to_q = nn.Conv2d(channels, channels, 1, bias=False)
        self.to_k = nn.Linear(context_dim, channels, bias=False)
        self.to_v = nn.Linear(context_dim, channels, bias=False)
        # Learned tags tell global tokens from local ones (they share the projections).
        self.global_tag = nn.Parameter(torch.randn(context_dim) * 0.02)
        self.local_tag = nn.Parameter(torch.randn(context_dim) * 0.02)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x, factor, cell, grid, global_embeds, global_mask, local_embeds,
                local_mask):
        """
        Args:
            x (`torch.Tensor`, (B, C, H, W)): features at a level downsampled by ``factor``.
            factor (`int`): pixels of the (padded) input per feature position.
            cell (`int`): quality cell size in input pixels.
            grid (`tuple[int, int]`): (gh, gw) covering the padded input.
            global_embeds (`torch.Tensor`, (B, Lg, D)), global_mask (`(B, Lg)` bool),
            local_embeds (`torch.Tensor`, (B, gh * gw, Ll, D)), local_mask (`(B, gh * gw, Ll)`).
        """
        b, c, h, w = x.shape
        gh, gw = grid
        if cell % factor:
            raise ValueError(f'region attention needs the cell ({cell} px) to be a multiple of '
                             f'the level factor {factor}')
        cl = cell // factor
        hc, wc = gh * cl, gw * cl
        if hc < h or wc < w:
            raise ValueError(f'quality grid {grid} x cell {cell} does not cover features {h}x{w}'
                             f' at factor {factor}')
        nh, d = self.heads, c // self.heads
        q = F.pad(self.to_q(self.norm(x)), (0, wc - w, 0, hc - h))
        q = q.view(b, nh, d, gh, cl, gw, cl).permute(0, 3, 5, 1, 4, 6, 2)
        q = q.reshape(b * gh * gw, nh, cl * cl, d)
        g = gh * gw
        ctx_g = (global_embeds + self.global_tag)[:, None].expand(-1, g, -1, -1)
        ctx = torch.cat([ctx_g, local_embeds + self.local_tag], dim=2)
        lt = ctx.shape[2]
        k = self.to_k(ctx).view(b * g, lt, nh, d).transpose(1, 2)
        v = self.to_v(ctx).view(b * g, lt, nh, d).transpose(1, 2)
        mask = torch.cat([global_mask[:, None].expand(-1, g, -1), local_mask], dim=2)
        mask = mask.reshape(b * g, 1, 1, lt).to(torch.bool)
        out = attend(q, k, v, mask, pad_to=8 if q.is_cuda else 1)
        out = out.view(b, gh, gw, nh, cl, cl, d).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(b, c, hc, wc)[:, :, :h, :w]
        return x + self.proj_out(out)
