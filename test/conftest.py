"""Shared fixtures: the assets folder (real data) found through ADAQUAL_ASSETS."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_DEFAULT_ASSETS = REPO.parent / 'shared'


def _assets_dir():
    value = os.environ.get('ADAQUAL_ASSETS')
    if value:
        return Path(value)
    return _DEFAULT_ASSETS if _DEFAULT_ASSETS.is_dir() else None


@pytest.fixture(scope='session')
def assets():
    """The assets root; tests that need real data skip with a reason when it is absent."""
    root = _assets_dir()
    if root is None or not root.is_dir():
        pytest.skip('assets not found: set ADAQUAL_ASSETS to the shared assets folder')
    return root


@pytest.fixture(scope='session')
def asset(assets):
    """Return a function giving the path of one asset, skipping when that file is missing."""
    def _get(relative):
        path = assets / relative
        if not path.exists():
            pytest.skip(f'asset {relative} not found under {assets}')
        return path
    return _get
