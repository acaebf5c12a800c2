"""
Restoration backends behind one interface, chosen by name: 'adaqual', 'classical', 'passthrough'.

A backend restores the windows of a float32 RGB frame in [0, 1] that the runtime planned (see
`tiling.plan_windows`) and returns the frame with those windows restored; the runtime then blends
restored and original pixels and converts back to the caller's format.
"""
from dataclasses import dataclass, field
import threading
import time
import warnings

import numpy as np
import torch

from adaqual_ros.runtime import classical
from adaqual_ros.runtime.device import (
    compile_module,
    cudagraph_skips,
    plan_device,
    synchronize,
    to_device_tensor,
)
from adaqual_ros.runtime.faults import OomFault, is_out_of_memory
from adaqual_ros.runtime.tiling import run_windows


@dataclass
class BackendOutput:
    """
    What a backend returns for one frame.

    Args:
        image (`np.ndarray` float32, (H, W, 3)): restored inside the windows, input elsewhere.
        prompts (*optional*): the prompts the model was given (None for prompt-free backends).
        timings (`dict[str, float]`): milliseconds per stage the backend measured itself.
        windows_run (`int`): windows that went through the restorer.
        pixels_run (`int`, *optional*): pixels the backend ran on, where that is not the
            windows' area (the classical backend runs on their bounding box).
    """

    image: np.ndarray
    prompts: object = None
    timings: dict = field(default_factory=dict)
    windows_run: int = 0
    pixels_run: int = None


def _ms(start):
    return (time.perf_counter() - start) * 1000.0


class NonFiniteOutputError(RuntimeError):
    """The network returned NaN or Inf: the frame is not published as restored."""


class StreamState:
    """
    Per-stream state of the network backend: one seeded torch.Generator and the start noise.

    The generator (seeded from the base seed and the stream id) draws a start-noise field the size
    of the frame once; every window of every frame takes its crop of that field. The start noise
    of a pixel therefore depends only on the stream, never on the frame number or the tiling, so
    outputs do not flicker on video and tiled equals untiled up to the network's border effects.
    """

    def __init__(self, stream_id, seed, device):
        self.stream_id = stream_id
        self.seed = int(seed)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self._noise = None
        self._lock = threading.Lock()
        # Whether the stream's current frame is restored whole (every cell): the Restorer's
        # `whole_frame_share` rule, whose hysteresis reads it back; the classical backend too.
        self.whole_frame = False

    def noise(self, height, width, dtype):
        """The stream's fixed (1, 3, H, W) start noise (drawn again only when the size changes)."""
        with self._lock:
            noise = self._noise
            if noise is None or noise.shape[-2:] != (height, width) or noise.dtype != dtype:
                self.generator.manual_seed(self.seed)
                noise = torch.randn((1, 3, height, width), generator=self.generator,
                                    device=self.device, dtype=torch.float32).to(dtype)
                self._noise = noise
            return noise


class RestorationBackend:
    """
    Interface of the restoration backends.

    Attributes:
        name (`str`): registry name.
        uses_network (`bool`): whether `restore` runs a neural network.
        device (`torch.device`): where it runs.
        precision (`str`): the network's number format; 'float32' for the backends without one
            (their numpy work is float32 or integer).
    """

    name = 'base'
    uses_network = False
    device = torch.device('cpu')
    precision = 'float32'
    # True: a frame with any degraded cell runs as one whole-frame window, so the network sees
    # one input shape per camera (a compiled network recompiles for every new window shape).
    whole_frames = False

    def restore(self, rgb, quality_map, windows, stream, settings):
        """
        Restore the windows of one frame.

        Args:
            rgb (`np.ndarray` float32, (H, W, 3)): RGB frame in [0, 1].
            quality_map (`QualityMap`): its regional quality.
            windows (`list[Window]`): cell-aligned windows covering every degraded cell.
            stream (`StreamState`): the stream's generator and fixed noise.
            settings (`RestorerSettings`): the settings of this frame.

        Returns:
            `BackendOutput`.
        """
        raise NotImplementedError

    def frame_prompts(self, quality_map):
        """Readable prompts of a whole frame (None for backends without prompts)."""
        return None

    def on_cpu(self, settings):
        """
        The same backend on the CPU in float32, after its device ran out of memory.

        Returns None when there is nothing to move (backends without a network).
        """
        return None

    def close(self):
        """Release what the backend holds (models, GPU memory)."""


class PassthroughBackend(RestorationBackend):
    """Returns the frame untouched (the runtime still reports the quality map)."""

    name = 'passthrough'

    def restore(self, rgb, quality_map, windows, stream, settings):
        return BackendOutput(rgb)


