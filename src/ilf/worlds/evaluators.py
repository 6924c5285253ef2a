"""Domain evaluators: small CNNs that read the worlds' 32×32 images (our offline stand-ins for CLIP and Inception).

    ev = load_evaluator("shapes")
    ev.score(images, prompts)      # [B] prompt alignment: share of the prompt's attributes the image shows
    ev.features(images)            # [B, 128] penultimate activations, for a Fréchet distance

    ev = load_evaluator("digits")
    ev.score(images, labels)       # [B] 1.0 where the classifier reads the intended digit
    ev.features(images)            # [B, 64]

`images`: a list of PIL images, a numpy array [B, H, W, 3] in [0, 1] (`output_type="np"`), or a tensor
[B, 3, H, W] in [0, 1] (`output_type="pt"`).

The shapes reader predicts, per image: the layout (one / two / three identical objects, a vertical or a horizontal
pair of distinct objects), the first object's shape, colour and size (the object itself, or the top/left object of a
pair), the second object's (bottom/right of a pair) and the 3×3 grid position of a single object. A relation is
judged as the picture shows it, so "A above B" and "B below A" read the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from ilf.worlds import paths, shapes

LAYOUTS = ("one", "two", "three", "vertical pair", "horizontal pair")
_PAIR = (3, 4)
# Head name -> class vocabulary. obj1 = single/count object or top/left object of a pair; obj2 = bottom/right.
SHAPES_HEADS = {
    "layout": LAYOUTS,
    "shape1": shapes.SHAPES, "color1": shapes.COLOR_NAMES, "size1": shapes.SIZE_NAMES,
    "shape2": shapes.SHAPES, "color2": shapes.COLOR_NAMES, "size2": shapes.SIZE_NAMES,
    "position": shapes.POSITIONS,
}
IGNORE = -100  # target of a head that does not apply to a scene


def as_unit_tensor(images) -> torch.Tensor:
    """PIL list / numpy [B, H, W, 3] / tensor [B, 3, H, W] (all in [0, 1]) -> float tensor [B, 3, 32, 32]."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    x = images.float()
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != shapes.IMAGE_SIZE:
        raise ValueError(f"expected [B, 3, 32, 32] images, got shape {tuple(x.shape)}")
    return x


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _Trunk(nn.Module):
    """32×32×3 -> feature vector [B, feat_dim]. Keeps spatial layout to the 4×4 map (positions matter)."""

    def __init__(self, width: int, feat_dim: int):
        super().__init__()
        w = width
        self.convs = nn.Sequential(
            _conv(3, w), _conv(w, w), nn.MaxPool2d(2),  # [B, w, 16, 16]
            _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),  # [B, 2w, 8, 8]
            _conv(2 * w, 4 * w), _conv(4 * w, 4 * w), nn.MaxPool2d(2),  # [B, 4w, 4, 4]
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, 2 * feat_dim), nn.ReLU(),
                                nn.Linear(2 * feat_dim, feat_dim), nn.ReLU())  # [B, feat_dim]

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(x01 * 2 - 1))


class _Evaluator(nn.Module):
    world: str

    def __init__(self, width: int, feat_dim: int, head_sizes: dict[str, int]):
        super().__init__()
        self.config = {"width": width, "feat_dim": feat_dim}
        self.trunk = _Trunk(width, feat_dim)
        self.heads = nn.ModuleDict({k: nn.Linear(feat_dim, n) for k, n in head_sizes.items()})

    def logits(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(x01)
        return {k: h(f) for k, h in self.heads.items()}

    @torch.no_grad()
    def features(self, images) -> torch.Tensor:
        """[B, feat_dim] penultimate activations (for a Fréchet distance between image sets)."""
        return self.trunk(as_unit_tensor(images).to(self._device))

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def save(self, directory: str | Path, metrics: dict | None = None) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / f"{self.world}.safetensors"))  # fp16 weights; BatchNorm's step counter stays int
        (d / f"{self.world}.json").write_text(json.dumps({**self.config, "metrics": metrics or {}}, indent=1))


