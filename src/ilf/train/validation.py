"""Validation grids during training: plain steps vs ILF, same seeds, one PNG per checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..runtime.ilf_loop import ILFRuntime
from ..loading import stock_call_kwargs
from .config import TrainConfig

ROWS = (("plain 20", 20, "none"), ("plain 10", 10, "none"), ("ILF 10", 10, None))


def _generate(pipe, cfg: TrainConfig, steps: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    if type(pipe).__name__ == "DiTPipeline":
        labels = [int(p) for p in cfg.validation_prompts] or [0, 1, 2, 3]
        out = pipe(class_labels=labels, num_inference_steps=steps, generator=g, output_type="np")
    else:
        prompts = cfg.validation_prompts or ["a photo"]
        kw, inputs = stock_call_kwargs(pipe), {"prompt": prompts}
        if cfg.world is not None:
            from ..worlds.paths import FLOW_WORLDS
            from ..worlds.registry import CALL_KWARGS, prompt_kwargs

            kw.update({k: v for k, v in CALL_KWARGS[cfg.world].items() if k != "num_inference_steps"})
            if cfg.world in FLOW_WORLDS:  # an encoder-less pipeline: the world's caption embeddings come in
                inputs = prompt_kwargs(cfg.world, prompts, device=pipe.device)
        out = pipe(**inputs, num_inference_steps=steps, generator=g, output_type="np", **kw)
    return out.images  # [N, H, W, 3] in [0, 1]


@torch.no_grad()
def save_validation_grid(pipe, runtime: ILFRuntime, cfg: TrainConfig, step: int, seed: int = 0):
    """Rows = plain 20 / plain 10 / ILF 10 with the feedback's default schedule; columns = prompts."""
    saved = runtime.config
    rows = []
    try:
        for name, steps, plan in ROWS:
            runtime.update(feedback_steps=plan if plan else saved.feedback_steps)
            rows.append((name, _generate(pipe, cfg, steps, seed)))
    finally:
        runtime.update(feedback_steps=saved.feedback_steps)
    n, (h, w) = rows[0][1].shape[0], rows[0][1].shape[1:3]
    label_w = 70
    grid = Image.new("RGB", (label_w + n * w, len(rows) * h), "white")
    draw = ImageDraw.Draw(grid)
    for r, (name, imgs) in enumerate(rows):
        draw.text((4, r * h + h // 2 - 5), name, fill="black")
        for c, img in enumerate(imgs):
            grid.paste(Image.fromarray((img * 255).round().astype(np.uint8)), (label_w + c * w, r * h))
    path = cfg.output_dir / "validation" / f"step-{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path
