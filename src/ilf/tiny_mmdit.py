"""Tiny real SD3 / Flux / Sana pipelines assembled offline, and the real-size SD3-medium architecture.

Like `ilf.tiny` for PixArt and DiT: every part is a real diffusers / transformers class built from a config
(word-level tokenizers, CLIP, T5 and Gemma2 encoders, `AutoencoderKL` / `AutoencoderDC`), so the code path
of a real checkpoint runs without downloading anything. Each pipeline gets its family's stock scheduler.

What the pipelines do per denoising step (diffusers 0.42), which the ILF wrappers rely on:

- "sd3": one transformer call per step, on `[uncond, cond]` (uncond first) when `guidance_scale > 1`
  (the default, 7.0), else on the cond batch alone; `timestep` = the scheduler's t in [0, 1000].
- "flux" / "flux-dev": no batched CFG. "flux-dev" embeds `guidance_scale` (guidance distillation), one call.
  True CFG (`negative_prompt=..., true_cfg_scale > 1`) makes two calls per step, cond first, then uncond,
  each with batch 1. `timestep` = t / 1000 in [0, 1] (the transformer multiplies by 1000 itself).
- "sana": like SD3 (default guidance 4.5), but `timestep` = t · `transformer.config.timestep_scale`
  (1.0 here, so t in [0, 1000], integer-valued) and the latents are passed positionally, not as
  `hidden_states=` as SD3 and Flux do.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderDC,
    DPMSolverMultistepScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    SanaPipeline,
    SanaTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from .tiny_parts import cast_eval, perturb, tiny_t5, tiny_tokenizer, tiny_vae

KINDS = ("sd3", "flux", "flux-dev", "sana")
TEXT_LEN = 16  # every tokenizer's model_max_length, and the pipelines' max_sequence_length
IMAGE = {"sd3": 16, "flux": 16, "flux-dev": 16, "sana": 32}  # pixels, all giving 8×8 latents

# Tiny encoder widths. SD3 pads the two CLIP hidden states (8 + 16) up to the T5 width (32), as the real
# model pads 768 + 1280 up to 4096, and concatenates the two pooled projections (8 + 16 = 24).
CLIP_L, CLIP_G, T5_DIM, GEMMA_DIM = 8, 16, 32, 32


# --- text encoders -----------------------------------------------------------------------------------------

def tiny_clip_tokenizer():
    """bos … eos, padded: CLIP pools the hidden state at the first eos, so each prompt needs one."""
    return tiny_tokenizer(model_max_length=TEXT_LEN, add_bos=True, add_eos=True)


def tiny_clip(hidden: int, tokenizer, projection: bool, seed: int = 0):
    """`CLIPTextModelWithProjection` (SD3's two encoders) or `CLIPTextModel` (Flux's pooled encoder)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, projection_dim=hidden,
        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=TEXT_LEN,
        # eos_token_id must not be 2: CLIP then takes the legacy argmax-of-ids pooling
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_gemma2(tokenizer, seed: int = 0):
    """A two-layer `Gemma2Model` (one sliding-window, one global layer): Sana uses gemma-2-2b-it's decoder."""
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    cfg = Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=GEMMA_DIM, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=8,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Gemma2Model(cfg).eval()


def tiny_dc_ae(seed: int = 0):
    """An `AutoencoderDC` with three levels (latents 1/4 of the image, 4 channels); Sana's has six (1/32).

    Three, not two like `tiny_vae`: `SanaPipeline.check_inputs` demands height and width divisible by 32
    whatever the VAE, so a 32 px image is the smallest, and three levels keep its latents at 8×8.
    """
    torch.manual_seed(seed)
    return AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), (5,)), decoder_qkv_multiscales=((), (), (5,)),
        downsample_block_type="conv", upsample_block_type="interpolate", scaling_factor=0.41407,
    ).eval()


# --- transformers ------------------------------------------------------------------------------------------

def _build(cls, defaults: dict, kw: dict, seed: int):
    torch.manual_seed(seed)
    return perturb(cls(**{**defaults, **kw}), seed).eval()


def tiny_sd3(num_layers: int = 6, seed: int = 0, **kw):
    """An `SD3Transformer2DModel`, 2 heads × 8, whose last block is `context_pre_only` (diffusers' default)."""
    return _build(SD3Transformer2DModel, dict(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=num_layers, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=T5_DIM, caption_projection_dim=16,
        pooled_projection_dim=CLIP_L + CLIP_G, pos_embed_max_size=16,
    ), kw, seed)


def tiny_flux(num_layers: int = 3, num_single_layers: int = 3, seed: int = 0, guidance_embeds: bool = False, **kw):
    """A `FluxTransformer2DModel`, 2 heads × 8 (rope axes 2 + 2 + 4 = 8), on 2×2-packed 4-channel latents."""
    return _build(FluxTransformer2DModel, dict(
        patch_size=1, in_channels=16, num_layers=num_layers, num_single_layers=num_single_layers,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_G,
        guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4),
    ), kw, seed)


def tiny_sana(num_layers: int = 6, seed: int = 0, **kw):
    """A `SanaTransformer2DModel` (linear self-attention, 2 heads × 8; cross-attention 2 × 8), patch 1."""
    return _build(SanaTransformer2DModel, dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=num_layers,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
        caption_channels=GEMMA_DIM, sample_size=8, patch_size=1,
    ), kw, seed)