class ShapesEvaluator(_Evaluator):
    world = "shapes"

    def __init__(self, width: int = 16, feat_dim: int = 128):
        super().__init__(width, feat_dim, {k: len(v) for k, v in SHAPES_HEADS.items()})

    @torch.no_grad()
    def probs(self, images) -> dict[str, torch.Tensor]:
        return {k: v.softmax(-1) for k, v in self.logits(as_unit_tensor(images).to(self._device)).items()}

    @torch.no_grad()
    def read(self, images) -> list[dict[str, str]]:
        """The reader's argmax answer per image, as names (e.g. {"layout": "vertical pair", "color1": "red", …})."""
        p = self.probs(images)
        idx = {k: v.argmax(-1).tolist() for k, v in p.items()}
        return [{k: SHAPES_HEADS[k][idx[k][i]] for k in SHAPES_HEADS} for i in range(len(p["layout"]))]

    @torch.no_grad()
    def score(self, images, prompts: list[str], soft: bool = False) -> torch.Tensor:
        """[B] prompt alignment in [0, 1]: the share of each prompt's attributes that the image shows.

        single: count (one), shape, colour, size, position (5); count: count, shape, colour, size (4);
        relation: both objects' shape, colour, size and the relation (7), with the objects matched to the prompt in
        whichever order agrees best (the relation only counts if that order is the prompt's). Second-object
        attributes only count when the reader sees a pair. soft=True uses the reader's probabilities instead of
        its argmax answers.
        """
        p = self.probs(images)
        if not soft:
            p = {k: F.one_hot(v.argmax(-1), v.shape[-1]).float() for k, v in p.items()}
        out = []
        for i, prompt in enumerate(prompts):
            s = shapes.parse_caption(prompt)

            def has(head: str, value) -> torch.Tensor:
                return p[head][i, SHAPES_HEADS[head].index(value)]

            def obj(o: shapes.Obj, slot: int) -> torch.Tensor:
                return has(f"shape{slot}", o.shape) + has(f"color{slot}", o.color) + has(f"size{slot}", o.size)

            if s.kind == "single":
                o = s.objects[0]
                out.append((has("layout", "one") + obj(o, 1) + has("position", s.position)) / 5)
            elif s.kind == "count":
                out.append((has("layout", LAYOUTS[s.count - 1]) + obj(s.objects[0], 1)) / 4)
            else:
                axis, first, second = s.canonical_pair
                pair = p["layout"][i, list(_PAIR)].sum()  # the image shows two distinct objects
                in_order = obj(first, 1) + pair * obj(second, 2) + has("layout", f"{axis} pair")
                swapped = obj(second, 1) + pair * obj(first, 2)
                out.append(torch.maximum(in_order, swapped) / 7)
        return torch.stack(out).cpu()


class DigitsEvaluator(_Evaluator):
    world = "digits"

    def __init__(self, width: int = 16, feat_dim: int = 64):
        super().__init__(width, feat_dim, {"digit": 10})

    @torch.no_grad()
    def predict(self, images) -> torch.Tensor:
        """[B] predicted digit."""
        return self.logits(as_unit_tensor(images).to(self._device))["digit"].argmax(-1).cpu()

    @torch.no_grad()
    def score(self, images, labels) -> torch.Tensor:
        """[B] 1.0 where the image reads as its intended digit, else 0.0."""
        return (self.predict(images) == torch.as_tensor(labels).cpu()).float()


_CLASSES = {"shapes": ShapesEvaluator, "digits": DigitsEvaluator}


def load_evaluator(world: str, device: str | torch.device = "cpu", directory: str | Path = paths.EVALUATORS):
    """The shipped evaluator of `world` (float32, eval mode); shapes-flow gets the shapes evaluator."""
    if world not in paths.DATA_OF:
        raise ValueError(f"world must be one of {tuple(paths.DATA_OF)}, got {world!r}")
    world = paths.DATA_OF[world]  # a world on another world's data reads its images with that evaluator
    d = Path(directory)
    cfg = json.loads((d / f"{world}.json").read_text())
    ev = _CLASSES[world](width=cfg["width"], feat_dim=cfg["feat_dim"])
    ev.load_state_dict(load_file(str(d / f"{world}.safetensors")))  # copied into the fp32 parameters
    return ev.to(device).eval()


@dataclass
class ShapesTargets:
    """Per-head class indices [B] (IGNORE where a head does not apply) for rendered scenes."""

    labels: dict[str, torch.Tensor]

    @classmethod
    def from_scenes(cls, scenes: list[shapes.Scene]) -> "ShapesTargets":
        rows = [_targets(s) for s in scenes]
        return cls({k: torch.tensor([r[k] for r in rows]) for k in SHAPES_HEADS})


def _targets(s: shapes.Scene) -> dict[str, int]:
    t = dict.fromkeys(SHAPES_HEADS, IGNORE)
    if s.kind == "relation":
        axis, first, second = s.canonical_pair
        t["layout"] = LAYOUTS.index(f"{axis} pair")
        objs = ((first, 1), (second, 2))
    else:
        t["layout"] = s.count - 1
        objs = ((s.objects[0], 1),)
        if s.kind == "single":
            t["position"] = shapes.POSITIONS.index(s.position)
    for o, slot in objs:
        t[f"shape{slot}"] = shapes.SHAPES.index(o.shape)
        t[f"color{slot}"] = shapes.COLOR_NAMES.index(o.color)
        t[f"size{slot}"] = shapes.SIZE_NAMES.index(o.size)
    return t


@torch.no_grad()
def shapes_head_accuracy(ev: ShapesEvaluator, images, scenes: list[shapes.Scene]) -> dict[str, float]:
    """Accuracy of each reader head on images whose true scenes are known (heads that apply only)."""
    logits = ev.logits(as_unit_tensor(images).to(ev._device))
    tgt = ShapesTargets.from_scenes(scenes).labels
    out = {}
    for k, y in tgt.items():
        keep = y != IGNORE
        if keep.any():
            out[k] = float((logits[k].argmax(-1).cpu()[keep] == y[keep]).float().mean())
    return out
