"""Restorer settings: the one place the runtime's knobs are named (the ROS params map onto it)."""
from dataclasses import dataclass, field, replace

BACKENDS = ('adaqual', 'classical', 'passthrough')
QUALITY_BACKENDS = ('learned', 'classical', 'deqa')
DEVICES = ('auto', 'cpu', 'cuda')
ON_ERROR = ('passthrough', 'drop')
# torch.compile modes; 'reduce-overhead' adds CUDA graphs (one replay per network call: no
# per-kernel launch cost, the bound of a whole-frame window on a GPU).
COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune-no-cudagraphs')


@dataclass(frozen=True)
class CacheSettings:
    """Quality-map reuse across nearby frames of one stream."""

    enabled: bool = True
    max_frames: int = 15          # recompute after this many frames
    max_age_s: float = 1.0        # ... or after this long
    scene_threshold: float = 0.08  # ... or when the thumbnail signature moves this far


MAX_SKIP_MARGIN = 8  # cells: beyond this nothing but a fully clean frame would be skipped
# skip_threshold's range: every cell scores at least 1; above 5 nothing is ever skipped.
MIN_SKIP_THRESHOLD, MAX_SKIP_THRESHOLD = 1.0, 5.01
# A stream whose last frame was restored whole stays whole down to whole_frame_share minus this:
# a share hovering at the threshold would otherwise switch a video between whole frames and
# patchwork (people.mp4 haze_rain 0.2 at 640 px, 120 consecutive frames: with the quality cache
# 3 switches, 1 with this band; estimating every frame 37, 5 with it).
WHOLE_FRAME_HYSTERESIS = 0.1
MAX_RESIDUAL_GUIDE = 64  # px: beyond a quality cell's size the filter only blurs the residual
MAX_QUALITY_CONTEXT = 4096  # px: beyond any frame's side (at the estimation scale) it is off

# The settings a caller may change frame by frame (`Restorer.restore(overrides=...)`, e.g. per
# camera of one node): which cells of a frame are restored. Everything else is the runtime's.
STREAM_SETTINGS = ('skip_threshold', 'skip_margin', 'whole_frame_share')

AUTO_TILE = -1
# Measured with `adaqual bench`: on the 2-core CPU 256 px tiles beat 128 px tiles on half-clean
# frames (tiles confine the work to the degraded part). On a GPU the whole frame is the network's
# one window whenever any cell is degraded: there the first call of a window shape costs
# 0.8-1.1 s (cuDNN's per-shape set-up; an H200, docs/RESULTS.md, "GPU: window shapes"), a
# repeated one 31-37 ms whatever its size (the small model is launch-bound), and the windows of
# partly clean frames change shape from frame to frame.
CPU_TILE = 256


def _is_cuda(device):
    return getattr(device, 'type', str(device)).startswith('cuda')


def tile_size_for(tile_size, device):
    """The tile edge to plan with: ``tile_size`` itself unless it is AUTO_TILE (-1), which
    means one window (0) on CUDA (`whole_frames_for`: the whole frame) and CPU_TILE elsewhere."""
    if int(tile_size) != AUTO_TILE:
        return int(tile_size)
    return 0 if _is_cuda(device) else CPU_TILE


def whole_frames_for(tile_size, device):
    """Whether a frame with any degraded cell runs as one whole-frame window (one input shape
    per camera): AUTO_TILE on CUDA. Clean cells still pass through bit-identical (skip blend)."""
    return int(tile_size) == AUTO_TILE and _is_cuda(device)


