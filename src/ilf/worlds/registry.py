"""Load the worlds' shipped models as ordinary diffusers objects.

    pipe = load_pipeline("shapes")
    images = pipe("a large red circle in the center").images          # the world's call defaults (CALL_KWARGS)

    pipe = load_pipeline("digits")
    images = pipe(class_labels=pipe.get_label_ids(["3", "7"])).images

    pipe = load_pipeline("shapes-flow")
    images = pipe("a large red circle in the center").images          # MiniLM embeddings made by prompt_kwargs

Each pipeline is the stock diffusers class with the world's call defaults filled in: a subclass of the same name
(`type(pipe).__mro__[1]` is diffusers' own) whose `__call__` adds what `CALL_KWARGS[world]` holds and the caller
left out (PixArt's resolution binning knows no 32 px bins; the worlds were trained at 16 caption tokens, 20 steps,
their own guidance), and, on shapes-flow, turns prompt strings into the MiniLM embeddings its pipeline takes.
Explicit arguments always win; `save_pretrained` records the stock class.

shapes -> `PixArtAlphaPipeline` (MiniLM tokenizer + text encoder, our VAE, our `PixArtTransformer2DModel`);
digits -> `DiTPipeline` (our VAE, our `DiTTransformer2DModel`, id2label "0".."9"). Both use
`DPMSolverMultistepScheduler()` (DPM-Solver++ 2M on the default linear 1000-step schedule we trained with).
shapes-flow -> `StableDiffusion3Pipeline` (our VAE, our rectified-flow `SD3Transformer2DModel`,
`FlowMatchEulerDiscreteScheduler`) with its CLIP/T5 text encoders and tokenizers set to None: the caption is
MiniLM, encoded by `prompt_kwargs` into the pipeline's `prompt_embeds`/`pooled_prompt_embeds` arguments.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from ilf.worlds import digits, paths, text_encoder

# Keyword arguments every call of a world's pipeline should pass. PixArt: our captions need at most 14 tokens
# (120 would only cost time), the caption cleaner needs bs4/ftfy, and resolution binning only knows 256px+.
CALL_KWARGS = {
    "shapes": {"num_inference_steps": 20, "guidance_scale": 4.5, "max_sequence_length": text_encoder.MAX_LENGTH,
               "clean_caption": False, "use_resolution_binning": False},
    "digits": {"num_inference_steps": 20, "guidance_scale": 4.0},
    # 20 Euler steps of the flow. Guidance picked on 64 held-out tuning prompts (train_flow_backbone.tuning_prompts,
    # not the test prompts): 1.5–2 lead on alignment (0.99) and on an evaluator-feature Fréchet distance to real
    # renders at 5, 10 and 20 steps; 3 and more over-saturate (at 5 steps 4.5 drops alignment to 0.51).
    "shapes-flow": {"num_inference_steps": 20, "guidance_scale": 2.0},
}
_TRANSFORMER_CLASS = {"shapes": PixArtTransformer2DModel, "digits": DiTTransformer2DModel,
                      "shapes-flow": SD3Transformer2DModel}
# FlowMatchEulerDiscreteScheduler's timestep shift for shapes-flow: sigma -> shift·sigma / (1 + (shift-1)·sigma).
# SD3 uses 3.0 because its 128×128×16 latents keep their layout under much noise and need more steps at high sigma;
# our 8×8×4 latents (256 numbers) lose it at far lower noise, so no shift (1.0): Euler steps evenly spaced in sigma.
# Measured on the tuning prompts: 1.0 ties 3.0 at 20 steps and beats it at 5 and 10 (e.g. alignment 0.96 vs 0.89
# at 5 steps, guidance 3), and 0.5 / 2.0 change nothing measurable at 20 steps.
FLOW_SHIFT = 1.0


_WORLD_CLASSES: dict[tuple[type, str], type] = {}


def _with_world_defaults(pipe, world: str):
    """Give `pipe` its world's call defaults (see the module doc), in place; returns it."""
    import functools

    base = type(pipe)
    key = (base, world)
    if key not in _WORLD_CLASSES:
        defaults = CALL_KWARGS[world]
        flow = world in paths.FLOW_WORLDS

        @functools.wraps(base.__call__)  # the stock signature, for inspect and help()
        def __call__(self, *args, **kwargs):
            if flow:
                args, kwargs = _flow_prompts(self, world, args, kwargs)
            return base.__call__(self, *args, **{**defaults, **kwargs})

        _WORLD_CLASSES[key] = type(base.__name__, (base,), {
            "__call__": __call__, "__module__": __name__, "__qualname__": base.__name__, "world": world,
            "__doc__": f"diffusers' {base.__name__} with the {world!r} world's call defaults ({defaults}).",
        })
    pipe.__class__ = _WORLD_CLASSES[key]
    return pipe


