"""Fixtures shared by the unit tests."""
import pytest
import torch


@pytest.fixture(scope='module')
def one_torch_thread():
    """Run a module's tests on one torch thread (CI has 2 cores; timings stay comparable)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
