"""AdaQualUNet: size of the paper config, conditioning paths, padding, region-masked attention."""
import math

import pytest
import torch

from adaqual_ros.models import AdaQualUNet, build_model
from adaqual_ros.models.blocks import CondNAFBlock, LayerNorm2d, RegionCrossAttention, attend

PAPER_PARAMS = 61.12e6


def _inputs(b=2, h=70, w=90, cell=32, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    gh, gw = math.ceil(h / cell), math.ceil(w / cell)
    mask_l = torch.rand(b, gh * gw, 6, generator=g) > 0.3
    mask_l[..., 0] = True
    return {
        'sample': torch.randn(b, 3, h, w, generator=g),
        'timestep': torch.tensor([999, 499][:b]),
        'condition': torch.rand(b, 3, h, w, generator=g),
        'quality': torch.rand(b, 5, gh, gw, generator=g) * 2 - 1,
        'cell': cell,
        'global_embeds': torch.randn(b, 5, dim, generator=g),
        'global_mask': torch.ones(b, 5, dtype=torch.bool),
        'local_embeds': torch.randn(b, gh * gw, 6, dim, generator=g),
        'local_mask': mask_l,
    }


def _perturbed_tiny(seed=0):
    """Tiny model with its zero-initialised pieces randomised (as after some training)."""
    torch.manual_seed(seed)
    model = build_model('tiny')
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith('ending') or name.endswith(('beta', 'gamma')):
                p.normal_(0, 0.3)
    return model


@pytest.mark.parametrize('name', ['paper', 'paper_rt'])
def test_paper_config_parameter_count(name):
    with torch.device('meta'):
        model = build_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.01, n


def test_paper_rt_is_gpu_aligned():
    # fp16 tensor-core kernels want channel counts and attention head sizes that divide by 8
    with torch.device('meta'):
        model = build_model('paper_rt')
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # the frame's and the quality map's channels come in (intro, quality_embed) and the frame's
    # go out (ending): those are what they are
    edges = (model.intro, model.ending, model.quality_embed[0])
    inner = [c for c in convs if all(c is not e for e in edges)]
    assert all(c.in_channels % 8 == 0 and c.out_channels % 8 == 0 for c in inner)
    attns = [model.middle_attn, *model.dec_attn.values()]
    sizes = [a.to_q.out_channels // a.heads for a in attns]
    assert all(s % 8 == 0 for s in sizes), sizes
    assert model.config.unshuffle == 2


def test_paper_rt_costs_a_fraction_of_the_paper_config():
    # The reason paper_rt exists: the same size for much less work per 1280x720 frame (shapes
    # only: meta tensors, no compute).
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for name in ('paper', 'paper_rt'):
        with torch.device('meta'):
            model = build_model(name).eval()
        kw = {k: v.to('meta') if torch.is_tensor(v) else v
              for k, v in _inputs(b=1, h=720, w=1280, cell=64, dim=512).items()}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(**kw)
        flops[name] = counter.get_total_flops()
    assert flops['paper_rt'] < 0.3 * flops['paper'], flops


def test_small_config_is_cpu_sized():
    with torch.device('meta'):
        model = build_model('small')
    n = sum(p.numel() for p in model.parameters())
    assert 0.4e6 < n < 1.0e6, n
    assert model.config.unshuffle == 2


def test_untrained_model_predicts_zero_residual_any_size():
    torch.manual_seed(0)
    model = build_model('tiny').eval()
    for h, w in ((70, 90), (33, 47), (64, 64)):
        kw = _inputs(h=h, w=w)
        with torch.no_grad():
            out = model(**kw).sample
        assert out.shape == (2, 3, h, w)
        assert torch.count_nonzero(out) == 0


def test_forward_checks_conditioning():
    model = build_model('tiny')
    kw = _inputs()
    missing = dict(kw, local_embeds=None)
    with pytest.raises(ValueError, match='prompts'):
        model(**missing)
    with pytest.raises(ValueError, match='quality'):
        model(**dict(kw, quality=kw['quality'][:, :, :1]))
    no_prompts = build_model('tiny', use_prompts=False)
    with pytest.raises(ValueError, match='use_prompts=False'):
        no_prompts(**kw)
    with pytest.raises(ValueError, match='same length'):
        AdaQualUNet(enc_blocks=(1, 1), dec_blocks=(1,))


def test_prompts_and_quality_change_the_output():
    model = _perturbed_tiny().eval()
    kw = _inputs()
    with torch.no_grad():
        base = model(**kw).sample
        other_local = model(**dict(kw, local_embeds=torch.flip(kw['local_embeds'], [1]))).sample
        other_global = model(**dict(kw, global_embeds=-kw['global_embeds'])).sample
        other_quality = model(**dict(kw, quality=-kw['quality'])).sample
        again = model(**kw).sample
    assert torch.equal(base, again)
    for changed in (other_local, other_global, other_quality):
        assert (changed - base).abs().mean() > 1e-4


def test_gradient_reaches_every_parameter():
    model = _perturbed_tiny(1)
    out = model(**_inputs()).sample
    out.square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


@pytest.mark.parametrize('channels', [16, 42])
@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last])
def test_channel_layer_norm_matches_the_formula(channels, memory_format):
    torch.manual_seed(0)
    norm = LayerNorm2d(channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(2, channels, 9, 13) * 3 + 1).contiguous(memory_format=memory_format)
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    ref = (x - mu) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] \
        + norm.bias[:, None, None]
    with torch.no_grad():
        fused, unfused = norm(x), norm.forward_unfused(x)
    assert torch.allclose(fused, ref, atol=1e-5)
    assert torch.allclose(unfused, ref, atol=1e-5)
    # The output keeps the layout, so the ops after it stay on vectorised kernels.
    assert fused.is_contiguous(memory_format=memory_format)


