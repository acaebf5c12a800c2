"""
Readable restoration directives per degradation type and severity.

Prompts are plain English built only from the words below, so the local tokenizer vocabulary
(see text_encoder.py) covers every prompt the prompter can produce.
"""
import re

from adaqual_ros.quality.types import DEGRADATION_TYPES

# Directives per type, most important first: truncation to the token budget keeps the head.
DIRECTIVES = {
    'low_light': (
        'brighten the dark region', 'lift the shadows', 'recover natural colour',
        'suppress sensor noise', 'keep the highlights', 'restore fine texture',
        'balance the exposure'),
    'haze': (
        'remove the haze', 'restore local contrast', 'recover distant detail',
        'correct the grey colour cast', 'deepen the blacks', 'sharpen the edges',
        'keep the sky smooth'),
    'rain': (
        'remove the rain streaks', 'fill the occluded texture', 'restore the edges',
        'keep the background detail', 'suppress the spray', 'keep the colour natural',
        'remove bright lines'),
    'snow': (
        'remove the snow flakes', 'clear the snow veil', 'fill the occluded texture',
        'restore local contrast', 'keep the edges sharp', 'remove white spots',
        'keep the colour natural'),
}
TYPE_NOUNS = {'low_light': 'low light', 'haze': 'haze', 'rain': 'rain', 'snow': 'snow'}
# (upper severity bound, adjective); severity s = (5 - q) / 4.
SEVERITY_WORDS = ((0.25, 'light'), (0.5, 'moderate'), (0.75, 'heavy'), (float('inf'), 'severe'))
EXTENT_WORDS = ((0.34, 'in some regions'), (0.67, 'in many regions'), (float('inf'), 'everywhere'))
PRESERVE_PROMPT = 'preserve clean region keep detail , change nothing , no restoration needed'
CLEAN_FRAME_PROMPT = 'clean frame , preserve every detail unchanged , no restoration needed'
EXTRA_WORDS = ('frame', 'and', 'with', ':', ',', 'mild', 'degradation', 'restore')

# Same split as the tokenizer's Whitespace pre-tokenizer: words and punctuation runs.
_TOKEN_RE = re.compile(r'\w+|[^\w\s]+')

if set(DIRECTIVES) != set(DEGRADATION_TYPES):
    raise RuntimeError('DIRECTIVES must cover exactly DEGRADATION_TYPES')


def split_tokens(text):
    """Split text the way the prompt tokenizer does (one entry per token)."""
    return _TOKEN_RE.findall(text)


def truncate_tokens(text, budget):
    """Keep the first ``budget`` tokens of ``text`` (a trailing comma is dropped)."""
    if budget < 1:
        raise ValueError(f'token budget must be >= 1, got {budget}')
    tokens = split_tokens(text)[:budget]
    while len(tokens) > 1 and tokens[-1] in (',', ':'):
        tokens.pop()
    return ' '.join(tokens)


def severity_word(s):
    """Adjective for a severity in [0, 1]."""
    for bound, word in SEVERITY_WORDS:
        if s < bound:
            return word
    return SEVERITY_WORDS[-1][1]


def extent_word(fraction):
    """How much of the frame a degradation covers, in words."""
    for bound, word in EXTENT_WORDS:
        if fraction < bound:
            return word
    return EXTENT_WORDS[-1][1]


def _directive_stream(types):
    """Interleave the directives of several types (strongest type first), no repeats."""
    seen, out = set(), []
    depth = max(len(DIRECTIVES[t]) for t in types)
    for i in range(depth):
        for t in types:
            if i < len(DIRECTIVES[t]) and DIRECTIVES[t][i] not in seen:
                seen.add(DIRECTIVES[t][i])
                out.append(DIRECTIVES[t][i])
    return out


def region_text(types, s):
    """
    Full (untruncated) local prompt for a region.

    Args:
        types (`list[str]`): degradation types present, strongest first; empty = clean region.
        s (`float`): severity in [0, 1].
    """
    if not types:
        return PRESERVE_PROMPT
    header = ' and '.join(f'{severity_word(s)} {TYPE_NOUNS[t]}' for t in types[:2])
    return header + ' : ' + ' , '.join(_directive_stream(types))


def frame_text(type_summary, mean_s):
    """
    Full (untruncated) global prompt.

    Args:
        type_summary (`list[tuple[str, float, float]]`): (type, coverage fraction, mean severity
            where present), strongest first; empty = clean frame.
        mean_s (`float`): mean severity of the frame.
    """
    if not type_summary:
        return CLEAN_FRAME_PROMPT
    parts = [f'{severity_word(s)} {TYPE_NOUNS[t]} {extent_word(cov)}'
             for t, cov, s in type_summary]
    head = f'frame with {severity_word(mean_s)} degradation : ' + ' , '.join(parts)
    return head + ' : ' + ' , '.join(_directive_stream([t for t, _, _ in type_summary]))


def vocabulary_words():
    """Every token the templates can produce (sorted, deterministic)."""
    texts = [PRESERVE_PROMPT, CLEAN_FRAME_PROMPT, ' '.join(EXTRA_WORDS)]
    texts += [p for phrases in DIRECTIVES.values() for p in phrases]
    texts += list(TYPE_NOUNS.values())
    texts += [w for _, w in SEVERITY_WORDS] + [w for _, w in EXTENT_WORDS]
    words = set()
    for text in texts:
        words.update(split_tokens(text))
    return sorted(words)