@dataclass(frozen=True)
class RestorerSettings:
    """
    Everything the restorer runtime can be told.

    Args:
        backend (`str`): one of BACKENDS.
        model_path (`str`, *optional*): pipeline folder (save_pretrained); None = shipped one.
        device (`str`): 'auto' (CUDA when present), 'cpu' or 'cuda' / 'cuda:N'.
        half (`bool`): fp16 on CUDA (ignored on CPU).
        cpu_bf16 (`bool`): bfloat16 on a CPU that computes it natively (AMX or AVX512-BF16):
            on this project's CPU whole frames 1.15-1.44x faster at 640x480 and 1.8-2.2x at
            1920x1080 (the windows of partly clean frames about as fast as in float32), outputs
            within about 1/255 of float32 (docs/RESULTS.md, Speed). Other CPUs (which would
            emulate it, slower) run float32 either way.
        steps (`int`): DDIM sampling steps.
        skip_threshold (`float`): regions with quality >= this pass through untouched.
        skip_margin (`int`): quality cells around every degraded cell that are restored too, so
            only cells with a clean neighbourhood pass through (0 = each cell on its own score).
        whole_frame_share (`float`): when at least this share of a frame's cells scores below
            skip_threshold, every cell of the frame is restored (fog covers frames, stray
            degraded reads on a clean frame do not); 1.0 = off. 0.7 keeps a half-clean frame
            adaptive (the estimator reads 40-57 % of its cells as degraded). After a frame
            restored whole, a stream stays whole down to this minus WHOLE_FRAME_HYSTERESIS.
        tile_size (`int`): tile edge in pixels (rounded up to the quality cell); 0 = one window
            over every degraded cell of the frame; -1 (AUTO_TILE) = the whole frame on CUDA
            whenever any cell is degraded (`whole_frames_for`), CPU_TILE px tiles elsewhere.
        quality_backend (`str`): one of QUALITY_BACKENDS.
        quality_model_path (`str`, *optional*): weights of the estimator ('learned' or 'deqa');
            empty with 'learned' = for the adaqual backend the estimator trained with the model
            (its ``estimator/`` folder, `paired_estimator_path`) where it has one, else (and for
            every other backend) the shipped one.
        quality_context (`int`): learned estimator: side in pixels (at its estimation scale) of
            the neighbourhood each cell is also read in when deciding which cells of a frame
            not restored whole pass through (the higher of that read and the whole frame's is
            kept, so a large hazy region no longer pulls a clean one down); the whole-frame
            read still conditions the model and decides whole frames. 0 = the whole frame's
            read only. Frames no larger than it in both sides are unaffected. On the bench's
            half-clean 1280x720 / 1920x1080 frames the network runs on 68 % / 72 % of the frame
            instead of 77 % / 78 % (docs/RESULTS.md, Speed).
        cache (`CacheSettings`): quality-map cache settings.
        threads (`int`): CPU threads for torch (0 = leave torch's default).
        compile (`bool`): wrap the model in torch.compile.
        compile_mode (`str`): one of COMPILE_MODES (torch.compile's mode); read when compile is on.
        on_error (`str`): 'passthrough' publishes the input, 'drop' publishes nothing.
        fallback_to_classical (`bool`): use the classical backend when the model cannot load.
        seed (`int`): base seed of each stream's start noise.
        tile_overlap (`int`): pixels two touching tiles share for a seamless blend (rounded up to
            a multiple of the quality cell).
        tile_batch (`int`): most tiles per network call.
        window_bucket (`int`): grow each window (not its core) to a multiple of this many pixels
            or to the frame's edge, so window shapes repeat from frame to frame: on a GPU a
            shape not run before costs about 1 s (docs/RESULTS.md, "GPU: window shapes"); for an
            explicit tile_size on a GPU (auto runs whole frames there). 0 = off (the default; it
            did not pay on an H200, and on a CPU it only adds pixels).
        merge_tiles (`bool`): join touching degraded tiles into larger windows (fewer seams and
            no overlap work; a fully degraded frame runs as one window).
        blend_ramp (`int`): pixels over which restored regions fade into skipped ones.
        channels_last (`bool`): channels_last memory format for the network.
        cudnn_benchmark (`bool`): on CUDA, let cuDNN time its convolution algorithms once per
            input shape and keep the fastest (torch.backends.cudnn.benchmark, a process-wide
            switch); whole-frame windows, CUDA's default, give one shape per camera. Off by
            default: on an H200 it gained nothing with CUDA graphs and cost eager frames 20 %
            (docs/RESULTS.md, GPU).
        residual_guide (`int`): radius in pixels of a guided filter of the model's predicted
            residual by the degraded frame (0 = off): keeps the residual that follows the frame's
            own structure and averages away texture the model invents in flat fog. 16 px (a
            quarter of a quality cell) won on both checkpoint-selection sets (docs/RESULTS.md,
            Residual guide).
        fog_contrast (`bool`): classical backend, on a fog frame (restored whole with haze as its
            main damage): equalise local contrast after dehazing (CLAHE on lightness). mAP50 rises
            on three fog sets (+0.02 to +0.06: more low-confidence detections), but precision and
            recall at confidence 0.25 do not (level on DAWN, lower on synthetic haze), and
            fidelity to the scene drops (-0.4 dB on the held-out synthetic set): off by default
            (docs/RESULTS.md, Classical backend on fog).
    """

    backend: str = 'adaqual'
    model_path: str = ''
    device: str = 'auto'
    half: bool = True
    cpu_bf16: bool = True
    steps: int = 2
    skip_threshold: float = 4.0
    skip_margin: int = 0
    whole_frame_share: float = 0.7
    tile_size: int = AUTO_TILE
    quality_backend: str = 'learned'
    quality_model_path: str = ''
    quality_context: int = 544
    cache: CacheSettings = field(default_factory=CacheSettings)
    threads: int = 0
    compile: bool = False
    compile_mode: str = 'default'
    on_error: str = 'passthrough'
    fallback_to_classical: bool = True
    seed: int = 0
    tile_overlap: int = 64
    tile_batch: int = 4
    window_bucket: int = 0
    merge_tiles: bool = True
    blend_ramp: int = 16
    channels_last: bool = True
    cudnn_benchmark: bool = False
    residual_guide: int = 16
    fog_contrast: bool = False

    def with_changes(self, **changes):
        return replace(self, **changes)
