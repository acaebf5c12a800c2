"""Named AdaQualUNet configurations (constructor kwargs)."""
import copy

CONFIGS = {
    # The paper's size: 61.12M parameters (full resolution, wide, deep); this one counts 61.06M.
    'paper': {
        'width': 42, 'enc_blocks': (2, 2, 4, 8), 'middle_blocks': 12,
        'dec_blocks': (2, 2, 2, 2), 'unshuffle': 1, 'time_dim': 256, 'quality_dim': 64,
        'use_prompts': True, 'context_dim': 512, 'attn_heads': 6, 'attn_dec_levels': (0, 1, 2)},
    # The paper's size laid out for real time on a GPU: 60.93M parameters (within 1% of 61.12M)
    # at half resolution (pixel-unshuffle 2, as the shipped small model), widths and attention
    # head sizes that divide by 8 (fp16 tensor-core kernels), fewer full-resolution blocks.
    # 0.28x the paper config's FLOPs at 1280x720 (docs/RESULTS.md, GPU: a real-time layout).
    'paper_rt': {
        'width': 48, 'enc_blocks': (1, 2, 2, 4), 'middle_blocks': 10,
        'dec_blocks': (1, 1, 1, 1), 'unshuffle': 2, 'time_dim': 256, 'quality_dim': 64,
        'use_prompts': True, 'context_dim': 512, 'attn_heads': 6, 'attn_dec_levels': (0, 1, 2)},
    # CPU: half resolution (pixel-unshuffle 2), 0.62M parameters, ~90-200 ms per 640x480
    # forward on the 2-core development machine.
    'small': {
        'width': 16, 'enc_blocks': (1, 2, 2), 'middle_blocks': 2, 'dec_blocks': (1, 1, 1),
        'unshuffle': 2, 'time_dim': 64, 'quality_dim': 16, 'use_prompts': True,
        'context_dim': 64, 'attn_heads': 2, 'attn_dec_levels': (0,)},
    # CPU, faster and wider: quarter resolution (pixel-unshuffle 4), 2.2M parameters, ~45 ms per
    # 640x480 forward on the 2-core development machine (small: ~125 ms).
    'fast': {
        'width': 32, 'enc_blocks': (1, 2, 2), 'middle_blocks': 2, 'dec_blocks': (1, 1, 1),
        'unshuffle': 4, 'time_dim': 64, 'quality_dim': 16, 'use_prompts': True,
        'context_dim': 64, 'attn_heads': 2, 'attn_dec_levels': (0,)},
    # Unit tests.
    'tiny': {
        'width': 8, 'enc_blocks': (1, 1), 'middle_blocks': 1, 'dec_blocks': (1, 1),
        'unshuffle': 2, 'time_dim': 16, 'quality_dim': 8, 'use_prompts': True,
        'context_dim': 16, 'attn_heads': 1, 'attn_dec_levels': (0,)},
}

# Text encoders that go with each config (kwargs of prompting.text_encoder.build_text_encoder).
TEXT_ENCODER_CONFIGS = {
    'paper': {'hidden_size': 512, 'num_layers': 4, 'num_heads': 8, 'intermediate_size': 2048},
    'paper_rt': {'hidden_size': 512, 'num_layers': 4, 'num_heads': 8, 'intermediate_size': 2048},
    'small': {'hidden_size': 64, 'num_layers': 2, 'num_heads': 2, 'intermediate_size': 128},
    'fast': {'hidden_size': 64, 'num_layers': 2, 'num_heads': 2, 'intermediate_size': 128},
    'tiny': {'hidden_size': 16, 'num_layers': 1, 'num_heads': 1, 'intermediate_size': 32},
}


def get_config(name, **overrides):
    """Return a copy of a named config with overrides applied."""
    if name not in CONFIGS:
        raise ValueError(f'unknown model config {name!r}; valid: {sorted(CONFIGS)}')
    cfg = copy.deepcopy(CONFIGS[name])
    cfg.update(overrides)
    return cfg


def build_model(name, **overrides):
    """Build an AdaQualUNet from a named config."""
    from adaqual_ros.models.unet_adaqual import AdaQualUNet

    return AdaQualUNet(**get_config(name, **overrides))
