"""
Device placement for the restorer: auto device, fp16 on CUDA, channels_last, torch.compile.

CPU and float32 are the defaults (as in diffusers); CUDA is used when present and asked for.
"""
from dataclasses import dataclass
import platform
import warnings

import cv2
import torch


@dataclass(frozen=True)
class DevicePlan:
    """
    Where and how the network runs.

    Args:
        device (`torch.device`): the resolved device.
        dtype (`torch.dtype`): float16 on CUDA when half was asked for, bfloat16 on a CPU that
            computes it natively when cpu_bf16 was, float32 otherwise.
        channels_last (`bool`): use the channels_last memory format (faster convolutions).
        compile (`bool`): wrap modules in torch.compile.
        compile_mode (`str`): torch.compile's mode (settings.COMPILE_MODES).
    """

    device: torch.device
    dtype: torch.dtype
    channels_last: bool
    compile: bool
    compile_mode: str = 'default'

    @property
    def is_cuda(self):
        return self.device.type == 'cuda'


def resolve_device(requested='auto'):
    """
    Turn a device setting into a torch.device.

    'auto' picks CUDA when available, else CPU. 'cuda' or 'cuda:N' without CUDA warns and falls
    back to CPU (a robot keeps running). Anything else raises ValueError.
    """
    name = str(requested or 'auto').strip().lower()
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name == 'mps':
        mps = getattr(torch.backends, 'mps', None)
        if mps is None or not mps.is_available():
            warnings.warn("device 'mps' requested but not available; falling back to CPU",
                          RuntimeWarning, stacklevel=2)
            return torch.device('cpu')
        return torch.device('mps')
    if name == 'cuda' or name.startswith('cuda:'):
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise ValueError(f'invalid device {requested!r}: {exc}') from exc
        if not torch.cuda.is_available():
            warnings.warn(f'device {requested!r} requested but CUDA is not available; '
                          'falling back to CPU', RuntimeWarning, stacklevel=2)
            return torch.device('cpu')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f'device {requested!r} does not exist: '
                             f'{torch.cuda.device_count()} CUDA device(s) present')
        return device
    raise ValueError(f"unknown device {requested!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def configure_threads(threads):
    """
    Set the CPU thread count of torch and OpenCV (0 leaves their defaults); returns torch's.

    Both pools are process-wide: the pre/post-processing (OpenCV) and the network (torch) then
    share the same budget instead of oversubscribing the cores.
    """
    threads = int(threads)
    if threads < 0:
        raise ValueError(f'threads must be >= 0, got {threads}')
    if threads > 0:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    return torch.get_num_threads()


def plan_device(device='auto', half=True, channels_last=True, compile=False,
                compile_mode='default', cpu_bf16=True):
    """Resolve the device and the precision/memory format for it (fp16 only on CUDA, bf16 only
    on a CPU with native bf16, where it is faster; emulated, it would be slower than float32)."""
    resolved = resolve_device(device)
    if resolved.type == 'cuda':
        dtype = torch.float16 if half else torch.float32
    else:
        dtype = torch.bfloat16 if cpu_bf16 and native_bf16_cpu() else torch.float32
    return DevicePlan(resolved, dtype, bool(channels_last), bool(compile), str(compile_mode))


def native_bf16_cpu():
    """
    Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16), as torch reports it on
    x86; None where torch cannot tell (other architectures).
    """
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return None
    # torch.cpu's probes are private; a torch without them cannot tell either.
    probes = [getattr(torch.cpu, name, None)
              for name in ('_is_amx_tile_supported', '_is_avx512_bf16_supported')]
    probes = [probe for probe in probes if probe is not None]
    return any(probe() for probe in probes) if probes else None


def compile_module(module, mode='default'):
    """
    Compile a torch module in place (nn.Module.compile), so whoever holds it keeps it.

    A backend that cannot compile warns and leaves the module eager. Returns True when compiled.
    """
    try:
        module.compile(mode=mode)
    except Exception as exc:  # noqa: BLE001 - any compiler failure leaves the eager module
        warnings.warn(f'torch.compile failed ({exc}); running eagerly', RuntimeWarning,
                      stacklevel=2)
        return False
    return True


def cudagraph_skips():
    """
    How many times torch.compile has run a graph without CUDA graphs in this process (it says why
    only under TORCH_LOGS=cudagraphs). 0 where the counter does not exist.
    """
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters['inductor'].get('cudagraph_skips', 0))


def to_device_tensor(batch, plan):
    """(B, H, W, 3) float32 numpy in [0, 1] -> (B, 3, H, W) tensor on the plan's device/dtype."""
    # Copied as it is, then permuted and converted on the device: a permuted view handed to the
    # device copy is first made contiguous on the host (a strided CPU pass over the frame).
    tensor = torch.from_numpy(batch).to(device=plan.device, non_blocking=plan.is_cuda)
    memory_format = torch.channels_last if plan.channels_last else torch.contiguous_format
    return tensor.permute(0, 3, 1, 2).to(dtype=plan.dtype, memory_format=memory_format)


def memory_reset(plan):
    if plan.is_cuda:
        torch.cuda.reset_peak_memory_stats(plan.device)


def peak_memory_bytes(plan):
    """Peak CUDA memory allocated since the last reset (0 on CPU)."""
    if plan.is_cuda:
        return int(torch.cuda.max_memory_allocated(plan.device))
    return 0


def synchronize(plan):
    """Wait for queued CUDA work so wall-clock timings are honest."""
    if plan.is_cuda:
        torch.cuda.synchronize(plan.device)


def release_cached_memory(device):
    """Return the CUDA allocator's cached blocks to the driver (after an out-of-memory)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.empty_cache()
