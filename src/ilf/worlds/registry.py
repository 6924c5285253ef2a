"""Load the worlds' shipped models as ordinary diffusers objects.

    pipe = load_pipeline("shapes")
    images = pipe("a small red circle above a large blue square", **CALL_KWARGS["shapes"]).images

    pipe = load_pipeline("digits")
    images = pipe(class_labels=pipe.get_label_ids(["3", "7"]), **CALL_KWARGS["digits"]).images

shapes -> `PixArtAlphaPipeline` (MiniLM tokenizer + text encoder, our VAE, our `PixArtTransformer2DModel`);
digits -> `DiTPipeline` (our VAE, our `DiTTransformer2DModel`, id2label "0".."9"). Both use
`DPMSolverMultistepScheduler()` (DPM-Solver++ 2M on the default linear 1000-step schedule we trained with).
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
)

from ilf.worlds import digits, paths, text_encoder

# Keyword arguments every call of a world's pipeline should pass. PixArt: our captions need at most 14 tokens
# (120 would only cost time), the caption cleaner needs bs4/ftfy, and resolution binning only knows 256px+.
CALL_KWARGS = {
    "shapes": {"num_inference_steps": 20, "guidance_scale": 4.5, "max_sequence_length": text_encoder.MAX_LENGTH,
               "clean_caption": False, "use_resolution_binning": False},
    "digits": {"num_inference_steps": 20, "guidance_scale": 4.0},
}
_TRANSFORMER_CLASS = {"shapes": PixArtTransformer2DModel, "digits": DiTTransformer2DModel}


def _check_world(world: str) -> None:
    if world not in paths.WORLDS:
        raise ValueError(f"world must be one of {paths.WORLDS}, got {world!r}")


def load_vae(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(paths.VAE, torch_dtype=dtype).to(device).eval()


def load_transformer(world: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    _check_world(world)
    cls = _TRANSFORMER_CLASS[world]
    return cls.from_pretrained(paths.transformer(world), torch_dtype=dtype).to(device).eval()


def build_pipeline(world: str, transformer, vae: AutoencoderKL, device="cpu", dtype=torch.float32):
    """Assemble the world's real diffusers pipeline around given modules (training previews use this)."""
    _check_world(world)
    scheduler = DPMSolverMultistepScheduler()  # defaults = DDPMScheduler's linear betas, 1000 steps; DPM-Solver++
    if world == "shapes":
        pipe = PixArtAlphaPipeline(
            tokenizer=text_encoder.load_tokenizer(), text_encoder=text_encoder.load_text_encoder(device, dtype),
            vae=vae, transformer=transformer, scheduler=scheduler,
        )
    else:
        pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label=digits.ID2LABEL)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_pipeline(world: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The world's pipeline with the shipped weights, built with ordinary `from_pretrained` from package data."""
    return build_pipeline(world, load_transformer(world, device, dtype), load_vae(device, dtype), device, dtype)
