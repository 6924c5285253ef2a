"""The parts every tiny stand-in pipeline shares: a word-level tokenizer over `WORDS`, a tiny T5 encoder and
`AutoencoderKL`, the dtype cast of the real-size builders, and `perturb`, which keeps every block of a freshly
initialised transformer visible.

`tiny` (PixArt, DiT), `tiny_mmdit` (SD3, FLUX.1, Sana), `tiny_image` (Qwen-Image, FLUX.2, Z-Image) and
`tiny_video` (Wan 2.x, HunyuanVideo 1.5) build from these; this module imports none of them.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

WORDS = "a an the red green blue small large cat dog circle square above below left right of photo".split()


def cast_eval(model, dtype):
    """`model` in `dtype`, in eval mode (shared by the real-size builders of `tiny` and `tiny_mmdit`)."""
    # `.to(float32)` on an fp32 model would only trigger diffusers' "keep in float32" warning
    return (model if dtype == torch.float32 else model.to(dtype=dtype)).eval()


BOS = "<s>"


def tiny_tokenizer(model_max_length: int = 16, add_bos: bool = False, add_eos: bool = False):
    """A word-level `PreTrainedTokenizerFast` over `WORDS` (T5-like by default: no special tokens added).

    `add_bos` / `add_eos` add a `TemplateProcessing` post-processor, as real CLIP (bos … eos: CLIP pools the
    eos position) and Gemma (bos …) tokenizers do. `<s>` comes after the words, so the ids a plain
    tokenizer emits are the same with or without it; size encoders with `len(tokenizer)`.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    head, tail = [BOS] * add_bos, ["</s>"] * add_eos
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + WORDS + head)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if head or tail:
        tok.post_processor = processors.TemplateProcessing(
            single=" ".join(head + ["$A"] + tail), special_tokens=[(t, vocab[t]) for t in head + tail]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=model_max_length, **({"bos_token": BOS} if add_bos else {}),
    )


def tiny_t5(d_model: int = 32, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(WORDS) + 3, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    return T5EncoderModel(cfg).eval()


def tiny_vae(seed: int = 0, latent_channels: int = 4, scaling_factor: float = 0.18215, shift_factor=None):
    """An AutoencoderKL with two levels: latents are half the image size, 4 channels.

    SD3 and Flux decode `latents / scaling_factor + shift_factor`, so their VAE needs a `shift_factor`.
    """
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    ).eval()


# Parameter-name fragments of what scales or gates a block's contribution: SD3 / Flux adaLN linears
# (`norm1`, `norm1_context`, Flux single blocks' `norm`), the output layer, Sana's modulation tables, its
# timestep linear (AdaLayerNormSingle) and its cross-attention output, which no gate multiplies.
GATES = ("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear", "proj_out",
         "scale_shift_table", "time_embed.linear", "attn2.to_out")


def perturb(model, seed: int = 0, scale: float = 0.2, gates: tuple[str, ...] = GATES):
    """Add seeded noise to the tensors that gate what each block contributes; returns `model`.

    diffusers 0.42 draws the adaLN / modulation linears, `proj_out`, Sana's `scale_shift_table` and its
    cross-attention output with ordinary random values (deleting one block of a fresh tiny model already
    moves the output by 0.1–1.3, max abs, at output std ~0.6), but DiT-family training code zero-initialises
    them (adaLN-Zero; PixArt and Sana also zero the ungated cross-attention output): with such weights every
    block is the identity and a test that "the loop ran" passes vacuously. Noise of std `scale` on each such
    tensor keeps every block visible whatever the initialisation. Its generator is local, so the global RNG
    stream (and so everything built after) is left as it was.
    """
    gen = torch.Generator().manual_seed(seed + 10_007)
    with torch.no_grad():
        for name, p in model.named_parameters():  # construction order: the same draws every time
            if any(g in name for g in gates):
                p.add_(torch.randn(p.shape, generator=gen).to(p.dtype) * scale)
    return model
