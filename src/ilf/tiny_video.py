"""Tiny real video pipelines assembled offline: Wan 2.x text-to-video and HunyuanVideo 1.5.

Like `ilf.tiny_mmdit` for the image families: every part is a real diffusers / transformers class built from a
config (word-level tokenizers, a UMT5 / Qwen2.5-VL / T5 encoder, the family's own causal video VAE), with the
stock scheduler of the checkpoint, so a real checkpoint's code path runs without downloading anything.

Video latents are `[B, C, F, H, W]`; both VAEs compress time 4× (F = (frames − 1) / 4 + 1: 5 frames → 2 latent
frames), so a call of 5 frames is the smallest one whose latents have F > 1.

What the pipelines do per denoising step (diffusers 0.42), which the ILF wrappers rely on:

- "wan" (`WanPipeline`): with `guidance_scale > 1` two transformer calls per step, cond then uncond (each
  batch B, under `cache_context("cond")` / `("uncond")`); `timestep` = the scheduler's t (UniPC with flow
  sigmas: integers in [0, 1000]) expanded to the batch. `transformer_2=None`: a Wan 2.1-style single
  transformer (Wan 2.2's two-expert form is described in `ilf.adapters.wan`).
- "hunyuan-video-1.5" (`HunyuanVideo15Pipeline`): CFG is the pipeline's `guider` component
  (`ClassifierFreeGuidance`, its scale fixed at construction: `pipe.guider = pipe.guider.new(guidance_scale=
  ...)` changes it), two calls per step, cond then uncond; the model input is the latents concatenated on
  the channel axis with zero conditioning latents and a zero mask (C + C + 1 channels, text-to-video);
  `timestep` = the scheduler's t in the latents' dtype. diffusers 0.42.1's `AutoencoderKLHunyuanVideo15`
  decodes one video at a time (its causal mask is [B, L, L] against attention [B, 1, L, L]):
  `pipe.vae.enable_slicing()` decodes a batch; `output_type="latent"` needs no VAE.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.guiders import ClassifierFreeGuidance

from .tiny_parts import perturb, tiny_tokenizer

KINDS = ("wan", "hunyuan-video-1.5")
TEXT_LEN = 16  # the tokenizers' model_max_length and the calls' max_sequence_length
FRAMES = 5  # → 2 latent frames (both VAEs compress time 4×, keeping the first frame)
PIXELS = {"wan": 32, "hunyuan-video-1.5": 16}  # → 4×4 latents (Wan's VAE: 1/8 spatially; the tiny HV1.5 VAE: 1/4)
TEXT_DIM = 32  # the text encoders' width
GUIDANCE = {"wan": 5.0, "hunyuan-video-1.5": 6.0}  # Wan's example call; HV1.5 480p/720p t2v's guider



# --- Wan 2.x -----------------------------------------------------------------------------------------------

def tiny_umt5(tokenizer, seed: int = 0):
    """A one-layer `UMT5EncoderModel` (Wan's text encoder is umt5-xxl)."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    cfg = UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return UMT5EncoderModel(cfg).eval()


def tiny_wan_vae(seed: int = 0):
    """An `AutoencoderKLWan` with Wan 2.1's compression (1/8 spatially over three levels, 1/4 in time) and its
    16 latent channels, at base width 4 (the real one: 96)."""
    torch.manual_seed(seed)
    return AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True]).eval()


def tiny_wan(num_layers: int = 6, seed: int = 0, **kw):
    """A `WanTransformer3DModel`, 2 heads × 12 (rope: 4 time + 4 + 4 space dims), patch (1, 2, 2), 16 channels."""
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**{**dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ), **kw})
    return _perturbed(model, seed)


def wan_scheduler():
    """Wan2.1-T2V's stock scheduler: UniPC on flow sigmas, `flow_shift` 3.0 (480p; 5.0 for 720p)."""
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                   flow_shift=3.0)


def tiny_wan_pipeline(num_layers: int = 6, seed: int = 0, **transformer_kwargs) -> WanPipeline:
    tok = tiny_tokenizer(TEXT_LEN, add_eos=True)  # T5-style: ids then </s>, padded
    return WanPipeline(tokenizer=tok, text_encoder=tiny_umt5(tok, seed), vae=tiny_wan_vae(seed),
                       transformer=tiny_wan(num_layers, seed, **transformer_kwargs), scheduler=wan_scheduler())


# --- HunyuanVideo 1.5 --------------------------------------------------------------------------------------

HV_CHANNELS = 4  # latent channels (the real VAE: 32); the transformer takes 2·C + 1 (latents, cond latents, mask)
HV_GLYPH_DIM = 16  # the ByT5 encoder's width (the real one: 1472)
HV_IMAGE_DIM = 16  # the SigLIP image-embedding width (1152): zeros in text-to-video, still projected


def tiny_qwen25vl(tokenizer, seed: int = 0):
    """A three-layer `Qwen2_5_VLTextModel` (HV1.5 reads the hidden state 2 layers before the last: index -3)."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    torch.manual_seed(seed)
    cfg = Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},  # 2·(2+3+3) = head dim 16
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen2_5_VLTextModel(cfg).eval()


def tiny_qwen_chat_tokenizer():
    """The word-level tokenizer with a chat template that renders the user turn only (the real template's system
    turn is 108 tokens, cropped by the pipeline: here there is nothing to crop, see `tiny_hunyuan_video_pipeline`)."""
    tok = tiny_tokenizer(TEXT_LEN)
    tok.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    return tok


def tiny_byt5(tokenizer, seed: int = 0):
    """The glyph encoder: a one-layer `T5EncoderModel` over ByT5's byte vocabulary (only run for quoted text)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=HV_GLYPH_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    return T5EncoderModel(cfg).eval()


