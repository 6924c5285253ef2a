"""The "shapes" world: 32×32 RGB images of simple shapes with captions from a small grammar.

A scene is one of three kinds, each with one caption template:

    single    "a large red circle in the top left"            shape, colour, size, position (3×3 grid)
    count     "three small blue squares"                      shape, colour, size, count (two|three)
    relation  "a small green cross above a large white square"  two distinct objects, above|below|left of|right of

`sample(index, split, seed)` is a pure function: the same arguments always give the same image, caption
and `Scene`. Held-out combinations are chosen by hashing the *layout* key of a scene (`Scene.layout_key`),
so "A above B" and "B below A" (the same picture) fall in the same split: the held-out split holds picture
compositions the training split never shows, under either wording.

Images are drawn with PIL at 4× and box-filtered down, so edges are antialiased.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
_SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {
    "red": (230, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 60, 210),
    "white": (245, 245, 245),
}
COLOR_NAMES = tuple(COLORS)
# Bounding-box side in pixels of the 32×32 image. Two large objects stacked (centres 8 and 24) leave a 3 px gap.
SIZES = {"small": 8.0, "large": 13.0}
SIZE_NAMES = tuple(SIZES)
# 3×3 grid, row-major; the caption phrase for each cell.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
_POSITION_PHRASE = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom", "bottom right": "in the bottom right",
}
_GRID = (8.0, 16.0, 24.0)  # cell centres in pixels
RELATIONS = ("above", "below", "left of", "right of")
_RELATION_PHRASE = {"above": "above", "below": "below", "left of": "to the left of", "right of": "to the right of"}
COUNTS = (2, 3)
_COUNT_WORD = {1: "a", 2: "two", 3: "three"}
KINDS = ("single", "count", "relation")
_KIND_PROBS = (0.35, 0.2, 0.45)

SPLITS = ("train", "heldout")
HELDOUT_PERCENT = 10  # share of layout keys held out


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str


@dataclass(frozen=True)
class Scene:
    """What a caption says. `centers` (pixel centres of the drawn objects) is rendering detail, not compared."""

    kind: str  # "single" | "count" | "relation"
    objects: tuple[Obj, ...]  # single/count: the (repeated) object; relation: both, in caption order
    position: str | None = None  # single only
    count: int = 1  # count only (2 or 3); 1 otherwise; a relation shows 2 distinct objects
    relation: str | None = None  # relation only: objects[0] <relation> objects[1]
    centers: tuple[tuple[float, float], ...] = field(default=(), compare=False)

    @property
    def caption(self) -> str:
        o = self.objects[0]
        if self.kind == "single":
            return f"a {o.size} {o.color} {o.shape} {_POSITION_PHRASE[self.position]}"
        if self.kind == "count":
            return f"{_COUNT_WORD[self.count]} {o.size} {o.color} {o.shape}{'es' if o.shape == 'cross' else 's'}"
        b = self.objects[1]
        return f"a {o.size} {o.color} {o.shape} {_RELATION_PHRASE[self.relation]} a {b.size} {b.color} {b.shape}"

    @property
    def canonical_pair(self) -> tuple[str, Obj, Obj]:
        """Relation as the picture shows it: (axis, top-or-left object, bottom-or-right object)."""
        a, b = self.objects
        return {
            "above": ("vertical", a, b), "below": ("vertical", b, a),
            "left of": ("horizontal", a, b), "right of": ("horizontal", b, a),
        }[self.relation]

    @property
    def layout_key(self) -> str:
        """A string naming the picture composition (wording-independent); hashed to pick the split."""
        if self.kind == "single":
            o = self.objects[0]
            return f"single|{o.shape}|{o.color}|{o.size}|{self.position}"
        if self.kind == "count":
            o = self.objects[0]
            return f"count|{self.count}|{o.shape}|{o.color}|{o.size}"
        axis, p, q = self.canonical_pair
        return f"relation|{axis}|{p.shape}|{p.color}|{p.size}|{q.shape}|{q.color}|{q.size}"

    @property
    def split(self) -> str:
        return split_of(self.layout_key)


def split_of(layout_key: str) -> str:
    """"heldout" for about HELDOUT_PERCENT% of layout keys, by a stable hash (not Python's salted `hash`)."""
    h = int.from_bytes(hashlib.blake2b(layout_key.encode(), digest_size=8).digest(), "little")
    return "heldout" if h % 100 < HELDOUT_PERCENT else "train"


# --------------------------------------------------------------------------------------------------- grammar


def _all_objects() -> list[Obj]:
    return [Obj(s, c, z) for s in SHAPES for c in COLOR_NAMES for z in SIZE_NAMES]


def all_scenes() -> list[Scene]:
    """Every caption the grammar can produce (about 9.5k), as `Scene`s without centres."""
    objs = _all_objects()
    out = [Scene("single", (o,), position=p) for o in objs for p in POSITIONS]
    out += [Scene("count", (o,), count=n) for o in objs for n in COUNTS if not (n == 3 and o.size == "large")]
    out += [Scene("relation", (a, b), relation=r) for a in objs for b in objs if a != b for r in RELATIONS]
    return out


def prompts(split: str) -> list[str]:
    """All captions of a split (every wording of every layout in it), in a fixed order."""
    _check_split(split)
    return [s.caption for s in all_scenes() if s.split == split]


def eval_prompts(n: int = 32) -> list[str]:
    """A fixed list of `n` held-out prompts, balanced over kinds (about 3:2:5 single:count:relation)."""
    by_kind = {k: [s for s in all_scenes() if s.split == "heldout" and s.kind == k] for k in KINDS}
    rng = np.random.default_rng(1234)
    n_single, n_count = round(n * 0.3), round(n * 0.2)
    take = {"single": n_single, "count": n_count, "relation": n - n_single - n_count}
    out = []
    for k in KINDS:
        idx = rng.choice(len(by_kind[k]), size=take[k], replace=False)
        out += [by_kind[k][i].caption for i in sorted(idx)]
    return out


_OBJ = r"(small|large) (\w+) (circle|square|triangle|cross)"
_RE_SINGLE = re.compile(rf"^a {_OBJ} (in the|at the|on the) ([a-z ]+)$")
_RE_COUNT = re.compile(r"^(two|three) (small|large) (\w+) (circle|square|triangle|cross)(?:es|s)$")
_RE_REL = re.compile(rf"^a {_OBJ} (above|below|to the left of|to the right of) a {_OBJ}$")


def parse_caption(caption: str) -> Scene:
    """The `Scene` a grammar caption describes (inverse of `Scene.caption`); ValueError for anything else."""
    c = " ".join(caption.lower().strip().split())
    if m := _RE_COUNT.match(c):
        n = {"two": 2, "three": 3}[m[1]]
        scene = Scene("count", (Obj(m[4], m[3], m[2]),), count=n)
    elif m := _RE_REL.match(c):
        rel = {"above": "above", "below": "below", "to the left of": "left of", "to the right of": "right of"}[m[4]]
        scene = Scene("relation", (Obj(m[3], m[2], m[1]), Obj(m[7], m[6], m[5])), relation=rel)
    elif m := _RE_SINGLE.match(c):
        scene = Scene("single", (Obj(m[3], m[2], m[1]),), position=m[5])
    else:
        raise ValueError(f"not a shapes-world caption: {caption!r}")
    for o in scene.objects:
        if o.color not in COLORS:
            raise ValueError(f"unknown colour {o.color!r} in {caption!r}")
    if scene.position is not None and scene.position not in POSITIONS:
        raise ValueError(f"unknown position {scene.position!r} in {caption!r}")
    if scene.caption != c:
        raise ValueError(f"not a shapes-world caption: {caption!r}")
    return scene


# --------------------------------------------------------------------------------------------------- sampling


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _draw_scene_semantics(rng: np.random.Generator) -> Scene:
    kind = KINDS[rng.choice(3, p=_KIND_PROBS)]
    objs = _all_objects()
    a = objs[rng.integers(len(objs))]
    if kind == "single":
        return Scene("single", (a,), position=POSITIONS[rng.integers(9)])
    if kind == "count":
        n = 2 if a.size == "large" else int(COUNTS[rng.integers(2)])  # three large objects do not fit 32×32
        return Scene("count", (a,), count=n)
    b = a
    while b == a:
        b = objs[rng.integers(len(objs))]
    return Scene("relation", (a, b), relation=RELATIONS[rng.integers(4)])


def _place(scene: Scene, rng: np.random.Generator) -> tuple[tuple[float, float], ...]:
    """Pixel centres (x, y) for each drawn object; objects never overlap or leave the image."""
    if scene.kind == "single":
        row, col = divmod(POSITIONS.index(scene.position), 3)
        jx, jy = rng.uniform(-1.5, 1.5, size=2)
        return ((float(_GRID[col] + jx), float(_GRID[row] + jy)),)
    if scene.kind == "count":
        s = SIZES[scene.objects[0].size]
        lo, hi = s / 2 + 1, IMAGE_SIZE - s / 2 - 1
        min_dist = 1.25 * s + 1  # square corners stay apart too
        while True:  # rejection sampling; succeeds within a few tries for the allowed counts
            pts = rng.uniform(lo, hi, size=(scene.count, 2))
            d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(scene.count) * 1e9
            if d.min() >= min_dist:
                return tuple((float(x), float(y)) for x, y in pts)
    axis, _, _ = scene.canonical_pair
    # first = top/left object, second = bottom/right; along the axis at 8 and 24 (±1), across it 16 ± 4
    along = (8.0 + rng.uniform(-1, 1), 24.0 + rng.uniform(-1, 1))
    across = 16.0 + rng.uniform(-4, 4, size=2)
    first, second = ((across[0], along[0]), (across[1], along[1])) if axis == "vertical" else (
        (along[0], across[0]), (along[1], across[1]))
    # centres are stored in caption order (objects[0], objects[1])
    first, second = tuple(map(float, first)), tuple(map(float, second))
    return (first, second) if scene.relation in ("above", "left of") else (second, first)


def _draw_obj(draw: ImageDraw.ImageDraw, o: Obj, cx: float, cy: float) -> None:
    k = _SUPERSAMPLE
    s = SIZES[o.size] * k
    x, y = cx * k, cy * k
    fill = COLORS[o.color]
    if o.shape == "circle":
        r = s / 2
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "square":
        r = 0.85 * s / 2  # a touch smaller than the circle so both cover similar area
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "triangle":
        h = s * 0.9
        draw.polygon([(x, y - h / 2), (x + s / 2, y + h / 2), (x - s / 2, y + h / 2)], fill=fill)
    elif o.shape == "cross":
        r, t = s / 2, s / 6  # arm half-length, half-thickness
        draw.rectangle([x - r, y - t, x + r, y + t], fill=fill)
        draw.rectangle([x - t, y - r, x + t, y + r], fill=fill)
    else:
        raise ValueError(f"unknown shape {o.shape!r}")


def render(scene: Scene) -> Image.Image:
    """Draw a scene with centres (from `sample`) on black: 32×32 RGB, antialiased by 4× supersampling."""
    if not scene.centers:
        raise ValueError("scene has no centres; render scenes returned by `sample` or `place`")
    big = Image.new("RGB", (IMAGE_SIZE * _SUPERSAMPLE,) * 2, (0, 0, 0))
    draw = ImageDraw.Draw(big)
    drawn = scene.objects * scene.count if scene.kind == "count" else scene.objects
    for o, (cx, cy) in zip(drawn, scene.centers):
        _draw_obj(draw, o, cx, cy)
    return big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def place(scene: Scene, seed: int = 0) -> Scene:
    """The scene with object centres drawn from `seed`: lets you render any caption (e.g. a held-out prompt)."""
    return replace(scene, centers=_place(scene, np.random.default_rng([seed, 7])))


def sample(index: int, split: str = "train", seed: int = 0) -> tuple[Image.Image, str, Scene]:
    """Sample `index` of `split`: (32×32 RGB PIL image, caption, Scene). A pure function of its arguments."""
    _check_split(split)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = _draw_scene_semantics(rng)
    while scene.split != split:  # rejection keeps the draw deterministic in (index, split, seed)
        scene = _draw_scene_semantics(rng)
    scene = replace(scene, centers=_place(scene, rng))
    return render(scene), scene.caption, scene


def to_tensor(images: list[Image.Image] | Image.Image) -> torch.Tensor:
    """PIL image(s) -> float tensor [B, 3, H, W] in [-1, 1] (the range the VAE and diffusion use)."""
    if isinstance(images, Image.Image):
        images = [images]
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])  # [B, H, W, 3]
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def batch(indices, split: str = "train", seed: int = 0) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """Images [B, 3, 32, 32] in [-1, 1], captions and scenes for the given sample indices."""
    samples = [sample(int(i), split, seed) for i in indices]
    return to_tensor([s[0] for s in samples]), [s[1] for s in samples], [s[2] for s in samples]