def sd3_medium(sample_size: int = 64, seed: int = 0, dtype=torch.float32, num_layers: int = 24):
    """The SD3-medium MMDiT (24 blocks, 24 heads × 64, ~2.0 B parameters) with random weights.

    Config of stabilityai/stable-diffusion-3-medium-diffusers, transformer/config.json: attention_head_dim 64,
    caption_projection_dim 1536, in_channels 16, joint_attention_dim 4096, num_attention_heads 24,
    num_layers 24, out_channels 16, patch_size 2, pooled_projection_dim 2048, pos_embed_max_size 192,
    sample_size 128 (1024 px). `sample_size` here is the latent size: 64 = 512 px, 128 = 1024 px; it only
    sets the pipeline's default resolution (positions are cropped from the 192×192 table at any size).
    `num_layers` is for tests that check the config without building 2 B parameters. No `perturb`: this is
    for timing, where weight values do not matter.
    """
    torch.manual_seed(seed)
    return cast_eval(SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=16, out_channels=16, num_layers=num_layers,
        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
        pooled_projection_dim=2048, pos_embed_max_size=192,
    ), dtype)


# --- pipelines ---------------------------------------------------------------------------------------------

def stock_scheduler(kind: str):
    """The scheduler each checkpoint ships (scheduler/scheduler_config.json).

    SD3-medium: shift 3.0. FLUX.1-schnell: shift 1.0, no dynamic shifting. FLUX.1-dev: shift 3.0 with dynamic
    (resolution-dependent) shifting, mu interpolated between base_shift 0.5 at 256 and max_shift 1.15 at
    4096 image tokens. Sana (diffusers' convert_sana_to_diffusers.py, default "flow-dpm_solver"): DPM-Solver++
    in flow mode, flow_shift 3.0 (6.0 only for the 4K model).
    """
    if kind == "sd3":
        return FlowMatchEulerDiscreteScheduler(shift=3.0)
    if kind in ("flux", "flux-dev"):
        dev = kind == "flux-dev"
        return FlowMatchEulerDiscreteScheduler(
            shift=3.0 if dev else 1.0, use_dynamic_shifting=dev, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )
    if kind == "sana":
        return DPMSolverMultistepScheduler(flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def tiny_mmdit_pipeline(kind: str = "sd3", num_layers: int | None = None, seed: int = 0, **transformer_kwargs):
    """A real `StableDiffusion3Pipeline` / `FluxPipeline` / `SanaPipeline` assembled offline from tiny parts.

    `kind`: "sd3", "flux" (schnell-style: no guidance embedding), "flux-dev" (guidance-distilled) or "sana".
    `num_layers` defaults to the tiny family default (6; Flux: 3 dual-stream blocks, plus
    `num_single_layers=3` single-stream ones). Call it with `**mmdit_call_kwargs(kind)`.
    """
    layers = {} if num_layers is None else {"num_layers": num_layers}
    scheduler = stock_scheduler(kind)
    if kind == "sd3":
        tok1, tok2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
        return StableDiffusion3Pipeline(
            transformer=tiny_sd3(seed=seed, **layers, **transformer_kwargs), scheduler=scheduler,
            vae=tiny_vae(seed, scaling_factor=1.5305, shift_factor=0.0609),  # SD3's VAE factors
            text_encoder=tiny_clip(CLIP_L, tok1, projection=True, seed=seed), tokenizer=tok1,
            text_encoder_2=tiny_clip(CLIP_G, tok2, projection=True, seed=seed + 1), tokenizer_2=tok2,
            text_encoder_3=tiny_t5(d_model=T5_DIM, seed=seed), tokenizer_3=tiny_tokenizer(TEXT_LEN),
        )
    if kind in ("flux", "flux-dev"):
        tok = tiny_clip_tokenizer()
        return FluxPipeline(
            transformer=tiny_flux(seed=seed, guidance_embeds=kind == "flux-dev", **layers, **transformer_kwargs),
            scheduler=scheduler, vae=tiny_vae(seed, scaling_factor=0.3611, shift_factor=0.1159),  # FLUX.1's
            text_encoder=tiny_clip(CLIP_G, tok, projection=False, seed=seed), tokenizer=tok,
            text_encoder_2=tiny_t5(d_model=T5_DIM, seed=seed), tokenizer_2=tiny_tokenizer(TEXT_LEN),
        )
    if kind == "sana":
        # Gemma's tokenizer prepends <bos>, so even the empty negative prompt keeps one unmasked token
        tok = tiny_tokenizer(TEXT_LEN, add_bos=True)
        return SanaPipeline(
            transformer=tiny_sana(seed=seed, **layers, **transformer_kwargs), scheduler=scheduler,
            vae=tiny_dc_ae(seed), text_encoder=tiny_gemma2(tok, seed=seed), tokenizer=tok,
        )
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS} (or a kind of ilf.tiny.tiny_pipeline)")


def mmdit_call_kwargs(kind: str, **overrides) -> dict:
    """Keyword arguments that make a tiny pipeline of `kind` work.

    All: an image whose latents are 8×8 (16 px; Sana 32 px, as it demands multiples of 32; Flux packs the
    latents to 4×4 tokens) and `max_sequence_length=16` (the tiny tokenizers' length; the pipelines default
    to 256/512/300). Sana also needs `use_resolution_binning=False` (its bins exist only for sample_size
    16/32/64/128; the tiny model's is 8) and takes `complex_human_instruction=None`: by default it prefixes
    every prompt with an 8-line chat instruction for Gemma (197 tiny tokens, nearly all <unk>); that runs
    too (Gemma reads 211 tokens, the pipeline keeps the first and the last 15), with a transformers warning
    that 197 tokens exceed the tokenizer's 16.
    `clean_caption=False` is Sana's default already, explicit as in `ilf.tiny.pixart_call_kwargs`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    kw = dict(height=IMAGE[kind], width=IMAGE[kind], max_sequence_length=TEXT_LEN)
    if kind == "sana":
        kw.update(use_resolution_binning=False, complex_human_instruction=None, clean_caption=False)
    kw.update(overrides)
    return kw