def test_block_film_on_the_cell_grid_equals_film_per_position():
    torch.manual_seed(0)
    block = CondNAFBlock(8, time_dim=6, quality_dim=5)
    with torch.no_grad():
        block.beta.normal_()
        block.gamma.normal_()
    x, temb, qgrid = torch.randn(2, 8, 11, 9), torch.randn(2, 6), torch.randn(2, 5, 3, 3)
    rows, cols = torch.tensor([0] * 4 + [1] * 4 + [2] * 3), torch.tensor([0] * 4 + [1] * 4 + [2])
    with torch.no_grad():
        out = block(x, temb, qgrid, rows, cols)
        # The straightforward form: spread the quality features, then project every position.
        qfeat = qgrid[:, :, rows][:, :, :, cols]
        film = block.quality_film(qfeat) + block.time_film(temb)[:, :, None, None]
        scale, shift = film.chunk(2, dim=1)
        y = block.norm1(x) * (1 + scale) + shift
        y = block.gate(block.conv2(block.conv1(y)))
        y = y * block.sca(y)
        ref = x + block.conv3(y) * block.beta
        ref = ref + block.conv5(block.gate(block.conv4(block.norm2(ref)))) * block.gamma
    assert torch.allclose(out, ref, atol=1e-5)


def test_region_attention_matches_naive_per_position():
    torch.manual_seed(0)
    attn = RegionCrossAttention(8, 6, heads=2)
    torch.nn.init.normal_(attn.proj_out.weight)
    b, factor, cell, h, w = 2, 4, 16, 11, 9
    gh, gw = math.ceil(h * factor / cell), math.ceil(w * factor / cell)
    x = torch.randn(b, 8, h, w)
    ge, gm = torch.randn(b, 3, 6), torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    le = torch.randn(b, gh * gw, 4, 6)
    lm = torch.rand(b, gh * gw, 4) > 0.3
    lm[..., 0] = True
    with torch.no_grad():
        out = attn(x, factor, cell, (gh, gw), ge, gm, le, lm)
        q_all = attn.to_q(attn.norm(x))
        ref = torch.zeros_like(x)
        for bi in range(b):
            for i in range(h):
                for j in range(w):
                    ci = (i * factor // cell) * gw + j * factor // cell
                    ctx = torch.cat([ge[bi] + attn.global_tag, le[bi, ci] + attn.local_tag])
                    mask = torch.cat([gm[bi], lm[bi, ci]])
                    k, v = attn.to_k(ctx).view(-1, 2, 4), attn.to_v(ctx).view(-1, 2, 4)
                    q = q_all[bi, :, i, j].view(2, 4)
                    heads = []
                    for hd in range(2):
                        logits = k[:, hd] @ q[hd] / 2.0
                        logits[~mask] = -float('inf')
                        heads.append(torch.softmax(logits, 0) @ v[:, hd])
                    ref[bi, :, i, j] = torch.cat(heads)
        ref = x + attn.proj_out(ref)
    assert torch.allclose(out, ref, atol=1e-5)


def test_attention_with_the_head_size_padded_is_unchanged():
    # The CUDA path pads head sizes to a multiple of 8 (fused kernels); same numbers on any device.
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 3, 16, 7), torch.randn(5, 3, 10, 7), torch.randn(5, 3, 10, 7)
    mask = torch.rand(5, 1, 1, 10) > 0.4
    mask[..., 0] = True
    plain = attend(q, k, v, mask)
    padded = attend(q, k, v, mask, pad_to=8)
    assert padded.shape == plain.shape
    assert torch.allclose(padded, plain, atol=1e-6)
    assert not torch.allclose(attend(q, k, v * 2, mask, pad_to=8), plain)


def test_region_attention_is_local_to_its_cell():
    torch.manual_seed(0)
    attn = RegionCrossAttention(8, 6, heads=1)
    x = torch.randn(1, 8, 8, 8)
    ge, gm = torch.randn(1, 2, 6), torch.ones(1, 2, dtype=torch.bool)
    le, lm = torch.randn(1, 4, 3, 6), torch.ones(1, 4, 3, dtype=torch.bool)
    le2 = le.clone()
    le2[0, 3] += 5.0  # change only the bottom-right cell's prompt
    with torch.no_grad():
        diff = (attn(x, 2, 8, (2, 2), ge, gm, le2, lm)
                - attn(x, 2, 8, (2, 2), ge, gm, le, lm)).abs().sum(1)[0]
    assert diff[4:, 4:].min() > 0
    assert diff[:4].max() == 0 and diff[:, :4].max() == 0
    with pytest.raises(ValueError, match='multiple'):
        attn(x, 3, 8, (2, 2), ge, gm, le, lm)
