"""Tiny real Qwen-Image, FLUX.2 and Z-Image pipelines assembled offline.

Like `ilf.tiny_mmdit`: every part is a real diffusers / transformers class built from a config (the tiny
word-level tokenizer of `ilf.tiny` with a chat template where the pipeline applies one, a Qwen2.5-VL / Mistral3 /
Qwen3 text encoder, the family's own VAE class) with the stock scheduler of the checkpoint, so a real
checkpoint's code path runs without downloading anything.

What the pipelines do per denoising step (diffusers 0.42), which the ILF wrappers rely on:

- "qwen-image" (`QwenImagePipeline`): true CFG (`negative_prompt=..., true_cfg_scale > 1`, the pipeline's
  default scale 4.0) is two calls per step, cond then uncond, each batch B under `cache_context("cond")` /
  `("uncond")`; without a negative prompt one call. `timestep` = t / 1000 in the latents' dtype; latents are
  2×2-packed tokens [B, L, 4·C]. The text is the encoder's last hidden state with the chat template's system
  prefix dropped (`prompt_template_encode_start_idx` tokens).
- "flux2" (`Flux2Pipeline`, FLUX.2-dev): guidance-distilled (`guidance_scale` is embedded, default 4.0), one
  call per step, no `cache_context`; `timestep` = t / 1000 in the latents' dtype; `prompt=` must be passed by
  keyword (its first positional argument is `image`). The text is hidden states of several encoder layers
  (`text_encoder_out_layers`, (10, 20, 30) of Mistral-Small's 40) stacked on the channel axis.
- "z-image" (`ZImagePipeline`): CFG (`guidance_scale > 0`, default 5.0) batched in one call as lists,
  [cond..., uncond...] (cond first); the model is called positionally with `(x, t, cap_feats)`: lists of
  per-sample latents [C, 1, H, W] and caption features [L_i, D], and `t` = (1000 − t_sched) / 1000 = 1 − σ
  (it runs from 0 at noise to 1 at data). The text is the encoder's second-to-last hidden state of the
  unpadded tokens.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)

from .tiny_parts import GATES, perturb, tiny_tokenizer, tiny_vae

KINDS = ("qwen-image", "flux2", "z-image")
TEXT_DIM = 16  # every tiny text encoder's width
TEXT_LEN = {"qwen-image": 16, "flux2": 48, "z-image": 16}  # the calls' max_sequence_length
# Pixels giving 16 image tokens each: Qwen-Image's VAE is 1/4 here (two levels) and packs 2×2 → 4×4 tokens;
# FLUX.2's and Z-Image's are 1/2 (one level) with 2×2 packing / patches → 4×4 tokens.
PIXELS = {"qwen-image": 32, "flux2": 16, "z-image": 16}
# FLUX.2 stacks the hidden states of these encoder layers (the tiny Mistral has 2; the real one 40, (10, 20, 30))
FLUX2_TEXT_LAYERS = (1, 2)
# What gates each block's contribution, beyond `tiny_parts.GATES` (norm_out.linear, proj_out): Qwen-Image's
# per-block modulations, FLUX.2's shared modulations, Z-Image's adaLN linears and output layer.
IMAGE_GATES = GATES + ("img_mod.1", "txt_mod.1", "stream_modulation", "adaLN_modulation", "all_final_layer")


def _tokenizer(chat_template: str | None = None, add_bos: bool = False):
    # model_max_length 64: long enough for the chat templates' words, so transformers does not warn
    tok = tiny_tokenizer(model_max_length=64, add_bos=add_bos)
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _ids(tok) -> dict:
    return dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)


# --- Qwen-Image --------------------------------------------------------------------------------------------

def tiny_qwen_image_transformer(num_layers: int = 6, seed: int = 0, **kw):
    """`QwenImageTransformer2DModel`, 2 heads × 8 (rope axes 2 + 2 + 4 = 8), on 2×2-packed 4-channel latents
    (in 16 = 4·4 channels, out 4 per packed position → 16)."""
    torch.manual_seed(seed)
    cfg = dict(patch_size=2, in_channels=16, out_channels=4, num_layers=num_layers, attention_head_dim=8,
               num_attention_heads=2, joint_attention_dim=TEXT_DIM, axes_dims_rope=(2, 2, 4))
    return perturb(QwenImageTransformer2DModel(**{**cfg, **kw}), seed, gates=IMAGE_GATES).eval()


def tiny_qwen25_vl(tok, seed: int = 0):
    """A two-layer `Qwen2_5_VLForConditionalGeneration` (Qwen-Image encodes with Qwen2.5-VL-7B-Instruct). Its
    rotary embedding is multimodal (mrope): the sections (1, 1, 2) split the head's 8/2 frequencies over
    time / height / width; a text-only prompt uses the same position on all three. The vision tower (one
    layer) is never called for text; its token ids lie outside the vocabulary so no prompt can reach it."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    v = len(tok)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=v, rope_theta=1e6, **_ids(tok),
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=TEXT_DIM),
        hidden_size=TEXT_DIM, vocab_size=v, vision_start_token_id=v + 1, vision_end_token_id=v + 2,
        vision_token_id=v + 3, **_ids(tok),
    )
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def qwen_image_pipeline(num_layers: int | None, seed: int, **kw) -> QwenImagePipeline:
    tok = _tokenizer()
    # Qwen-Image/scheduler/scheduler_config.json: dynamic (resolution-dependent, exponential) shifting between
    # 0.5 at 256 and 0.9 at 8192 image tokens, the last sigma stretched to 0.02
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
        max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
    )
    torch.manual_seed(seed)
    # AutoencoderKLQwenImage (a causal video VAE on one frame): latents [B, 4, 1, H/4, W/4]
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4,
                                 latents_std=[1.0] * 4).eval()
    layers = {} if num_layers is None else {"num_layers": num_layers}
    pipe = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_qwen25_vl(tok, seed), tokenizer=tok,
                             transformer=tiny_qwen_image_transformer(seed=seed, **layers, **kw))
    # The pipeline drops the chat template's system prefix: 34 tokens of the real Qwen2 tokenizer, as many as
    # the word-level tokenizer makes of it (every template word it does not know is one <unk>)
    prefix = pipe.prompt_template_encode.split("{}")[0]
    pipe.prompt_template_encode_start_idx = len(tok(prefix).input_ids)
    return pipe


