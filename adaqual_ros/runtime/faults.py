"""
Out-of-memory recognition, and a test hook that makes the network run out of memory on demand.

A real GPU out-of-memory needs a GPU at its limit. To test the restorer's recovery (smaller tiles,
then the CPU) on any machine, set in the environment of the process under test (a node too):

    ADAQUAL_TEST_FAULT_OOM=<max_pixels>[@<device type>]

Every network call of more than ``max_pixels`` pixels (batch x height x width) then raises
`torch.OutOfMemoryError` before it runs, on any device or only on the named device type
('cuda', 'cpu'). Unset or empty, nothing is checked. The hook is read when a backend is built.
"""
from dataclasses import dataclass
import os

import torch

FAULT_OOM_ENV = 'ADAQUAL_TEST_FAULT_OOM'


def is_out_of_memory(exc):
    """Whether ``exc`` is an allocator failure (torch.OutOfMemoryError, CUDA or other)."""
    # torch.cuda.OutOfMemoryError subclasses torch.OutOfMemoryError; older kernels and other
    # backends raise a plain RuntimeError whose message says so.
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and 'out of memory' in str(exc).lower())


@dataclass(frozen=True)
class OomFault:
    """
    The injected fault: calls bigger than ``max_pixels`` on ``device_type`` run out of memory.

    Args:
        max_pixels (`int`): largest batch x height x width that still fits.
        device_type (`str`, *optional*): 'cuda', 'cpu', ...; None = every device.
    """

    max_pixels: int
    device_type: str = None

    @classmethod
    def from_env(cls, environ=None):
        """The fault the environment asks for, or None; ValueError naming a malformed value."""
        text = (os.environ if environ is None else environ).get(FAULT_OOM_ENV, '').strip()
        if not text:
            return None
        pixels, _, device_type = text.partition('@')
        try:
            max_pixels = int(pixels)
        except ValueError:
            max_pixels = -1
        if max_pixels < 0:
            raise ValueError(f'{FAULT_OOM_ENV}={text!r}: expected <max_pixels>[@<device type>] '
                             'with max_pixels a non-negative integer')
        return cls(max_pixels, device_type.strip() or None)

    def check(self, shape, device):
        """Raise torch.OutOfMemoryError when a batch of ``shape`` (B, H, W, ...) does not fit."""
        if self.device_type is not None and torch.device(device).type != self.device_type:
            return
        pixels = int(shape[0]) * int(shape[1]) * int(shape[2])
        if pixels > self.max_pixels:
            raise torch.OutOfMemoryError(
                f'injected by {FAULT_OOM_ENV}: out of memory for a batch of {pixels} pixels on '
                f'{device} (limit {self.max_pixels})')
