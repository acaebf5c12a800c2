"""
Regional quality estimation: estimators behind one registry, and the per-stream cache.

    from adaqual_ros.quality import build_estimator, QualityCache
    estimator = build_estimator('learned')          # or 'classical', or 'deqa' with path=...
    qmap = estimator.estimate(frame_rgb_uint8)      # QualityMap
"""
from adaqual_ros.quality.cache import CacheDecision, QualityCache, scene_signature
from adaqual_ros.quality.registry import ESTIMATORS, build_estimator
from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap, grid_shape, severity

__all__ = ['build_estimator', 'CacheDecision', 'DEGRADATION_TYPES', 'ESTIMATORS', 'grid_shape',
           'QualityCache', 'QualityMap', 'scene_signature', 'severity']
