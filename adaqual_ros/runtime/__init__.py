"""
The restorer runtime: quality-driven skipping, tiling, devices and backends behind `Restorer`.

    from adaqual_ros.runtime import Restorer, RestorerSettings
    result = Restorer(RestorerSettings()).restore(frame, stream_id='front', color_order='bgr')
"""
from adaqual_ros.runtime.backends import BACKENDS as BACKEND_CLASSES
from adaqual_ros.runtime.backends import build_backend
from adaqual_ros.runtime.classical import classical_restore
from adaqual_ros.runtime.restorer import (
    InvalidFrameError,
    RestorationError,
    Restorer,
    RestoreResult,
)
from adaqual_ros.runtime.settings import BACKENDS, CacheSettings, RestorerSettings

__all__ = ['BACKEND_CLASSES', 'BACKENDS', 'build_backend', 'CacheSettings', 'classical_restore',
           'InvalidFrameError', 'RestorationError', 'Restorer', 'RestoreResult',
           'RestorerSettings']