def _flow_prompts(pipe, world: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A flow world's pipeline has no text encoder: prompt strings become `prompt_kwargs`' embeddings."""
    prompt = args[0] if args else kwargs.pop("prompt", None)
    args = args[1:]
    if prompt is None or kwargs.get("prompt_embeds") is not None:
        return (prompt, *args) if prompt is not None else args, kwargs
    negative = kwargs.pop("negative_prompt", None) or ""
    if not isinstance(negative, str):
        raise ValueError(f"the {world!r} pipeline takes one negative_prompt string for every image, got {negative!r}")
    count = kwargs.pop("num_images_per_prompt", None) or 1
    kwargs.update(prompt_kwargs(world, prompt, negative_prompt=negative, num_images_per_prompt=count,
                                device=pipe._execution_device, dtype=pipe.transformer.dtype))
    return args, kwargs


def _check_world(world: str) -> None:
    if world not in paths.BACKBONE_WORLDS:
        raise ValueError(f"world must be one of {paths.BACKBONE_WORLDS}, got {world!r}")


def load_vae(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(paths.VAE, torch_dtype=dtype).to(device).eval()


def load_transformer(world: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    _check_world(world)
    cls = _TRANSFORMER_CLASS[world]
    return cls.from_pretrained(paths.transformer(world), torch_dtype=dtype).to(device).eval()


def build_pipeline(world: str, transformer, vae: AutoencoderKL, device="cpu", dtype=torch.float32):
    """Assemble the world's real diffusers pipeline around given modules (training previews use this)."""
    _check_world(world)
    if world in paths.FLOW_WORLDS:
        return _with_world_defaults(_build_flow_pipeline(transformer, vae, device), world)
    scheduler = DPMSolverMultistepScheduler()  # defaults = DDPMScheduler's linear betas, 1000 steps; DPM-Solver++
    if world == "shapes":
        pipe = PixArtAlphaPipeline(
            tokenizer=text_encoder.load_tokenizer(), text_encoder=text_encoder.load_text_encoder(device, dtype),
            vae=vae, transformer=transformer, scheduler=scheduler,
        )
    else:
        pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label=digits.ID2LABEL)
    pipe.set_progress_bar_config(disable=True)
    return _with_world_defaults(pipe.to(device), world)


def load_pipeline(world: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The world's pipeline with the shipped weights, built with ordinary `from_pretrained` from package data."""
    return build_pipeline(world, load_transformer(world, device, dtype), load_vae(device, dtype), device, dtype)


def _build_flow_pipeline(transformer, vae: AutoencoderKL, device) -> StableDiffusion3Pipeline:
    # SD3's pipeline decodes `latents / scaling_factor + shift_factor`; our VAE's latents are posterior means ·
    # scaling_factor with no shift (its config says shift_factor=None, which that sum cannot take). A shift of
    # 0.0 is the same decode; the VAE itself never reads the field, so recording it changes nothing else.
    if vae.config.shift_factor is None:
        vae.register_to_config(shift_factor=0.0)
    elif vae.config.shift_factor != 0.0:
        raise ValueError(f"the shapes-flow latents are unshifted; got a VAE with shift_factor "
                         f"{vae.config.shift_factor}")
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=FLOW_SHIFT),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
        tokenizer_3=None,  # the caption comes in as MiniLM embeddings: see prompt_kwargs
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def prompt_kwargs(world: str, prompts: str | list[str], negative_prompt: str = "", num_images_per_prompt: int = 1,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """String prompts -> the caption arguments of a flow world's `StableDiffusion3Pipeline` call.

    Returns {"prompt_embeds": [B, L, 384], "pooled_prompt_embeds": [B, 384], "negative_prompt_embeds",
    "negative_pooled_prompt_embeds"} with B = len(prompts) · num_images_per_prompt and L = MiniLM's 16 tokens,
    made exactly as in training (`text_encoder.joint_context`); the negative is `negative_prompt` ("" = the
    unconditional caption trained by caption dropout). Pass `num_images_per_prompt` here, not to the pipeline: it
    only repeats embeddings it computed itself.
    """
    if world not in paths.FLOW_WORLDS:
        raise ValueError(f"prompt_kwargs is for the flow worlds {paths.FLOW_WORLDS}, whose pipeline has no text "
                         f"encoder; the {world!r} pipeline takes prompt strings itself")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    states, mask = text_encoder.encode(prompts + [negative_prompt])  # [P + 1, L, 384], [P + 1, L]
    embeds, pooled = (t.to(device, dtype) for t in text_encoder.joint_context(states, mask))
    k, n = num_images_per_prompt, len(prompts) * num_images_per_prompt
    return {"prompt_embeds": embeds[:-1].repeat_interleave(k, 0),
            "pooled_prompt_embeds": pooled[:-1].repeat_interleave(k, 0),
            "negative_prompt_embeds": embeds[-1:].repeat(n, 1, 1),  # one null caption for every image
            "negative_pooled_prompt_embeds": pooled[-1:].repeat(n, 1)}
