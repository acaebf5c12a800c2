"""
Tokenizer + text encoder for the prompts, built locally (no downloads), with an embedding cache.

The default encoder is a small CLIPTextModel trained with the denoiser; its tokenizer is a
word-level vocabulary built from the prompt templates' words. A pretrained CLIP text encoder and
tokenizer can be loaded instead from a local folder.
"""
from collections import OrderedDict
from pathlib import Path

import torch

from adaqual_ros.prompting.complexity import C_MAX
from adaqual_ros.prompting.templates import vocabulary_words

PAD, UNK, BOS, EOS = '[PAD]', '[UNK]', '[BOS]', '[EOS]'
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
# C_max words plus BOS and EOS.
DEFAULT_MAX_LENGTH = C_MAX + 2


def build_tokenizer(words=None, max_length=DEFAULT_MAX_LENGTH):
    """
    A transformers fast tokenizer over a word-level vocabulary (template words by default).

    Unknown words map to [UNK]; every sequence is wrapped in [BOS] ... [EOS].
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(vocabulary_words() if words is None else words)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f'{BOS} $A {EOS}', special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK,
                                   bos_token=BOS, eos_token=EOS, model_max_length=max_length)


def build_text_encoder(vocab_size, hidden_size=64, num_layers=2, num_heads=2,
                       intermediate_size=128, max_length=DEFAULT_MAX_LENGTH):
    """A small CLIPTextModel built from config (random init, trained with the denoiser)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        max_position_embeddings=max_length, projection_dim=hidden_size,
        pad_token_id=0, bos_token_id=2, eos_token_id=3)
    return CLIPTextModel(config)


def load_pretrained_text_encoder(path):
    """
    Load a pretrained CLIP tokenizer + text encoder from a local folder (never downloads).

    The folder holds either the two parts directly or 'tokenizer/' and 'text_encoder/'.
    """
    from transformers import AutoTokenizer, CLIPTextModel

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f'text encoder folder not found: {root}')
    tok_dir = root / 'tokenizer' if (root / 'tokenizer').is_dir() else root
    enc_dir = root / 'text_encoder' if (root / 'text_encoder').is_dir() else root
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(str(enc_dir), local_files_only=True)
    return tokenizer, encoder


class PromptEncoder:
    """
    Embed prompt texts, caching the embeddings of repeated prompts.

    The cache (LRU, keyed by the prompt text) is used when no gradient is needed or the encoder is
    in eval mode, so training (train mode, gradients on) always runs the encoder; call
    ``clear_cache()`` after changing the encoder's weights.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the prompt tokenizer.
        text_encoder (`CLIPTextModel`): the text encoder.
        max_length (`int`, *optional*): tokens per prompt (padded/truncated); defaults to the
            encoder's max_position_embeddings.
        cache_size (`int`, defaults to 4096): prompts kept in the cache (0 disables it).
    """

    def __init__(self, tokenizer, text_encoder, max_length=None, cache_size=4096):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_length = int(max_length or text_encoder.config.max_position_embeddings)
        self.cache_size = int(cache_size)
        self._cache = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def hidden_size(self):
        return self.text_encoder.config.hidden_size

    def clear_cache(self):
        self._cache.clear()

    def stats(self):
        return {'hits': self.hits, 'misses': self.misses, 'size': len(self._cache)}

    def _run(self, texts):
        device = self.text_encoder.device
        enc = self.tokenizer(list(texts), padding='max_length', truncation=True,
                             max_length=self.max_length, return_tensors='pt')
        ids = enc['input_ids'].to(device)
        mask = enc['attention_mask'].to(device)
        out = self.text_encoder(input_ids=ids, attention_mask=mask)
        return out.last_hidden_state, mask.bool()

    def encode(self, texts):
        """
        Embed a list of texts.

        Returns:
            `(embeds, mask)`: (N, max_length, hidden) float tensor and (N, max_length) bool mask.
        """
        texts = list(texts)
        if not texts:
            raise ValueError('encode needs at least one text')
        # An encoder in eval mode is frozen for our purposes (inference, validation): cache.
        use_cache = self.cache_size > 0 and (not torch.is_grad_enabled()
                                             or not self.text_encoder.training)
        if not use_cache:
            return self._run(texts)
        unique = list(dict.fromkeys(texts))
        missing = [t for t in unique if t not in self._cache]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                emb, mask = self._run(missing)
            for t, e, m in zip(missing, emb, mask):
                self._cache[t] = (e, m)
        rows = []
        for t in texts:
            self._cache.move_to_end(t)
            rows.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])

    def encode_prompt_sets(self, prompt_sets):
        """
        Embed a batch of PromptSets (all with the same grid).

        Returns:
            `(global_embeds (B, L, D), global_mask (B, L), local_embeds (B, G, L, D),
            local_mask (B, G, L))` with G = grid_h * grid_w.
        """
        grids = {p.grid_size for p in prompt_sets}
        if len(grids) != 1:
            raise ValueError(f'prompt sets in one batch must share a grid, got {sorted(grids)}')
        b, g = len(prompt_sets), len(prompt_sets[0].flat_local())
        texts = [p.global_prompt for p in prompt_sets]
        for p in prompt_sets:
            texts.extend(p.flat_local())
        emb, mask = self.encode(texts)
        ge, gm = emb[:b], mask[:b]
        le = emb[b:].reshape(b, g, emb.shape[1], emb.shape[2])
        lm = mask[b:].reshape(b, g, mask.shape[1])
        return ge, gm, le, lm
