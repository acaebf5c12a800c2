"""Adaptive Quality Prompting: budgets, readable prompts, tokenizer coverage, embedding cache."""
import numpy as np
import pytest
import torch

from adaqual_ros.prompting import Prompter, build_prompts, empty_prompts, shuffle_prompts
from adaqual_ros.prompting.complexity import token_budget
from adaqual_ros.prompting.templates import DIRECTIVES, PRESERVE_PROMPT, split_tokens
from adaqual_ros.prompting.text_encoder import PromptEncoder, build_text_encoder, build_tokenizer
from adaqual_ros.quality.types import DEGRADATION_TYPES, QualityMap


def _random_map(rng, gh=3, gw=4, cell=64):
    return QualityMap(rng.uniform(1, 5, (gh, gw)), rng.dirichlet(np.ones(4), (gh, gw)), cell,
                      (gh * cell - 5, gw * cell - 7))


def test_token_budget_follows_formula():
    q = np.linspace(1, 5, 17)
    got = token_budget(q, 5, 32)
    s = (5 - q) / 4
    assert got.tolist() == [5 + int(np.round(27 * si)) for si in s]
    assert token_budget(5.0) == 5 and token_budget(1.0) == 32
    # any curve keeps the budget monotone in severity
    for curve in ('identity', 'sqrt', 'square', 'smoothstep'):
        b = token_budget(q, curve=curve)
        assert np.all(np.diff(b) <= 0), curve


def test_token_budget_rejects_bad_settings():
    with pytest.raises(ValueError, match='curve'):
        token_budget(3.0, curve='cubic')
    with pytest.raises(ValueError, match='c_min'):
        token_budget(3.0, c_min=10, c_max=5)


def test_prompts_respect_budgets_and_types():
    rng = np.random.default_rng(0)
    for _ in range(20):
        qmap = _random_map(rng)
        p = build_prompts(qmap)
        assert p.grid_size == qmap.scores.shape
        for i in range(qmap.scores.shape[0]):
            for j in range(qmap.scores.shape[1]):
                text = p.local_prompts[i][j]
                assert 1 <= len(split_tokens(text)) <= p.token_budgets[i, j]
                if qmap.scores[i, j] < 4.5:
                    strongest = DEGRADATION_TYPES[int(np.argmax(qmap.type_probs[i, j]))]
                    # the strongest type is named in the header
                    assert strongest.replace('_', ' ') in text
                else:
                    assert PRESERVE_PROMPT.startswith(text)
        assert len(split_tokens(p.global_prompt)) <= p.global_budget


def test_worse_regions_get_longer_prompts():
    probs = np.zeros((1, 3, 4), np.float32)
    probs[..., DEGRADATION_TYPES.index('rain')] = 1
    qmap = QualityMap(np.array([[4.9, 3.0, 1.0]]), probs, 64, (64, 192))
    p = build_prompts(qmap)
    lengths = [len(split_tokens(t)) for t in p.local_prompts[0]]
    assert lengths[0] < lengths[1] < lengths[2]
    assert DIRECTIVES['rain'][0] in p.local_prompts[0][2]
    assert 'rain' in p.global_prompt


def test_prompts_from_real_synthetic_weather(asset):
    import cv2

    from adaqual_ros.weather import synthesize
    bgr = cv2.imread(str(asset('data/clean/bsds500/val/101085.jpg')))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    for condition, word in (('haze', 'haze'), ('rain', 'rain'), ('low', 'low light')):
        s = synthesize(rgb, condition, 3, severity=0.7)
        qmap = QualityMap(s.quality, s.types, 64, rgb.shape[:2])
        p = build_prompts(qmap)
        assert word in p.global_prompt, (condition, p.global_prompt)


def test_tokenizer_covers_every_prompt_and_round_trips(tmp_path):
    tok = build_tokenizer()
    rng = np.random.default_rng(1)
    texts = []
    for curve in ('identity', 'sqrt'):
        for _ in range(10):
            p = Prompter(curve=curve).build(_random_map(rng))
            texts += [p.global_prompt] + p.flat_local()
    ids = tok(texts)['input_ids']
    assert all(tok.unk_token_id not in row for row in ids)
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert again(texts)['input_ids'] == ids


def test_prompt_encoder_caches_repeated_prompts():
    torch.manual_seed(0)
    tok = build_tokenizer()
    enc = PromptEncoder(tok, build_text_encoder(len(tok), hidden_size=16, num_layers=1,
                                                num_heads=1, intermediate_size=32).eval())
    texts = ['remove the haze', 'remove the rain streaks', 'remove the haze']
    with torch.no_grad():
        e1, m1 = enc.encode(texts)
        e2, _ = enc.encode(texts[:2])
    assert enc.stats()['misses'] == 2 and enc.stats()['hits'] == 3
    assert torch.equal(e1[0], e1[2]) and torch.equal(e1[:2], e2)
    assert not torch.equal(e1[0], e1[1])
    assert m1.shape == e1.shape[:2] and m1.dtype == torch.bool
    # with gradients the encoder always runs (training must see weight updates)
    enc.text_encoder.train()
    e3, _ = enc.encode(texts)
    assert e3.requires_grad


def test_ablation_prompt_sets():
    rng = np.random.default_rng(2)
    p = build_prompts(_random_map(rng))
    e = empty_prompts(p)
    assert e.global_prompt == '' and all(t == '' for t in e.flat_local())
    s = shuffle_prompts(p, np.random.default_rng(0))
    assert sorted(s.flat_local()) == sorted(p.flat_local())
    assert s.flat_local() != p.flat_local()


def test_non_finite_quality_is_rejected():
    qmap = _random_map(np.random.default_rng(3), 1, 2)
    qmap.scores[0, 1] = np.nan
    with pytest.raises(ValueError, match='non-finite'):
        build_prompts(qmap)
