"""AdaQualPipeline: quality map -> prompts -> embeddings -> 2-step residual DDIM -> restored."""
from dataclasses import dataclass
import json
from pathlib import Path

from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
import numpy as np
import torch

from adaqual_ros.models.configs import TEXT_ENCODER_CONFIGS, get_config
from adaqual_ros.models.unet_adaqual import AdaQualUNet, quality_tensor
from adaqual_ros.pipelines.residual_guide import filter_residual
from adaqual_ros.prompting.complexity import C_MAX, C_MIN
from adaqual_ros.prompting.prompter import Prompter
from adaqual_ros.prompting.text_encoder import (
    PromptEncoder,
    build_text_encoder,
    build_tokenizer,
)
from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / 'checkpoints' / 'adaqual_small'


def default_pipeline_path():
    """Folder of the shipped CPU checkpoint (save_pretrained layout)."""
    return CHECKPOINT_DIR


def paired_estimator_path(pipeline_path=None):
    """
    The learned estimator trained together with this pipeline (`adaqual train
    joint_estimator=true` saves it in the pipeline's ``estimator/`` folder), or None.

    A restorer follows the estimator it was trained with, so where a pipeline has one, the
    runtime and eval-restore read frames with it unless told another estimator's weights.
    """
    folder = Path(pipeline_path or default_pipeline_path()) / 'estimator'
    return folder if (folder / 'config.json').is_file() else None


def estimator_weights(quality_backend, quality_model_path='', pipeline_path=None, paired=True):
    """
    The weights folder a restorer built from ``pipeline_path`` reads frames with: the one it is
    told, else for the learned estimator the pipeline's own (`paired_estimator_path`), else None
    (the estimator's default weights). ``paired`` False (a backend other than the model, such as
    the classical one, which was not trained with any estimator) skips the pipeline's own.
    """
    if quality_model_path:
        return quality_model_path
    if quality_backend == 'learned' and paired:
        return paired_estimator_path(pipeline_path)
    return None


def build_scheduler(num_train_timesteps=1000):
    """The DDIM scheduler of the method: predicts the clean residual, trailing spacing."""
    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule='linear',
                         prediction_type='sample', timestep_spacing='trailing',
                         clip_sample=False, set_alpha_to_one=True)


@dataclass
class AdaQualOutput(BaseOutput):
    """
    Output of AdaQualPipeline.

    Args:
        images (`torch.Tensor`, (B, 3, H, W)): restored frames, RGB float in [0, 1].
        quality_maps (`list[QualityMap]`): the maps that conditioned each frame.
        prompts (`list[PromptSet]`): the prompts of each frame (readable text).
    """

    images: torch.Tensor
    quality_maps: list
    prompts: list


def ddim_steps(unet, scheduler, x, condition, cond, timesteps):
    """
    DDIM (eta 0) over the residual: from ``x`` at ``timesteps[0]``, one network call and one
    scheduler step per timestep (the scheduler's own, after ``set_timesteps``). Returns the last
    step's ``prev_sample``. The pipeline runs all its timesteps; training's
    ``sampler_last_input`` all but the last.
    """
    # A network compiled with CUDA graphs (compile_mode 'reduce-overhead') replays into the same
    # output buffers: each call is marked as a new step. Only for a compiled network: the first
    # mark imports inductor's CUDA-graph module (~0.5 s on the first frame).
    compiled = getattr(unet, '_compiled_call_impl', None) is not None
    for t in timesteps:
        if compiled:
            torch.compiler.cudagraph_mark_step_begin()
        r0 = unet(x, t, condition, **cond).sample
        x = scheduler.step(r0, t, x, eta=0.0).prev_sample
    return x


def neutral_quality_map(qmap):
    """Ablation: the same grid with every region at the frame's mean score and mean types."""
    scores = np.full_like(qmap.scores, float(qmap.scores.mean()))
    probs = np.broadcast_to(qmap.type_probs.reshape(-1, len(DEGRADATION_TYPES)).mean(0),
                            qmap.type_probs.shape).copy()
    return QualityMap(scores, probs, qmap.cell, qmap.image_size)


