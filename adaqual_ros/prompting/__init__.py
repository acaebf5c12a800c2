"""Adaptive Quality Prompting: readable prompts from a quality map, tokenised and embedded."""
from adaqual_ros.prompting.complexity import C_MAX, C_MIN, CURVES, token_budget
from adaqual_ros.prompting.prompter import (
    Prompter,
    PromptSet,
    build_prompts,
    empty_prompts,
    shuffle_prompts,
)

__all__ = ['C_MAX', 'C_MIN', 'CURVES', 'token_budget', 'build_prompts', 'empty_prompts',
           'Prompter', 'PromptSet', 'shuffle_prompts']
