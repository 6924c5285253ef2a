"""Image grids like the paper's Fig. 13-14: rows = methods, columns = items (same seeds), each image with a
zoomed crop beside it and an error map: |image − reference| (mean over RGB), white = none, dark red = the
largest error of that column, one scale shared by every row of the column so rows compare at a glance.

`crop="auto"` picks, per column, the square window where the methods differ most from the reference (mean
absolute difference over the non-reference rows), so the zoom shows what changed; `crop="CX,CY,S"` fixes a
window (centre and side as fractions of the image). The window is outlined on the full images.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ilf.eval.metrics.images import read_image

from .errors import BenchError

LABEL_WIDTH = 190
HEADER_HEIGHT = 30  # seed line + one caption line; each further caption line adds LINE_HEIGHT
LINE_HEIGHT = 12
OUTLINE = (255, 60, 60)
COLUMNS = 3  # per item: the image, its zoomed window, its error map against the reference


def parse_crop(crop: str) -> tuple[float, float, float] | None:
    """"auto" -> None; "0.5,0.4,0.25" -> (cx, cy, side) as fractions of the image."""
    if crop == "auto":
        return None
    try:
        cx, cy, side = (float(v) for v in crop.split(","))
    except ValueError:
        raise BenchError(f"--crop {crop!r}: write 'auto' or CX,CY,SIDE as fractions, e.g. 0.5,0.5,0.25") from None
    if not (0 < side <= 1 and 0 <= cx <= 1 and 0 <= cy <= 1):
        raise BenchError(f"--crop {crop!r}: centre in [0, 1], side in (0, 1]")
    return cx, cy, side


def auto_window(images: torch.Tensor, ref: torch.Tensor, side: int) -> tuple[int, int]:
    """Top-left (y, x) of the side×side window where `images` ([M, 3, H, W]) differ most from `ref` ([3, H, W])."""
    diff = (images - ref[None]).abs().mean(dim=(0, 1))  # [H, W]
    pooled = F.avg_pool2d(diff[None, None], side, stride=1)[0, 0]  # [H - side + 1, W - side + 1]
    idx = int(torch.argmax(pooled))
    return idx // pooled.shape[1], idx % pooled.shape[1]


def _window(h: int, w: int, crop, images: torch.Tensor, ref: torch.Tensor) -> tuple[int, int, int]:
    if crop is None:
        side = max(4, min(h, w) // 4)
        if images.shape[0] == 0:
            return (h - side) // 2, (w - side) // 2, side
        y, x = auto_window(images, ref, side)
        return y, x, side
    cx, cy, frac = crop
    side = max(2, round(frac * min(h, w)))
    y = min(max(0, round(cy * h - side / 2)), h - side)
    x = min(max(0, round(cx * w - side / 2)), w - side)
    return y, x, side


def _to_pil(img: torch.Tensor, size: int):
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr)
    resample = Image.Resampling.NEAREST if max(arr.shape[:2]) * 2 <= size else Image.Resampling.LANCZOS
    return pil.resize((size, size), resample)


def error_map(img: torch.Tensor, ref: torch.Tensor, vmax: float) -> torch.Tensor:
    """|img − ref| averaged over channels, scaled by `vmax` (1 = the column's largest error), as an RGB image in
    [0, 1]: white where equal, through red to dark red."""
    e = ((img - ref).abs().mean(dim=0) / max(vmax, 1e-8)).clamp(0, 1)  # [H, W]
    red = 1 - 0.45 * (2 * e - 1).clamp(min=0)  # full red up to half the scale, then darker
    return torch.stack([red, 1 - e, 1 - e])


def make_grid(results: dict, root: Path, path: Path, *, num_items: int = 4, crop: str = "auto",
              cell: int | None = None) -> Path:
    """Write the grid of the first `num_items` items for every row of `results` (images under `root`): each
    item is three columns, the image (window outlined), its zoomed window and its error map against the
    reference row (`error_map`; the reference row's cell says what the maps are measured against)."""
    from PIL import Image, ImageDraw

    window = parse_crop(crop)
    items = results["items"][:num_items]
    rows = results["rows"]
    # images[r][c]: [3, H, W] in [0, 1]
    images = [[read_image(Path(root) / r["images"] / f"{it['id']}.png") for it in items] for r in rows]
    h, w = images[0][0].shape[-2:]
    cell = cell or int(min(256, max(128, 2 * max(h, w))))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    captions = [wrap_caption(str(it.get("prompt", f"class {it.get('class_label')}")), COLUMNS * cell - 8, measure)
                for it in items]
    header = HEADER_HEIGHT + LINE_HEIGHT * max(0, max((len(c) for c in captions), default=1) - 1)
    width = LABEL_WIDTH + COLUMNS * cell * len(items)
    height = header + cell * len(rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    ref_row = next((i for i, r in enumerate(rows) if r["reference"]), 0)
    for c, it in enumerate(items):
        others = [images[r][c] for r in range(len(rows)) if r != ref_row]
        stack = torch.stack(others) if others else torch.zeros(0, 3, h, w)
        y0, x0, side = _window(h, w, window, stack, images[ref_row][c])
        ref = images[ref_row][c]
        vmax = max((float((o - ref).abs().mean(dim=0).max()) for o in others), default=0.0)
        left = LABEL_WIDTH + COLUMNS * c * cell
        draw.text((left + 4, 4), f"seed {it['seed']}  (zoom; |x - ref|, max {vmax * 255:.0f}/255)", fill="black")
        for k, line in enumerate(captions[c]):
            draw.text((left + 4, 16 + k * LINE_HEIGHT), line, fill="gray")
        scale = cell / w
        for r in range(len(rows)):
            img = images[r][c]
            full = _to_pil(img, cell)
            ImageDraw.Draw(full).rectangle(
                [x0 * scale, y0 * scale, (x0 + side) * scale - 1, (y0 + side) * scale - 1], outline=OUTLINE, width=2)
            zoom = _to_pil(img[:, y0 : y0 + side, x0 : x0 + side], cell)
            top = header + r * cell
            canvas.paste(full, (left, top))
            canvas.paste(zoom, (left + cell, top))
            if r == ref_row:
                draw.text((left + 2 * cell + 6, top + cell // 2 - 12), "error maps:\n|x - this row|", fill="gray")
            else:
                canvas.paste(_to_pil(error_map(img, ref, vmax), cell), (left + 2 * cell, top))
        draw.line([(left, 0), (left, height)], fill="white", width=3)
    for r, row in enumerate(rows):
        top = header + r * cell
        label = row["display"] + (" (ref)" if row["reference"] else "")
        bf = row.get("block_forwards")
        lines = _wrap(label, 28) + ([f"{bf:.0f} block fwd"] if bf is not None else [])
        if row.get("seconds_per_image") is not None:
            lines.append(f"{row['seconds_per_image']:.3g} s/img")
        draw.text((6, top + 6), "\n".join(lines), fill="black", spacing=3)
    canvas.save(path)
    return path


def wrap_caption(text: str, max_px: float, measure) -> list[str]:
    """`text` in lines no wider than `max_px` (by `measure(line) -> pixels`), broken between words only; a single
    word wider than a line gets a line of its own."""
    lines, line = [], ""
    for word in text.split():
        cand = f"{line} {word}".strip()
        if line and measure(cand) > max_px:
            lines.append(line)
            line = word
        else:
            line = cand
    return lines + ([line] if line else [])


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for part in text.replace(",", ", ").split(" "):
        if line and len(line) + len(part) + 1 > width:
            out.append(line)
            line = part
        else:
            line = f"{line} {part}".strip()
    return out + ([line] if line else [])

