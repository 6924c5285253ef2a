"""Where images come from: a diffusers pipeline plus how to call it (`Source`).

Three kinds:
* `world` — an embedded world's shipped backbone (`ilf.worlds`: shapes → PixArt, digits → DiT);
* `pipeline` — a real checkpoint folder or hub id (PixArt-α/Σ, DiT-XL/2) loaded with `from_pretrained`;
* `tiny` — `ilf.tiny`'s tiny stand-ins with random weights (smoke runs and tests): PixArt-α/Σ, DiT, and
  (`ilf.tiny_mmdit`) SD3, Flux (schnell- and dev-style) and Sana, each with its stock scheduler.

A source's `__call__(items, steps)` returns the images of those items as [B, 3, H, W] float in [0, 1], each
from its own seed's generator (CPU generators, so the initial noise is the same on any device and does not
depend on how items are batched).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ilf.adapters import get_adapter
from ilf.choices import TINY_KINDS
from ilf.errors import ILFError
from ilf.loading import load_pipeline
from ilf.worlds.paths import FLOW_WORLDS

from .prompts import Condition, Item

# blocks of a --tiny model by default: the real architecture's depth (PixArt-XL-2, DiT-XL/2, Sana-600M: 28;
# SD3-medium: 24; FLUX.1: 19 dual-stream + 38 single-stream)
TINY_LAYERS = {"sd3": 24, "flux": 19 + 38, "flux-dev": 19 + 38}
DEFAULT_GUIDANCE = {"text": 4.5, "class": 4.0}  # the pipelines' own defaults


@dataclass
class Source:
    """A pipeline and the keyword arguments every call of it passes."""

    pipe: Any
    name: str
    conditioning: str  # "text" (prompts) or "class" (class labels)
    call_kwargs: dict = field(default_factory=dict)
    world: str | None = None
    kind: str = "pipeline"  # "world" | "pipeline" | "tiny"

    @property
    def transformer(self):
        return self.pipe.transformer

    @property
    def num_blocks(self) -> int:
        return len(get_adapter(self.pipe.transformer).blocks(self.pipe.transformer))

    @property
    def device(self) -> torch.device:
        return next(self.pipe.transformer.parameters()).device

    @property
    def guidance_scale(self) -> float:
        return float(self.call_kwargs.get("guidance_scale", DEFAULT_GUIDANCE[self.conditioning]))

    @property
    def cfg_batch(self) -> str | None:
        """How the pipeline does classifier-free guidance: "uncond,cond" / "cond,uncond" (both branches batched in
        one transformer call: PixArt, SD3, Sana / DiT), "cond|uncond" (two calls per step, cond first: Flux's true
        CFG, `true_cfg_scale > 1` with a negative prompt), None (no CFG; Flux's `guidance_scale` is an embedded
        guidance, not CFG)."""
        if "true_cfg_scale" in inspect.signature(type(self.pipe).__call__).parameters:
            true_cfg = float(self.call_kwargs.get("true_cfg_scale", 1.0)) > 1.0
            has_negative = self.call_kwargs.get("negative_prompt") is not None
            return "cond|uncond" if true_cfg and has_negative else None
        if self.guidance_scale <= 1.0:
            return None
        return "uncond,cond" if self.conditioning == "text" else "cond,uncond"

    def __call__(self, items: list[Item], steps: int) -> torch.Tensor:
        """Images of `items` with `steps` denoising steps: [B, 3, H, W] float32 in [0, 1], on the CPU."""
        generators = [torch.Generator("cpu").manual_seed(it.seed) for it in items]
        kwargs = {**self.call_kwargs, "num_inference_steps": steps, "generator": generators, "output_type": "np"}
        with torch.inference_mode():
            if self.conditioning == "text":
                if any(it.prompt is None for it in items):
                    raise ILFError(f"{self.name} is text-to-image; give prompts, not class labels")
                prompts = [it.prompt for it in items]
                if self.world in FLOW_WORLDS:  # an encoder-less pipeline: the world's embeddings come in
                    from ilf.worlds.registry import prompt_kwargs

                    out = self.pipe(**prompt_kwargs(self.world, prompts, device=self.device), **kwargs)
                else:
                    out = self.pipe(prompt=prompts, **kwargs)
            else:
                if any(it.class_label is None for it in items):
                    raise ILFError(f"{self.name} is class-conditional; give class ids (ints), not prompts")
                out = self.pipe(class_labels=[it.class_label for it in items], **kwargs)
        images = np.asarray(out.images, dtype=np.float32)  # [B, H, W, 3] in [0, 1]
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # [B, 3, H, W]

    def describe(self) -> dict:
        cfg = self.pipe.transformer.config
        return {"name": self.name, "kind": self.kind, "world": self.world, "conditioning": self.conditioning,
                "pipeline_class": type(self.pipe).__name__, "transformer_class": type(self.pipe.transformer).__name__,
                "num_blocks": self.num_blocks, "sample_size": cfg.get("sample_size"),
                "dtype": str(next(self.pipe.transformer.parameters()).dtype), "device": str(self.device),
                "scheduler": type(self.pipe.scheduler).__name__,
                "call_kwargs": {k: v for k, v in self.call_kwargs.items() if isinstance(v, (int, float, str, bool))}}


def _conditioning_of(pipe) -> str:
    from diffusers import DiTPipeline

    return "class" if isinstance(pipe, DiTPipeline) else "text"


def load_world_source(world: str, device="cpu", dtype=torch.float32) -> Source:
    """An embedded world's pipeline (needs the world's shipped backbone in `ilf.worlds`)."""
    pipe, call = load_pipeline(world=world, device=device, dtype=dtype)
    kwargs = {k: v for k, v in call.items() if k != "num_inference_steps"}
    return Source(pipe, f"world:{world}", _conditioning_of(pipe), kwargs, world=world, kind="world")


def load_pipeline_source(path: str, device="cpu", dtype=torch.float32, **call_kwargs) -> Source:
    """A real diffusers pipeline (PixArt-α/Σ, DiT, SD3, Flux, Sana) from a folder or hub id (offline: from the
    local cache)."""
    pipe, call = load_pipeline(pipeline=path, device=device, dtype=dtype)
    call.update({k: v for k, v in call_kwargs.items() if v is not None})
    return Source(pipe, path, _conditioning_of(pipe), call)


def load_tiny_source(kind: str = "pixart", num_layers: int | None = None, device="cpu", seed: int = 0,
                     **call_kwargs) -> Source:
    """`ilf.tiny`'s tiny pipeline with random weights: every code path a checkpoint takes, in seconds.

    `num_layers`: blocks in all (default `TINY_LAYERS`, else 28); a tiny Flux gets a third of them as
    dual-stream blocks and the rest as single-stream ones, as FLUX.1 has (19 + 38)."""
    from ilf.tiny import pixart_call_kwargs, tiny_pipeline
    from ilf.tiny_mmdit import mmdit_call_kwargs

    if kind not in TINY_KINDS:
        raise ILFError(f"unknown tiny pipeline {kind!r}; choose one of {', '.join(TINY_KINDS)}")
    n = num_layers or TINY_LAYERS.get(kind, 28)
    dual = max(1, n // 3) if "flux" in kind else n
    layers = {"num_layers": dual, **({"num_single_layers": n - dual} if "flux" in kind else {})}
    full = {"pixart": "pixart-alpha"}.get(kind, kind)
    pipe = tiny_pipeline(full, seed=seed, **layers).to(device)
    pipe.set_progress_bar_config(disable=True)
    kwargs = pixart_call_kwargs() if "pixart" in kind else mmdit_call_kwargs(kind) if kind != "dit" else {}
    kwargs.update({k: v for k, v in call_kwargs.items() if v is not None})
    return Source(pipe, f"tiny:{kind}", _conditioning_of(pipe), kwargs, kind="tiny")


def default_conditions(source: Source, n: int) -> list[Condition]:
    """Conditions when no prompts file is given: a world's held-out prompts / all digit classes, or fixed tiny
    prompts / class ids."""
    if source.world in ("shapes", "shapes-flow"):
        from ilf.worlds import shapes

        return [(f"s{i:04d}", p) for i, p in enumerate(shapes.eval_prompts(n))]
    if source.world == "digits":
        return [(f"d{c}", c) for c in range(10)]
    if source.conditioning == "class":
        if source.kind == "pipeline":
            raise ILFError(f"{source.name} is class-conditional: pass --prompts with class ids (one per line)")
        return [(f"c{c:03d}", c) for c in (207, 360, 387, 974, 88, 979, 417, 279)]  # DiT's sample classes
    if source.kind == "pipeline":
        raise ILFError(f"pass --prompts for {source.name} (e.g. ImageReward's benchmark-prompts.json or MJHQ-30K's "
                       "meta_data.json)")
    from ilf.tiny_parts import WORDS

    rng = np.random.default_rng(0)
    return [(f"t{i:04d}", " ".join(rng.choice(WORDS, size=6))) for i in range(max(n, 1))]
