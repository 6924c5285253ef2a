"""What to generate: prompts (or class labels) and seeds, as `Item`s named like ImageReward's benchmark.

Every method of a benchmark generates the same items: item `i` is prompt/class `p` with seed `base_seed + i`,
written to `{prompt_id}_{k}.png` (k = 0, 1, … for the k-th image of that prompt), the file naming ImageReward's
official benchmark uses, so any folder of generations can be scored by any metric here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from ilf.errors import ILFError

PROMPT_FILE_HELP = (
    "a .txt file (one prompt, or one class id for DiT, per line) or a .json file: a list of strings or ints, a "
    "list of {'id', 'prompt'} (ImageReward's benchmark-prompts.json) or {'id', 'class_label'}, or MJHQ-30K's "
    "meta_data.json ({id: {'prompt': ...}})"
)


@dataclass(frozen=True)
class Item:
    """One image to generate: `prompt` (text-to-image) or `class_label` (class-to-image), and its seed."""

    id: str  # file stem: "{prompt_id}_{k}"
    prompt_id: str
    seed: int
    prompt: str | None = None
    class_label: int | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# A condition: (prompt_id, prompt or class label)
Condition = tuple[str, "str | int"]


def load_prompt_file(path: str | Path) -> list[Condition]:
    """Read prompts or class labels from a file (see `PROMPT_FILE_HELP`)."""
    path = Path(path)
    if not path.is_file():
        raise ILFError(f"prompts file {str(path)!r} not found; pass {PROMPT_FILE_HELP}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return [(f"p{i:05d}", int(ln) if ln.lstrip("-").isdigit() else ln) for i, ln in enumerate(lines)]
    data = json.loads(text)
    out: list[Condition] = []
    if isinstance(data, dict):  # MJHQ-30K meta_data.json: {image_id: {"category", "prompt"}}
        for key, value in data.items():
            prompt = value.get("prompt") if isinstance(value, dict) else value
            if not isinstance(prompt, str):
                raise ILFError(f"{path}: entry {key!r} has no 'prompt'; expected {PROMPT_FILE_HELP}")
            out.append((str(key), prompt))
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            if isinstance(entry, (str, int)) and not isinstance(entry, bool):
                out.append((f"p{i:05d}", entry))
            elif isinstance(entry, dict) and ("prompt" in entry or "class_label" in entry):
                cond = entry["prompt"] if "prompt" in entry else int(entry["class_label"])
                out.append((str(entry.get("id", f"p{i:05d}")), cond))
            else:
                raise ILFError(f"{path}: entry {i} ({entry!r:.60}) is not understood; expected {PROMPT_FILE_HELP}")
    else:
        raise ILFError(f"{path} is not understood; expected {PROMPT_FILE_HELP}")
    if not out:
        raise ILFError(f"{path} holds no prompts")
    ids = [pid for pid, _ in out]
    if len(set(ids)) != len(ids):
        raise ILFError(f"{path}: prompt ids are not unique")
    for pid in ids:
        if "/" in pid or pid.startswith("."):
            raise ILFError(f"{path}: prompt id {pid!r} cannot be a file name")
    return out


def make_items(conditions: list[Condition], *, num_images: int | None = None, images_per_prompt: int = 1,
               seed: int = 0) -> list[Item]:
    """Items for `num_images` images (default: every condition `images_per_prompt` times), cycling through
    the conditions; item i gets seed `seed + i` and id `{prompt_id}_{k}`."""
    if not conditions:
        raise ILFError("no prompts or class labels to generate")
    if images_per_prompt < 1:
        raise ILFError(f"images_per_prompt must be >= 1, got {images_per_prompt}")
    total = num_images if num_images is not None else len(conditions) * images_per_prompt
    if total < 1:
        raise ILFError(f"num_images must be >= 1, got {total}")
    seen: Counter = Counter()
    items = []
    for i in range(total):
        pid, cond = conditions[(i // images_per_prompt) % len(conditions)]
        k = seen[pid]
        seen[pid] += 1
        text, label = (cond, None) if isinstance(cond, str) else (None, int(cond))
        items.append(Item(id=f"{pid}_{k}", prompt_id=pid, seed=seed + i, prompt=text, class_label=label))
    return items


def prompts_by_id(items: list[Item]) -> list[dict[str, str]]:
    """[{'id', 'prompt'}] once per prompt id, in order (ImageReward's prompt list)."""
    out, seen = [], set()
    for it in items:
        if it.prompt is not None and it.prompt_id not in seen:
            seen.add(it.prompt_id)
            out.append({"id": it.prompt_id, "prompt": it.prompt})
    return out
