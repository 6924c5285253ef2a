"""`ilf precompute`: encode a data set once with the backbone's frozen VAE and text encoder.

Writes `shard-XXXXX.safetensors` files (rows of fp16 latents with fp16 caption embeddings + masks, or class
labels), `null_text.safetensors` (the empty caption, PixArt's unconditional input) and `shards.json`.
Training on shards skips the VAE and text encoder entirely — the fast path PixArt's own training takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..errors import ILFError
from ..io import atomic_write_text
from ..loading import load_pipeline
from .data import NULL_TEXT, SHARD_META, open_source
from .encode import Encoder, default_resolution


def precompute(pipeline: str, data: Path, out: Path, *, data_type: str = "auto", resolution: int | None = None,
               batch_size: int = 32, shard_size: int = 4096, max_sequence_length: int | None = None,
               device: str | None = None, dtype: str = "fp32", progress: bool = True) -> dict:
    from ..dtypes import torch_dtype

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, _ = load_pipeline(pipeline=pipeline, device=device, dtype=torch_dtype(dtype))
    source = open_source(data, data_type, resolution, None, 0)
    if source.encoded:
        raise ILFError(f"{data} already holds precomputed shards; pass them to `ilf train --data` directly")
    default_resolution(source, pipe)
    encoder = Encoder(pipe, source.kind, max_sequence_length)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped, shards, rows, pending = [0], [], 0, []
    n = len(source)  # every readable sample once; a bad one is counted and left out (not duplicated)

    def write(batch: dict) -> None:
        name = f"shard-{len(shards):05d}.safetensors"
        save_file({k: v.contiguous() for k, v in batch.items()}, str(out / (name + ".tmp")))
        (out / (name + ".tmp")).replace(out / name)
        shards.append({"file": name, "rows": int(batch["latents"].shape[0])})

    def flush(final: bool = False) -> None:
        """Write every full shard of `shard_size` rows held in `pending` (and the remainder if final)."""
        nonlocal pending
        if not pending:
            return
        held = {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
        n_held = held["latents"].shape[0]
        cut = 0
        while n_held - cut >= shard_size or (final and cut < n_held):
            write({k: v[cut : cut + shard_size] for k, v in held.items()})
            cut += shard_size
        pending = [{k: v[cut:] for k, v in held.items()}] if cut < n_held else []

    bar = tqdm(total=n, desc="ilf precompute", disable=not progress)
    for start in range(0, n, batch_size):
        samples = []
        for i in range(start, min(start + batch_size, n)):
            s = source.read(i)
            if s is None:
                skipped[0] += 1
            else:
                samples.append(s)
        bar.update(min(batch_size, n - start))
        if not samples:
            continue
        enc = encoder.encode(samples)
        row = {"latents": enc["latents"].half().cpu()}
        if source.kind == "text":  # embeddings in fp16, masks in int8
            row.update({k: (v.half() if v.is_floating_point() else v.to(torch.int8)).cpu()
                        for k, v in enc.items() if k != "latents"})
        else:
            row["class_labels"] = enc["class_labels"].long().cpu()
        pending.append(row)
        rows += len(samples)
        flush()
    flush(final=True)
    bar.close()
    if source.kind == "text":
        save_file({k: (v.float() if v.is_floating_point() else v).cpu().contiguous()
                   for k, v in encoder.null_text().items()}, str(out / NULL_TEXT))
    meta = {"kind": source.kind, "rows": rows, "skipped": skipped[0], "shards": shards,
            "pipeline": str(pipeline), "resolution": source.resolution,
            "transformer_class": type(pipe.transformer).__name__}
    atomic_write_text(out / SHARD_META, json.dumps(meta, indent=2) + "\n")  # last: marks the set complete
    if skipped[0]:
        print(f"skipped {skipped[0]} unreadable samples")
    return meta