class ClassicalBackend(RestorationBackend):
    """
    Dark-channel-prior dehazing, CLAHE/gamma and light deraining (no weights).

    Runs once on the bounding box of the windows (dehazing needs the global atmospheric light),
    weighted per region by the quality map; a frame restored whole whose main damage is haze is
    dehazed at full strength, then contrast-equalised with ``fog_contrast`` (classical.py says
    why).
    """

    name = 'classical'

    def restore(self, rgb, quality_map, windows, stream, settings):
        if not windows:
            return BackendOutput(rgb)
        y0 = min(w.y0 for w in windows)
        x0 = min(w.x0 for w in windows)
        y1 = max(w.y0 + w.h for w in windows)
        x1 = max(w.x0 + w.w for w in windows)
        out = rgb.copy()
        start = time.perf_counter()
        out[y0:y1, x0:x1] = classical.restore_float(
            rgb[y0:y1, x0:x1], quality_map.crop(y0, x0, y1 - y0, x1 - x0), stream.whole_frame,
            settings.fog_contrast)
        return BackendOutput(out, timings={'model': (time.perf_counter() - start) * 1000.0},
                             windows_run=1, pixels_run=(y1 - y0) * (x1 - x0))


class AdaQualBackend(RestorationBackend):
    """
    The AdaQual-Diff pipeline on the degraded windows, batched.

    Args:
        settings (`RestorerSettings`): model_path ('' = the shipped checkpoint), device, half,
            channels_last, compile and steps are read.
        pipeline (`AdaQualPipeline`, *optional*): an already built pipeline (tests, benchmarks);
            it is moved to the settings' device.
    """

    name = 'adaqual'
    uses_network = True

    def __init__(self, settings, pipeline=None):
        from adaqual_ros import pipelines

        self.plan = plan_device(settings.device, settings.half, settings.channels_last,
                                settings.compile, settings.compile_mode, settings.cpu_bf16)
        self.device = self.plan.device
        self.precision = str(self.plan.dtype).removeprefix('torch.')
        if pipeline is None:
            path = settings.model_path or pipelines.default_pipeline_path()
            pipeline = pipelines.AdaQualPipeline.from_pretrained(str(path))
        self.pipeline = pipeline.to(self.device)
        # The precision per module: diffusers' own cast warns about modules to keep in float32
        # even when a model has none (AdaQualUNet has none).
        for module in (self.pipeline.unet, self.pipeline.text_encoder):
            if module.dtype != self.plan.dtype:
                torch.nn.Module.to(module, dtype=self.plan.dtype)
        # In place (nn.Module.compile / .to): the pipeline keeps its registered components.
        unet = self.pipeline.unet
        if self.plan.is_cuda:
            # Timing algorithms per shape is opt-in: on an H200 it did not beat the heuristic
            # choice for the paper config (docs/RESULTS.md, GPU).
            torch.backends.cudnn.benchmark = bool(settings.cudnn_benchmark)
        if self.plan.channels_last:
            unet.to(memory_format=torch.channels_last)
        unet.eval()
        # An encoder left in training mode (a freshly built pipeline) would bypass the prompt
        # cache and re-encode every prompt, with autograd, on every frame.
        self.pipeline.text_encoder.eval()
        self._compiled_once = False
        # True while the network is compiled (False when compiling was refused or failed).
        self.compiled = bool(self.plan.compile) and compile_module(unet, self.plan.compile_mode)
        # Compiled graphs torch.compile built without CUDA graphs (when its mode asks for them).
        self.cudagraph_skips = 0
        self.cell = int(self.pipeline.config.cell)
        # The pipeline's scheduler holds per-call state: one frame at a time per backend.
        self._lock = threading.Lock()
        # Prompt sets of the current quality map, by window: a cached map (same object) reuses
        # its prompts, whose embeddings the pipeline's encoder caches by text.
        self._prompt_map = None
        self._prompt_sets = {}
        self._prompt_lock = threading.Lock()
        self._fault = OomFault.from_env()  # test hook, None unless ADAQUAL_TEST_FAULT_OOM is set

    def _prompts_for(self, quality_map, rect=None):
        if rect == (0, 0) + tuple(quality_map.image_size):
            rect = None  # the whole frame: same prompts as frame_prompts
        with self._prompt_lock:
            if self._prompt_map is not quality_map:
                self._prompt_map, self._prompt_sets = quality_map, {}
            prompts = self._prompt_sets.get(rect)
            if prompts is None:
                qmap = quality_map if rect is None else quality_map.crop(*rect)
                prompts = self._prompt_sets[rect] = self.pipeline.prompter.build(qmap)
            return prompts

    def restore(self, rgb, quality_map, windows, stream, settings):
        if not windows:
            return BackendOutput(rgb)
        if quality_map.cell != self.cell:
            raise ValueError(f'quality map cell {quality_map.cell} does not match the model '
                             f'cell {self.cell}')
        timings = {'prompts': 0.0, 'model': 0.0}
        all_prompts = []
        # A crop of the stream's fixed noise field: a window's start noise does not depend on
        # the tiling or on earlier frames (no flicker; tiled == untiled up to border effects).
        noise = stream.noise(rgb.shape[0], rgb.shape[1], self.plan.dtype)
        pipe = self.pipeline

        def run(chunk, batch):
            start = time.perf_counter()
            qmaps = [quality_map.crop(w.y0, w.x0, w.h, w.w) for w in chunk]
            prompts = [self._prompts_for(quality_map, (w.y0, w.x0, w.h, w.w)) for w in chunk]
            embeds = pipe.encode_prompts(prompts) if pipe.unet.config.use_prompts else None
            timings['prompts'] += _ms(start)
            start = time.perf_counter()
            latents = torch.cat([noise[:, :, w.y0:w.y0 + w.h, w.x0:w.x0 + w.w] for w in chunk])
            if self._fault is not None:
                self._fault.check(batch.shape, self.device)
            with torch.inference_mode():
                image = to_device_tensor(np.ascontiguousarray(batch), self.plan)

                def call():
                    return pipe(image, quality_maps=qmaps, prompts=prompts, latents=latents,
                                prompt_embeds=embeds, generator=stream.generator,
                                num_inference_steps=int(settings.steps), return_dict=True,
                                residual_guide=int(settings.residual_guide))

                count = self.compiled and self.plan.compile_mode == 'reduce-overhead'
                skips = cudagraph_skips() if count else 0
                try:
                    output = call()
                except Exception as exc:  # noqa: BLE001 - only a failed compilation is retried
                    if not self._compile_failed(exc):
                        raise
                    output = call()
                if count:
                    self._count_cudagraph_skips(cudagraph_skips() - skips)
                images = output.images
                # Counted where the frame is (no host pass over it); the count's sync is the
                # download's anyway.
                bad = int(images.numel() - torch.isfinite(images).sum())
                restored = images.float().permute(0, 2, 3, 1).contiguous().cpu().numpy()
            if bad:
                # NaN would turn into black pixels on the way to uint8: a silently wrong frame.
                raise NonFiniteOutputError(
                    f'the network produced {bad} NaN/Inf value(s) on a {batch.shape[2]}x'
                    f'{batch.shape[1]} window (fp16 overflow: try half:=false; or broken '
                    f'weights in the model)')
            synchronize(self.plan)
            self._compiled_once = True
            timings['model'] += _ms(start)
            all_prompts.extend(prompts)
            return restored

        with self._lock:
            image = run_windows(rgb, windows, run, batch_size=max(1, int(settings.tile_batch)))
        return BackendOutput(image, prompts=all_prompts, timings=timings,
                             windows_run=len(windows))

    def _count_cudagraph_skips(self, new):
        if not new:
            return
        if not self.cudagraph_skips and self.plan.is_cuda:
            warnings.warn(f'compile_mode reduce-overhead: torch.compile ran the network without '
                          f'CUDA graphs ({new} graph(s) skipped); TORCH_LOGS=cudagraphs says why',
                          RuntimeWarning, stacklevel=4)
        self.cudagraph_skips += new

    def _compile_failed(self, exc):
        """
        torch.compile compiles at the first call, so a missing compiler shows up there: warn
        once, run eagerly from then on, and let the caller retry. False for any other error.
        """
        if not self.compiled or self._compiled_once or is_out_of_memory(exc):
            return False
        warnings.warn(f'torch.compile failed at the first call ({type(exc).__name__}: {exc}); '
                      'running eagerly', RuntimeWarning, stacklevel=3)
        self.pipeline.unet._compiled_call_impl = None  # what nn.Module.compile set
        self.compiled = False
        return True

    @property
    def whole_frames(self):
        # a compiled network recompiles for every new window shape: one shape per camera
        return self.compiled

    def frame_prompts(self, quality_map):
        return self._prompts_for(quality_map)

    def on_cpu(self, settings):
        # The pipeline moves in place (no second copy of the weights while memory is short);
        # the lock lets a call in flight on the device finish first. This backend is spent.
        with self._lock:
            pipeline, self.pipeline = self.pipeline, None
            backend = AdaQualBackend(settings.with_changes(device='cpu', half=False,
                                                           compile=False), pipeline=pipeline)
            # Cached prompt embeddings live on the old device, in its precision.
            pipeline.prompt_encoder.clear_cache()
            return backend

    def close(self):
        self.pipeline = None
        if self.plan.is_cuda:
            torch.cuda.empty_cache()


BACKENDS = {
    'adaqual': AdaQualBackend,
    'classical': ClassicalBackend,
    'passthrough': PassthroughBackend,
}


def build_backend(name, settings=None, **kwargs):
    """
    Build a restoration backend by name.

    Args:
        name (`str`): one of 'adaqual', 'classical', 'passthrough'.
        settings (`RestorerSettings`, *optional*): defaults to RestorerSettings().
        **kwargs: passed to the backend (e.g. ``pipeline=`` for 'adaqual').

    Returns:
        `RestorationBackend`.
    """
    if name not in BACKENDS:
        raise ValueError(f'unknown restoration backend {name!r}; valid names: {sorted(BACKENDS)}')
    if name == 'adaqual':
        if settings is None:
            from adaqual_ros.runtime.settings import RestorerSettings

            settings = RestorerSettings()
        return AdaQualBackend(settings, **kwargs)
    if kwargs:
        raise ValueError(f'backend {name!r} takes no options, got {sorted(kwargs)}')
    return BACKENDS[name]()
