"""The AdaQual denoiser: blocks, the conditional UNet and its named configs."""
from adaqual_ros.models.configs import CONFIGS, TEXT_ENCODER_CONFIGS, build_model, get_config
from adaqual_ros.models.unet_adaqual import AdaQualUNet, AdaQualUNetOutput, quality_tensor

__all__ = ['build_model', 'CONFIGS', 'get_config', 'TEXT_ENCODER_CONFIGS', 'AdaQualUNet',
           'AdaQualUNetOutput', 'quality_tensor']
