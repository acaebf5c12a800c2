"""The AdaQual-Diff pipeline (estimator + prompter + text encoder + denoiser + DDIM)."""
from adaqual_ros.pipelines.pipeline_adaqual import (
    AdaQualOutput,
    AdaQualPipeline,
    build_scheduler,
    default_pipeline_path,
    estimator_weights,
    neutral_quality_map,
    paired_estimator_path,
)

__all__ = ['AdaQualOutput', 'AdaQualPipeline', 'build_scheduler', 'default_pipeline_path',
           'estimator_weights', 'neutral_quality_map', 'paired_estimator_path']
