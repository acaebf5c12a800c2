"""Adaptive Quality Prompting: a QualityMap -> one global prompt + one local prompt per region."""
from dataclasses import dataclass, field

import numpy as np

from adaqual_ros.prompting.complexity import C_MAX, C_MIN, resolve_curve, token_budget
from adaqual_ros.prompting.templates import frame_text, region_text, truncate_tokens
from adaqual_ros.quality.types import DEGRADATION_TYPES


@dataclass
class PromptSet:
    """
    The prompts of one frame.

    Args:
        global_prompt (`str`): summary of the whole frame.
        local_prompts (`list[list[str]]`): one prompt per region, grid rows then columns.
        token_budgets (`np.ndarray` int, (grid_h, grid_w)): C_p of each region.
        global_budget (`int`): C_p of the global prompt (from the mean score).
    """

    global_prompt: str
    local_prompts: list
    token_budgets: np.ndarray
    global_budget: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def grid_size(self):
        return len(self.local_prompts), len(self.local_prompts[0]) if self.local_prompts else 0

    def flat_local(self):
        """Local prompts in row-major order."""
        return [p for row in self.local_prompts for p in row]

    def to_dict(self):
        """JSON-friendly form (for logging and the ROS prompts topic)."""
        return {'global': self.global_prompt, 'local': self.local_prompts,
                'token_budgets': np.asarray(self.token_budgets).tolist(),
                'global_budget': int(self.global_budget)}


class Prompter:
    """
    Build readable prompts from a quality map.

    Args:
        c_min (`int`, defaults to 5): token budget of a pristine region.
        c_max (`int`, defaults to 32): token budget of the worst region.
        curve (`str`, defaults to 'identity'): f in C_p = C_min + round((C_max - C_min) f(s)).
        type_threshold (`float`, defaults to 0.25): a type is named in a region's prompt when its
            probability reaches this (the strongest type is always named for a degraded region).
        clean_severity (`float`, defaults to 0.125): regions with severity below this (q above
            4.5) get the short "preserve" prompt.
    """

    def __init__(self, c_min=C_MIN, c_max=C_MAX, curve='identity', type_threshold=0.25,
                 clean_severity=0.125):
        resolve_curve(curve)
        token_budget(5.0, c_min, c_max, curve)  # validates c_min / c_max
        self.c_min, self.c_max, self.curve = int(c_min), int(c_max), curve
        self.type_threshold = float(type_threshold)
        self.clean_severity = float(clean_severity)

    def _types(self, probs):
        order = np.argsort(-probs, kind='stable')
        names = [DEGRADATION_TYPES[i] for i in order if probs[i] >= self.type_threshold]
        return names or [DEGRADATION_TYPES[order[0]]]

    def __call__(self, qmap):
        return self.build(qmap)

    def build(self, qmap):
        """Return the PromptSet of one QualityMap."""
        if not (np.isfinite(qmap.scores).all() and np.isfinite(qmap.type_probs).all()):
            raise ValueError('quality map holds non-finite scores or type probabilities')
        scores = np.clip(qmap.scores, 1.0, 5.0)
        sev = (5.0 - scores) / 4.0
        budgets = token_budget(scores, self.c_min, self.c_max, self.curve)
        gh, gw = scores.shape
        local, degraded = [], np.zeros((gh, gw), dtype=bool)
        for i in range(gh):
            row = []
            for j in range(gw):
                if sev[i, j] < self.clean_severity:
                    text = region_text([], 0.0)
                else:
                    degraded[i, j] = True
                    text = region_text(self._types(qmap.type_probs[i, j]), float(sev[i, j]))
                row.append(truncate_tokens(text, int(budgets[i, j])))
            local.append(row)
        summary = []
        if degraded.any():
            n = float(gh * gw)
            for k, name in enumerate(DEGRADATION_TYPES):
                present = degraded & (qmap.type_probs[..., k] >= self.type_threshold)
                if present.any():
                    summary.append((name, present.sum() / n, float(sev[present].mean())))
            if not summary:  # degraded but no type above threshold: name the strongest overall
                k = int(np.argmax(qmap.type_probs[degraded].mean(axis=0)))
                summary.append((DEGRADATION_TYPES[k], degraded.sum() / n,
                                float(sev[degraded].mean())))
            summary.sort(key=lambda x: -x[1] * x[2])
        mean_score = float(scores.mean())
        global_budget = token_budget(mean_score, self.c_min, self.c_max, self.curve)
        # The global prompt names the frame's mixture, so it gets at least the worst region's
        # budget's half: a frame with one bad region still says what is wrong.
        global_budget = int(max(global_budget, (int(budgets.max()) + self.c_min) // 2))
        text = frame_text(summary, float(sev.mean()))
        return PromptSet(truncate_tokens(text, global_budget), local, budgets, global_budget)


def build_prompts(qmap, **kwargs):
    """Build the PromptSet of a QualityMap with a Prompter(**kwargs)."""
    return Prompter(**kwargs).build(qmap)


def empty_prompts(prompts):
    """Ablation: the same grid with every prompt replaced by the empty string."""
    gh, gw = prompts.grid_size
    return PromptSet('', [[''] * gw for _ in range(gh)], np.zeros((gh, gw), dtype=np.int64), 0,
                     {'ablation': 'empty'})


def shuffle_prompts(prompts, rng):
    """Ablation: local prompts permuted between regions (the global prompt is kept)."""
    gh, gw = prompts.grid_size
    flat = prompts.flat_local()
    order = rng.permutation(len(flat))
    budgets = np.asarray(prompts.token_budgets).reshape(-1)[order].reshape(gh, gw)
    local = [[flat[order[i * gw + j]] for j in range(gw)] for i in range(gh)]
    return PromptSet(prompts.global_prompt, local, budgets, prompts.global_budget,
                     {'ablation': 'shuffled'})
