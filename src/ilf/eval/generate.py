"""Generate a set of items into a folder of PNGs, sharded across processes with `accelerate`.

    ilf eval --pipeline PixArt-alpha/PixArt-XL-2-512x512 --prompts meta_data.json --method ilf:10,feedback=fb/ ...
    accelerate launch -m ilf.cli eval ...        # the same, one shard of the items per GPU

Each process generates its contiguous share (`PartialState().split_between_processes`) and writes
`{item.id}.png`; item i always uses seed `base_seed + i`, so the union of the shards is exactly what one
process would have written. Files are 8-bit PNGs: every metric reads the same quantised images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ilf.eval.metrics.images import save_images

from .prompts import Item
from .sources import Source


def get_state():
    """accelerate's process state: one process, or this process's share under `accelerate launch` / `torchrun`
    (GPUs: NCCL; without CUDA: gloo, so a CPU-only `torchrun --nproc_per_node 2` shards too)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def batched(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def generate(
    source: Source,
    items: list[Item],
    steps: int,
    out_dir: str | Path,
    *,
    batch_size: int = 4,
    progress: bool = True,
    desc: str = "generate",
    before_call: Callable[[], None] | None = None,
    after_call: Callable[[list[Item]], None] | None = None,
    state=None,
    skip_existing: bool = False,
) -> list[Path]:
    """Generate this process's share of `items` with `steps` steps into `out_dir/{id}.png`.

    `before_call` runs before every pipeline call (a method resets its per-image state there) and
    `after_call(batch)` after it (the harness reads its block counter there). With `skip_existing`, items
    whose file exists are not generated again (resuming an interrupted run). Returns the files written by
    this process; all processes wait for each other at the end.
    """
    from tqdm.auto import tqdm

    state = state or get_state()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with state.split_between_processes(list(items)) as mine:
        todo = [it for it in mine if not (skip_existing and (out_dir / f"{it.id}.png").is_file())]
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not state.is_local_main_process,
                   leave=False)
        for batch in batched(todo, batch_size):
            if before_call is not None:
                before_call()
            images = source(batch, steps)  # [b, 3, H, W] in [0, 1]
            if after_call is not None:
                after_call(batch)
            written += save_images(images, out_dir, [it.id for it in batch])
            bar.update(len(batch))
        bar.close()
    state.wait_for_everyone()
    return written


def item_files(out_dir: str | Path, items: list[Item]) -> list[Path]:
    """The files of `items` in `out_dir`, in item order; a missing one is an error naming it."""
    from ilf.errors import ILFError

    files = [Path(out_dir) / f"{it.id}.png" for it in items]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ILFError(f"{len(missing)} generated images are missing from {out_dir} (e.g. {missing[:3]}); "
                       "re-run the generation")
    return files
