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


@pytest.fixture
def bag_messages():
    """A reader of every message of an MCAP bag, as stored: {topic: [(log_time, bytes)]}."""
    from mcap.reader import make_reader

    def read(path):
        out = {}
        with open(path, 'rb') as f:
            for _, channel, message in make_reader(f).iter_messages(log_time_order=True):
                out.setdefault(channel.topic, []).append((message.log_time, bytes(message.data)))
        return out

    return read
