"""Estimator registry: one explicit name -> builder table (no import-time scanning)."""
import importlib

# name -> (module, builder function). Modules import lazily so 'classical' never loads torch.
ESTIMATORS = {
    'learned': ('adaqual_ros.quality.learned', 'load_learned_estimator'),
    'classical': ('adaqual_ros.quality.classical', 'ClassicalQualityEstimator'),
    'deqa': ('adaqual_ros.quality.deqa', 'DeQAScoreEstimator'),
}


def build_estimator(name='learned', cell=64, device='cpu', path=None, **kwargs):
    """
    Build a quality estimator by name.

    Args:
        name (`str`, *optional*, defaults to 'learned'): one of ESTIMATORS.
        cell (`int`, *optional*, defaults to 64): cell size in pixels of the maps it returns.
        device (`str`, *optional*, defaults to 'cpu'): torch device for 'learned' and 'deqa'.
        path (`str`, *optional*): weights folder. 'learned' defaults to the shipped checkpoint;
            'deqa' requires it (a local DeQA-Score folder).
        **kwargs: passed to the backend.

    Returns:
        An object with ``.estimate(frame_rgb_uint8) -> QualityMap`` and ``.estimate_batch``.
    """
    if name not in ESTIMATORS:
        raise ValueError(f'unknown quality estimator {name!r}; valid names: {sorted(ESTIMATORS)}')
    module_name, attr = ESTIMATORS[name]
    builder = getattr(importlib.import_module(module_name), attr)
    if name == 'classical':
        if path:
            raise ValueError('the classical quality estimator takes no weights path')
        return builder(cell=cell, **kwargs)
    return builder(path=path, cell=cell, device=device, **kwargs)