class AdaQualPipeline(DiffusionPipeline):
    """
    AdaQual-Diff restoration: regional quality -> adaptive prompts -> residual diffusion.

    Args:
        unet (`AdaQualUNet`): the denoiser (predicts the clean residual).
        scheduler (`DDIMScheduler`): prediction_type 'sample', timestep_spacing 'trailing'.
        tokenizer (`PreTrainedTokenizerBase`): prompt tokenizer.
        text_encoder (`CLIPTextModel`): prompt encoder.
        estimator (*optional*): object with ``.estimate(rgb_uint8) -> QualityMap``; when None it
            is built on first use with ``build_estimator(estimator_name, cell, path=...)``.
        cell (`int`, defaults to 64): quality cell size in pixels.
        c_min (`int`, defaults to 5), c_max (`int`, defaults to 32), curve (`str`, defaults to
            'identity'): prompt complexity (see prompting.complexity).
        estimator_name (`str`, defaults to 'learned'): estimator built when none is given.

    Example:
        ```py
        import torch
        from adaqual_ros.pipelines import AdaQualPipeline, default_pipeline_path

        pipe = AdaQualPipeline.from_pretrained(default_pipeline_path())
        frame = torch.rand(1, 3, 480, 640)            # RGB in [0, 1]
        g = torch.Generator().manual_seed(0)          # one per stream: fixed start noise
        out = pipe(frame, generator=g, num_inference_steps=2)
        out.images, out.prompts[0].global_prompt
        ```
    """

    model_cpu_offload_seq = 'text_encoder->unet'
    _optional_components = []

    def __init__(self, unet, scheduler, tokenizer, text_encoder, estimator=None, cell=64,
                 c_min=C_MIN, c_max=C_MAX, curve='identity', estimator_name='learned'):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, tokenizer=tokenizer,
                              text_encoder=text_encoder)
        self.register_to_config(cell=int(cell), c_min=int(c_min), c_max=int(c_max), curve=curve,
                                estimator_name=estimator_name)
        self.estimator = estimator
        self.estimator_path = None  # weights get_estimator builds from (None = the default)
        self.prompter = Prompter(c_min, c_max, curve)
        self.prompt_encoder = PromptEncoder(tokenizer, text_encoder)

    # ---- building and loading -------------------------------------------------------------
    @classmethod
    def from_components_config(cls, model_config='small', cell=64, estimator=None, **overrides):
        """Fresh (untrained) pipeline from a named model config (see models.configs)."""
        tokenizer = build_tokenizer()
        text_encoder = build_text_encoder(len(tokenizer), **TEXT_ENCODER_CONFIGS[model_config])
        cfg = get_config(model_config, **overrides)
        cfg['context_dim'] = text_encoder.config.hidden_size
        return cls(AdaQualUNet(**cfg), build_scheduler(), tokenizer, text_encoder,
                   estimator=estimator, cell=cell)

    @classmethod
    def from_pretrained(cls, path=None, estimator=None, device=None, **kwargs):
        """
        Load a pipeline saved with ``save_pretrained`` from a local folder (never downloads).

        Args:
            path (`str` or `Path`, *optional*): folder; defaults to the shipped checkpoint.
            estimator (*optional*): a quality estimator to use instead of building one; by
                default the folder's own ``estimator/`` (a joint run's) where it has one.
            device (`str`, *optional*): move the model there.
        """
        from transformers import AutoTokenizer, CLIPTextModel

        root = Path(path) if path else default_pipeline_path()
        index = root / 'model_index.json'
        if not index.is_file():
            raise FileNotFoundError(f'no AdaQual pipeline at {root} (model_index.json missing)')
        config = json.loads(index.read_text())
        unet = AdaQualUNet.from_pretrained(str(root / 'unet'))
        scheduler = DDIMScheduler.from_pretrained(str(root / 'scheduler'))
        tokenizer = AutoTokenizer.from_pretrained(str(root / 'tokenizer'), local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(str(root / 'text_encoder'),
                                                     local_files_only=True)
        settings = {k: config[k] for k in ('cell', 'c_min', 'c_max', 'curve', 'estimator_name')
                    if k in config}
        settings.update(kwargs)
        pipe = cls(unet, scheduler, tokenizer, text_encoder, estimator=estimator, **settings)
        # Built on first use only: the runtime hands in its own maps and never needs it.
        pipe.estimator_path = estimator_weights(pipe.config.estimator_name, '', root)
        pipe.unet.eval()
        pipe.text_encoder.eval()
        if device is not None:
            pipe.to(device)
        return pipe

    # ---- the pieces of __call__ ------------------------------------------------------------
    def get_estimator(self):
        if self.estimator is None:
            from adaqual_ros.quality import build_estimator
            self.estimator = build_estimator(self.config.estimator_name, cell=self.config.cell,
                                             device=str(self.unet.device),
                                             path=self.estimator_path)
        return self.estimator

    def estimate_quality(self, image):
        """QualityMaps of a (B, 3, H, W) [0, 1] batch with the pipeline's estimator."""
        est = self.get_estimator()
        frames = (image.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)
        frames = list(frames.cpu().numpy())
        if hasattr(est, 'estimate_batch'):
            return list(est.estimate_batch(frames))
        return [est.estimate(f) for f in frames]

    def encode_prompts(self, prompt_sets):
        """Embeddings (cached per prompt text) as AdaQualUNet keyword arguments."""
        ge, gm, le, lm = self.prompt_encoder.encode_prompt_sets(prompt_sets)
        dtype = self.unet.dtype
        return {'global_embeds': ge.to(dtype), 'global_mask': gm, 'local_embeds': le.to(dtype),
                    'local_mask': lm}

    def _check_inputs(self, image, quality_maps, prompts, num_inference_steps, generator):
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[1] != 3:
            shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise ValueError(f'image must be a (B, 3, H, W) tensor in [0, 1], got {shape}')
        b, _, h, w = image.shape
        if quality_maps is not None:
            if len(quality_maps) != b:
                raise ValueError(f'{len(quality_maps)} quality maps for a batch of {b}')
            for q in quality_maps:
                if tuple(q.image_size) != (h, w) or q.cell != self.config.cell:
                    raise ValueError(f'quality map for {q.image_size} cell {q.cell} does not fit '
                                     f'a {h}x{w} frame with cell {self.config.cell}')
        if prompts is not None and len(prompts) != b:
            raise ValueError(f'{len(prompts)} prompt sets for a batch of {b}')
        n_train = self.scheduler.config.num_train_timesteps
        if not 1 <= int(num_inference_steps) <= n_train:
            raise ValueError(f'num_inference_steps must be in 1..{n_train}, '
                             f'got {num_inference_steps}')
        if isinstance(generator, list) and len(generator) != b:
            raise ValueError(f'{len(generator)} generators for a batch of {b}')

    @torch.no_grad()
    def __call__(self, image, quality_maps=None, generator=None, num_inference_steps=2,
                 return_dict=True, prompts=None, latents=None, prompt_embeds=None,
                 residual_guide=0):
        """
        Restore a batch of frames.

        Args:
            image (`torch.Tensor`, (B, 3, H, W)): degraded RGB in [0, 1]; any H, W.
            quality_maps (`list[QualityMap]`, *optional*): one per frame (cell = config.cell);
                estimated with the pipeline's estimator when None.
            generator (`torch.Generator` or list, *optional*): start noise; keep one per stream
                so the start noise is fixed across frames of a video.
            num_inference_steps (`int`, defaults to 2): DDIM steps (trailing: 999, 499, ...).
            return_dict (`bool`, defaults to True): AdaQualOutput or a tuple.
            prompts (`list[PromptSet]`, *optional*): override the prompts (ablations).
            latents (`torch.Tensor`, *optional*): start noise instead of drawing it.
            prompt_embeds (`dict`, *optional*): ``encode_prompts(prompts)`` computed by the
                caller (it must match ``prompts``); saves assembling the embeddings twice.
            residual_guide (`int`, defaults to 0): radius in pixels of a guided filter of the
                predicted residual by the degraded frame (0 = off; `residual_guide.py` says why).

        Returns:
            `AdaQualOutput` (or `(images, quality_maps, prompts)`).
        """
        self._check_inputs(image, quality_maps, prompts, num_inference_steps, generator)
        device, dtype = self.unet.device, self.unet.dtype
        # 1. regional quality
        if quality_maps is None:
            quality_maps = self.estimate_quality(image)
        # 2. readable prompts, 3. their embeddings (cached)
        if prompts is None:
            prompts = [self.prompter.build(q) for q in quality_maps]
        cond = {'quality': quality_tensor(quality_maps, device, dtype), 'cell': self.config.cell}
        if self.unet.config.use_prompts:
            cond.update(prompt_embeds if prompt_embeds is not None
                        else self.encode_prompts(prompts))
        # 4. start noise from the caller's generator
        x0 = image.to(device=device, dtype=dtype)
        if latents is None:
            latents = randn_tensor(x0.shape, generator=generator, device=device, dtype=dtype)
        x = latents.to(device=device, dtype=dtype)
        # 5. DDIM over the residual; the degraded frame is conditioning only
        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        x = ddim_steps(self.unet, self.scheduler, x, x0, cond, self.scheduler.timesteps)
        # 6. residual (optionally guided by the input's structure) + input
        restored = (x0 + filter_residual(x, x0, int(residual_guide))).clamp(0, 1)
        if not return_dict:
            return restored, quality_maps, prompts
        return AdaQualOutput(images=restored, quality_maps=quality_maps, prompts=prompts)