# --- FLUX.2 ------------------------------------------------------------------------------------------------

# Mistral's template: [SYSTEM_PROMPT] … [/SYSTEM_PROMPT][INST] … [/INST]; the pipeline passes each message's
# content as a list of {"type": "text", "text": ...} parts
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% for part in message['content'] %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT] {{ part['text'] }} [/SYSTEM_PROMPT]"
    "{% else %}[INST] {{ part['text'] }} [/INST]{% endif %}{% endfor %}{% endfor %}"
)


def tiny_flux2_transformer(num_layers: int = 3, num_single_layers: int = 3, seed: int = 0, **kw):
    """`Flux2Transformer2DModel`, 2 heads × 8 (rope axes 2 + 2 + 2 + 2), guidance-embedded as FLUX.2-dev, on
    2×2-patchified 4-channel latents (16 channels); the text is `len(FLUX2_TEXT_LAYERS)` stacked encoder layers."""
    torch.manual_seed(seed)
    cfg = dict(patch_size=1, in_channels=16, num_layers=num_layers, num_single_layers=num_single_layers,
               attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM * len(FLUX2_TEXT_LAYERS),
               axes_dims_rope=(2, 2, 2, 2), guidance_embeds=True)
    return perturb(Flux2Transformer2DModel(**{**cfg, **kw}), seed, gates=IMAGE_GATES).eval()


