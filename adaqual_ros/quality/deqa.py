"""
DeQA-Score plug-in: the paper's regional scorer, an 8B multimodal LLM (mPLUG-Owl2 based).

It is loaded through transformers from a LOCAL folder only (a copy of the
``zhiyuanyou/DeQA-Score-Mix3`` repository, whose remote code provides ``model.score(images)``
returning a quality in [1, 5] per PIL image). Each cell is cropped (with some surrounding context,
since an LLM scorer sees a 64-pixel crop as almost nothing) and the crops are scored in batches.
DeQA-Score gives no degradation types, so the type probabilities come from the classical
estimator. Needs a GPU with ~16 GB in fp16 to be practical.
"""
from pathlib import Path

import numpy as np

from adaqual_ros.quality.base import QualityEstimatorMixin, check_cell
from adaqual_ros.quality.classical import ClassicalQualityEstimator
from adaqual_ros.quality.types import grid_shape


class DeQAConfigError(ValueError):
    """DeQA-Score was requested without a usable local model folder."""


class DeQAScoreEstimator(QualityEstimatorMixin):
    """
    Regional quality from DeQA-Score, scoring cell crops in batches.

    Args:
        path (`str`): local folder with the DeQA-Score weights and remote code (required; nothing
            is ever downloaded).
        cell (`int`, *optional*, defaults to 64): cell size in pixels.
        device (`str`, *optional*, defaults to 'cpu'): torch device ('cuda' strongly advised).
        batch_size (`int`, *optional*, defaults to 16): crops per `model.score` call.
        context (`float`, *optional*, defaults to 2.0): each crop spans ``context * cell`` pixels
            centred on its cell (clipped to the frame).
        dtype (`str`, *optional*): 'float16' or 'float32'; defaults to float16 on CUDA,
            float32 on CPU.
    """

    name = 'deqa'

    def __init__(self, path=None, cell=64, device='cpu', batch_size=16, context=2.0, dtype=None):
        if not path:
            raise DeQAConfigError(
                'the deqa quality estimator needs a local DeQA-Score folder: pass path=... '
                '(ROS parameter quality.model_path / RestorerSettings.quality_model_path); '
                'weights are never downloaded')
        folder = Path(path).expanduser()
        if not (folder / 'config.json').is_file():
            raise DeQAConfigError(f'no DeQA-Score model in {folder} (config.json missing)')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if context < 1.0:
            raise ValueError(f'context must be >= 1.0, got {context}')
        self.cell = check_cell(cell)
        self.batch_size = int(batch_size)
        self.context = float(context)
        self.path = folder
        self.model = self._load(folder, device, dtype)
        self._types = ClassicalQualityEstimator(cell=self.cell)

    @staticmethod
    def _load(folder, device, dtype):
        import torch
        from transformers import AutoModelForCausalLM

        if dtype is None:
            torch_dtype = torch.float16 if str(device).startswith('cuda') else torch.float32
        elif dtype in ('float16', 'float32', 'bfloat16'):
            torch_dtype = getattr(torch, dtype)
        else:
            raise ValueError(f"dtype must be 'float16', 'bfloat16' or 'float32', got {dtype!r}")
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), trust_remote_code=True, attn_implementation='eager',
            torch_dtype=torch_dtype, local_files_only=True)
        if not hasattr(model, 'score'):
            raise DeQAConfigError(
                f'the model in {folder} has no score() method (not DeQA-Score remote code)')
        model.requires_grad_(False)
        return model.to(device).eval()

    def crops(self, frame):
        """Context crops (HxWx3 uint8) of every cell, row-major."""
        h, w = frame.shape[:2]
        gh, gw = grid_shape(h, w, self.cell)
        half = int(round(self.context * self.cell / 2))
        out = []
        for gy in range(gh):
            for gx in range(gw):
                cy = min(gy * self.cell + self.cell // 2, h - 1)
                cx = min(gx * self.cell + self.cell // 2, w - 1)
                out.append(frame[max(0, cy - half):cy + half, max(0, cx - half):cx + half])
        return out

    def score_crops(self, crops):
        """Scores in [1, 5] of a list of HxWx3 uint8 RGB crops, batch by batch."""
        from PIL import Image
        import torch

        scores = []
        with torch.no_grad():
            for i in range(0, len(crops), self.batch_size):
                images = [Image.fromarray(c) for c in crops[i:i + self.batch_size]]
                scores.append(torch.as_tensor(self.model.score(images)).float().cpu().numpy())
        return np.concatenate(scores).reshape(-1) if scores else np.zeros(0, np.float32)

    def _estimate_grids(self, frames):
        results = []
        for frame in frames:
            h, w = frame.shape[:2]
            scores = self.score_crops(self.crops(frame)).reshape(grid_shape(h, w, self.cell))
            probs = self._types.estimate(frame).type_probs
            results.append((scores, probs))
        return results
