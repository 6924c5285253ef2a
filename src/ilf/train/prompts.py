"""What `train_corrector` calls the user's pipeline with: prompts in batches, one seed per prompt.

A prompt is a string (`prompt=`), a class id (`class_labels=`, class-conditional pipelines such as DiT) or a
dict of pipeline-call kwargs (e.g. precomputed `prompt_embeds`). Strings and class ids are batched as the
pipeline batches them; dicts are batched by concatenating their tensors along the first axis (the batch) when
they share keys and shapes, else called one by one. Every prompt gets its own generator, seeded from the run's
seed and the prompt's index, so its noise is the same whatever the batching and on every rank.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ILFError


def read_prompts(path: Path) -> list:
    """One prompt per non-empty line of a text file (a line of digits is a class id)."""
    path = Path(path)
    if not path.is_file():
        raise ILFError(f"--prompts {path}: no such file; give a text file with one prompt per line")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    prompts = [int(ln) if ln.isdigit() else ln for ln in lines if ln]
    if not prompts:
        raise ILFError(f"--prompts {path}: the file holds no prompt; write one prompt per line")
    return prompts


def _kind(p) -> str | None:
    if isinstance(p, bool):
        return None
    return next((name for name, cls in (("str", str), ("int", int), ("dict", dict)) if isinstance(p, cls)), None)


def check_prompts(prompts) -> list:
    if isinstance(prompts, (str, int, dict)) or not hasattr(prompts, "__len__"):
        raise ILFError("prompts must be a list (of strings, class ids or dicts of pipeline-call kwargs)")
    prompts = list(prompts)
    if not prompts:
        raise ILFError("prompts is empty; give at least one prompt (32 to 128 train a corrector well, "
                       "docs/train-your-corrector.md)")
    kinds = {_kind(p) for p in prompts}
    if None in kinds or len(kinds) != 1:
        raise ILFError(f"prompts must all be strings, all class ids or all dicts of pipeline-call kwargs; got "
                       f"{sorted({type(p).__name__ for p in prompts})}")
    return prompts


def _concat(dicts: list[dict]) -> dict | None:
    """Dicts of call kwargs merged into one batched call, or None if they do not merge."""
    keys = set(dicts[0])
    if any(set(d) != keys for d in dicts):
        return None
    out = {}
    for k in keys:
        vals = [d[k] for d in dicts]
        if all(torch.is_tensor(v) for v in vals):
            if any(v.dim() == 0 or v.shape[1:] != vals[0].shape[1:] for v in vals):
                return None
            out[k] = torch.cat(vals)
        elif all(isinstance(v, list) for v in vals):
            out[k] = [x for v in vals for x in v]
        elif all(v == vals[0] for v in vals):
            out[k] = vals[0]
        else:
            return None
    return out


def prompt_batches(prompts: list, batch: int) -> list[tuple[list[int], dict]]:
    """[(prompt indices, the call kwargs carrying them)], `batch` prompts per call."""
    out = []
    for lo in range(0, len(prompts), batch):
        idx = list(range(lo, min(lo + batch, len(prompts))))
        chunk = [prompts[i] for i in idx]
        if isinstance(chunk[0], str):
            out.append((idx, {"prompt": chunk}))
        elif isinstance(chunk[0], int):
            out.append((idx, {"class_labels": chunk}))
        else:
            merged = _concat(chunk) if len(chunk) > 1 else dict(chunk[0])
            if merged is None:
                out += [([i], dict(prompts[i])) for i in idx]
            else:
                out.append((idx, merged))
    return out


def generators(indices: list[int], seed: int, offset: int = 0, device="cpu") -> list[torch.Generator]:
    """One generator per prompt: its noise depends on (seed, prompt index, offset) only."""
    return [torch.Generator(device).manual_seed(seed * 7919 + 104_729 * offset + i) for i in indices]