def tiny_mistral3(tok, seed: int = 0):
    """A two-layer `Mistral3ForConditionalGeneration` (FLUX.2-dev encodes with Mistral-Small-3.1-24B); the
    Pixtral vision tower (one layer) is never called for text."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    torch.manual_seed(seed)
    v = len(tok)
    cfg = Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=v, hidden_size=TEXT_DIM, intermediate_size=32,
                         num_hidden_layers=len(FLUX2_TEXT_LAYERS), num_attention_heads=2, num_key_value_heads=1,
                         head_dim=8, max_position_embeddings=128, rope_theta=1e9, sliding_window=None, **_ids(tok)),
        vision_config=dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, image_size=16, patch_size=8, num_channels=3),
        image_seq_length=4, vision_feature_layer=-1, image_token_index=v + 1, **_ids(tok),
    )
    return Mistral3ForConditionalGeneration(cfg).eval()


def flux2_pipeline(num_layers: int | None, seed: int, **kw) -> Flux2Pipeline:
    tok = _tokenizer(MISTRAL_TEMPLATE, add_bos=True)
    # FLUX.2-dev/scheduler/scheduler_config.json (the pipeline passes its own empirical mu)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    torch.manual_seed(seed)
    # AutoencoderKLFlux2, one level: latents [B, 4, H/2, W/2], patchified 2×2 by the pipeline to 16 channels
    # (its batch norm runs on those); vae_scale_factor 2**(levels − 1) = 2
    vae = AutoencoderKLFlux2(sample_size=16, in_channels=3, out_channels=3,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
                             use_quant_conv=False, use_post_quant_conv=False).eval()
    layers = {} if num_layers is None else {"num_layers": num_layers}
    return Flux2Pipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_mistral3(tok, seed), tokenizer=tok,
                         transformer=tiny_flux2_transformer(seed=seed, **layers, **kw))


# --- Z-Image -----------------------------------------------------------------------------------------------

# Qwen3's template for one user turn with the generation prompt (what `enable_thinking=True` leaves)
QWEN3_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }} {{ message['content'] }} <|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def tiny_z_image_transformer(num_layers: int = 6, seed: int = 0, **kw):
    """`ZImageTransformer2DModel`: dim 32 = 2 heads × 16 (rope axes 8 + 4 + 4), patch 2 on 16-channel latents,
    one noise-refiner and one context-refiner block before the `num_layers` main ones. Its pad tokens are
    `torch.empty` in diffusers: seeded values here, so a run is reproducible."""
    torch.manual_seed(seed)
    cfg = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=num_layers,
               n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=TEXT_DIM, axes_dims=[8, 4, 4],
               axes_lens=[256, 32, 32])
    model = ZImageTransformer2DModel(**{**cfg, **kw})
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for pad in (model.x_pad_token, model.cap_pad_token):
            pad.copy_(torch.randn(pad.shape, generator=g))
    return perturb(model, seed, gates=IMAGE_GATES).eval()


def tiny_qwen3(tok, seed: int = 0):
    """A two-layer `Qwen3Model` (Z-Image encodes with Qwen3-4B and reads its second-to-last hidden state)."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    cfg = Qwen3Config(hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=8, vocab_size=len(tok), max_position_embeddings=128, **_ids(tok))
    return Qwen3Model(cfg).eval()


def z_image_pipeline(num_layers: int | None, seed: int, **kw) -> ZImagePipeline:
    tok = _tokenizer(QWEN3_TEMPLATE)
    # Z-Image-Turbo/scheduler/scheduler_config.json: shift 3.0, no dynamic shifting
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False)
    layers = {} if num_layers is None else {"num_layers": num_layers}
    # the FLUX.1 VAE's factors (Z-Image decodes with it), 16 latent channels, one level (1/2)
    vae = tiny_vae(seed, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159)
    return ZImagePipeline(scheduler=scheduler, vae=vae, text_encoder=tiny_qwen3(tok, seed), tokenizer=tok,
                          transformer=tiny_z_image_transformer(seed=seed, **layers, **kw))


# --- entry points ------------------------------------------------------------------------------------------

def tiny_image_pipeline(kind: str, num_layers: int | None = None, seed: int = 0, **transformer_kwargs):
    """A real `QwenImagePipeline` / `Flux2Pipeline` / `ZImagePipeline` assembled offline from tiny parts.

    `num_layers`: Qwen-Image's and Z-Image's main blocks (6 by default; Z-Image also runs one noise- and one
    context-refiner block before them), FLUX.2's dual-stream blocks (3, plus `num_single_layers=3`
    single-stream ones). Call it with `**image_call_kwargs(kind)`.
    """
    builders = {"qwen-image": qwen_image_pipeline, "flux2": flux2_pipeline, "z-image": z_image_pipeline}
    if kind not in builders:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    return builders[kind](num_layers, seed, **transformer_kwargs)


def image_call_kwargs(kind: str, **overrides) -> dict:
    """Keyword arguments of a small call of `tiny_image_pipeline(kind)`: 16 image tokens, the tiny text length.

    Guidance as the family's users call it: Qwen-Image's true CFG (the pipeline's scale 4.0) runs when the call
    also passes `negative_prompt=` (one per prompt), else one call per step; FLUX.2's embedded guidance 4.0 and
    its encoder layers; Z-Image's batched CFG 5.0 (its pipeline default). Pass prompts by keyword (`prompt=`:
    FLUX.2's first positional argument is `image`); `output_type="latent"` gives the latents (Qwen-Image,
    FLUX.2: packed tokens [B, 16, 16]; Z-Image: [B, 16, 8, 8]).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    kw = dict(height=PIXELS[kind], width=PIXELS[kind], max_sequence_length=TEXT_LEN[kind])
    if kind == "flux2":
        kw.update(guidance_scale=4.0, text_encoder_out_layers=FLUX2_TEXT_LAYERS)
    elif kind == "z-image":
        kw.update(guidance_scale=5.0)
    kw.update(overrides)
    return kw
