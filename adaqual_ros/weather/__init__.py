"""
Synthetic weather (numpy/OpenCV only): low light, haze, rain, snow and their CDD-11 combinations.

``synthesize(clean_rgb_uint8, condition, seed)`` returns a `WeatherSample` with the degraded
frame, per-type severity fields and a ground-truth regional quality grid in [1, 5].
"""
from adaqual_ros.weather.compose import (
    CONDITION_TYPES,
    CONDITIONS,
    WeatherSample,
    WeatherStream,
    synthesize,
)
from adaqual_ros.weather.layers import WeatherLayers, load_layers
from adaqual_ros.weather.quality_grid import QualityChain

__all__ = ['CONDITIONS', 'CONDITION_TYPES', 'QualityChain', 'WeatherLayers', 'WeatherSample',
           'WeatherStream', 'load_layers', 'synthesize']