def tiny_hv15_vae(seed: int = 0):
    """An `AutoencoderKLHunyuanVideo15` compressing 1/4 in space and time over two levels (the real one: 1/16
    in space over four of five levels), C = 4 latent channels."""
    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo15(latent_channels=HV_CHANNELS, block_out_channels=(8, 8, 8), layers_per_block=1,
                                       spatial_compression_ratio=4, temporal_compression_ratio=4).eval()


def tiny_hv15(num_layers: int = 6, seed: int = 0, **kw):
    """A `HunyuanVideo15Transformer3DModel`, 2 heads × 8 (rope axes 2 + 2 + 4), patch 1, one refiner layer."""
    torch.manual_seed(seed)
    model = HunyuanVideo15Transformer3DModel(**{**dict(
        in_channels=2 * HV_CHANNELS + 1, out_channels=HV_CHANNELS, num_attention_heads=2, attention_head_dim=8,
        num_layers=num_layers, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1,
        text_embed_dim=TEXT_DIM, text_embed_2_dim=HV_GLYPH_DIM, image_embed_dim=HV_IMAGE_DIM,
        rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v",
    ), **kw})
    return _perturbed(model, seed)


def tiny_hunyuan_video_pipeline(num_layers: int = 6, seed: int = 0, **transformer_kwargs) -> HunyuanVideo15Pipeline:
    """HunyuanVideo 1.5 480p t2v's parts at tiny sizes: `FlowMatchEulerDiscreteScheduler(shift=5.0)`, CFG 6.0.

    The pipeline keeps four sizes as instance attributes (not config): the Qwen prompt length (1000 tokens after
    a 108-token system template crop), the ByT5 glyph length (256) and the image-token count (729 SigLIP tokens,
    zeros in text-to-video). They are set to the tiny sizes here: 16 prompt tokens (no crop: the tiny template
    has no system turn), 8 glyph tokens, 4 image tokens.
    """
    from transformers import ByT5Tokenizer

    tok, glyph_tok = tiny_qwen_chat_tokenizer(), ByT5Tokenizer()
    pipe = HunyuanVideo15Pipeline(
        text_encoder=tiny_qwen25vl(tok, seed), tokenizer=tok, transformer=tiny_hv15(num_layers, seed, **transformer_kwargs),
        vae=tiny_hv15_vae(seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=tiny_byt5(glyph_tok, seed), tokenizer_2=glyph_tok,
        guider=ClassifierFreeGuidance(guidance_scale=GUIDANCE["hunyuan-video-1.5"]),
    )
    pipe.tokenizer_max_length, pipe.prompt_template_encode_start_idx = TEXT_LEN, 0
    pipe.tokenizer_2_max_length, pipe.vision_num_semantic_tokens = 8, 4
    return pipe


# --- shared ------------------------------------------------------------------------------------------------

def _perturbed(model, seed):
    """`ilf.tiny_parts.perturb`: its gate names already cover these families' gates. Wan: each block's and the
    output's `scale_shift_table` ([1, 6, D] / [1, 2, D], added to the time projection), the cross-attention
    output `attn2.to_out` (no gate multiplies it), `proj_out`; HunyuanVideo 1.5: the adaLN-Zero linears
    `norm1.linear`, `norm1_context.linear`, `norm_out.linear` and `proj_out`."""
    return perturb(model, seed).eval()


def tiny_video_pipeline(kind: str = "wan", num_layers: int | None = None, seed: int = 0, **transformer_kwargs):
    """A real `WanPipeline` ("wan") or `HunyuanVideo15Pipeline` ("hunyuan-video-1.5") from tiny parts, 6 blocks
    by default. Call it with `**video_call_kwargs(kind)`."""
    layers = 6 if num_layers is None else num_layers
    if kind == "wan":
        return tiny_wan_pipeline(layers, seed, **transformer_kwargs)
    if kind == "hunyuan-video-1.5":
        return tiny_hunyuan_video_pipeline(layers, seed, **transformer_kwargs)
    raise ValueError(f"unknown video kind {kind!r}; expected one of {KINDS}")


def video_call_kwargs(kind: str, **overrides) -> dict:
    """A small call of `tiny_video_pipeline(kind)`: 5 frames (2 latent frames) of 4×4 latents, the tiny
    tokenizers' 16-token prompts. Wan: `guidance_scale` 5.0 and `max_sequence_length`. HunyuanVideo 1.5 takes
    neither (its guider holds the scale, its prompt length is the pipeline's; see `tiny_hunyuan_video_pipeline`).
    Takes prompt strings and `output_type="latent"`; `overrides` win."""
    if kind not in KINDS:
        raise ValueError(f"unknown video kind {kind!r}; expected one of {KINDS}")
    kw = dict(height=PIXELS[kind], width=PIXELS[kind], num_frames=FRAMES)
    if kind == "wan":
        kw.update(guidance_scale=GUIDANCE["wan"], max_sequence_length=TEXT_LEN)
    kw.update(overrides)
    return kw
