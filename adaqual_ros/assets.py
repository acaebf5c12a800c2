"""Locate the optional test/measurement assets (real data and a detector) via ADAQUAL_ASSETS."""
import os
from pathlib import Path

ASSETS_ENV = 'ADAQUAL_ASSETS'


def assets_root(explicit=None):
    """
    Return the assets folder, or None when none is configured.

    The product never guesses a path: it uses ``explicit`` (a CLI flag) or $ADAQUAL_ASSETS.
    """
    value = explicit or os.environ.get(ASSETS_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    return root if root.is_dir() else None


def asset_path(relative, explicit=None):
    """Return the path of one asset, or None when the assets or that file are missing."""
    root = assets_root(explicit)
    if root is None:
        return None
    path = root / relative
    return path if path.exists() else None
