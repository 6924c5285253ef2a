"""Every family's tiny real pipeline, called as its users call it (shared by the half-precision, host-sync and
planner tests). A case: (pipeline kind, call options, transformer calls per step)."""

from __future__ import annotations

import torch

from ilf.tiny import call_kwargs, pixart_call_kwargs, tiny_pipeline

CASES = {
    "pixart-alpha": ("pixart-alpha", {"guidance_scale": 4.5}, 1),
    "dit": ("dit", {"guidance_scale": 4.0}, 1),
    "sd3": ("sd3", {"guidance_scale": 5.0}, 1),
    "sana": ("sana", {"guidance_scale": 4.5}, 1),
    "flux": ("flux", {}, 1),
    "flux-dev": ("flux-dev", {"guidance_scale": 3.5}, 1),
    "flux-true-cfg": ("flux", {"negative_prompt": ["", ""], "true_cfg_scale": 3.0}, 2),
    # video ([B, C, F, H, W] latents): CFG as two calls per step, cond then uncond (Wan: guidance 5.0 from
    # call_kwargs; HunyuanVideo 1.5: the pipeline's guider, 6.0)
    "wan": ("wan", {}, 2),
    "hunyuan-video-1.5": ("hunyuan-video-1.5", {}, 2),
}
LAYERS = {"flux": 3, "flux-dev": 3}  # Flux: 3 dual + 3 single blocks; the others 6 blocks


def make_pipe(case: str, dtype=torch.float32):
    kind, options, calls = CASES[case]
    pipe = tiny_pipeline(kind) if kind in LAYERS else tiny_pipeline(kind, num_layers=6)
    if dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.kind, pipe.options, pipe.calls_per_step = kind, options, calls
    return pipe


def run(pipe, steps: int = 5) -> torch.Tensor:
    """The final latents of a 2-prompt (DiT: 2-class) run from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    if pipe.kind == "dit":
        out = pipe(class_labels=[1, 7], num_inference_steps=steps, generator=g, output_type="latent", **pipe.options)
    elif pipe.kind.startswith("pixart"):
        out = pipe(["a red cat above a dog", "a blue square"], num_inference_steps=steps, generator=g,
                   output_type="latent", height=16, width=16, **pixart_call_kwargs(), **pipe.options)
    else:
        out = pipe(["a red cat above a dog", "a blue square"], num_inference_steps=steps, generator=g,
                   output_type="latent", **call_kwargs(pipe.kind), **pipe.options)
    return torch.as_tensor(out.frames if hasattr(out, "frames") else out.images)  # video pipelines: .frames
