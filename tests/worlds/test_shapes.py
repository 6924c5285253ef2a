"""The shapes world: deterministic sampling, a clean held-out split, and pictures that match their records."""

import numpy as np
import pytest
from scipy import ndimage

from ilf.worlds import shapes


def test_sample_is_a_pure_function_of_index_split_seed():
    a_img, a_cap, a_scene = shapes.sample(17, "train", seed=3)
    b_img, b_cap, b_scene = shapes.sample(17, "train", seed=3)
    assert np.array_equal(np.asarray(a_img), np.asarray(b_img))
    assert (a_cap, a_scene, a_scene.centers) == (b_cap, b_scene, b_scene.centers)
    others = [shapes.sample(17, "train", seed=4), shapes.sample(18, "train", seed=3)]
    assert all(not np.array_equal(np.asarray(a_img), np.asarray(o[0])) for o in others)


def test_images_are_32px_rgb_and_antialiased():
    img, _, _ = shapes.sample(0, "train")
    arr = np.asarray(img)
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    # supersampled edges leave intermediate values between the black background and the fill colour
    levels = np.unique(arr.max(-1))
    assert len(levels) > 4


def test_heldout_split_is_disjoint_from_train():
    train, held = set(shapes.prompts("train")), set(shapes.prompts("heldout"))
    assert train and held and not train & held
    assert 0.05 < len(held) / (len(train) + len(held)) < 0.15
    for i in range(200):
        assert shapes.sample(i, "train")[2].split == "train"
        _, cap, scene = shapes.sample(i, "heldout")
        assert scene.split == "heldout" and cap in held


def test_both_wordings_of_a_relation_share_a_split():
    for s in shapes.all_scenes():
        if s.kind == "relation":
            a, b = s.objects
            flipped = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}[s.relation]
            assert shapes.Scene("relation", (b, a), relation=flipped).split == s.split


def test_eval_prompts_are_fixed_heldout_and_cover_every_kind():
    p = shapes.eval_prompts(32)
    assert p == shapes.eval_prompts(32) and len(set(p)) == 32
    assert set(p) <= set(shapes.prompts("heldout"))
    assert {shapes.parse_caption(c).kind for c in p} == set(shapes.KINDS)


def test_parse_caption_inverts_caption_for_the_whole_grammar():
    scenes = shapes.all_scenes()
    assert len({s.caption for s in scenes}) == len(scenes)
    assert all(shapes.parse_caption(s.caption) == s for s in scenes)


@pytest.mark.parametrize("bad", ["a red circle", "a small pink circle in the center", "two small red circle",
                                 "a small red circle at the center", "a small red circle above"])
def test_parse_caption_rejects_text_outside_the_grammar(bad):
    with pytest.raises(ValueError):
        shapes.parse_caption(bad)


def _masks_by_colour(arr):
    """Per colour name, the solid (not edge) pixels of that palette colour."""
    palette = np.array(list(shapes.COLORS.values()), dtype=np.float32)
    dist = np.linalg.norm(arr[..., None, :].astype(np.float32) - palette, axis=-1)  # [32, 32, 6]
    solid = dist.min(-1) < 30
    return {name: solid & (dist.argmin(-1) == k) for k, name in enumerate(shapes.COLOR_NAMES)}


def test_rendered_pixels_match_the_record():
    checked = {"single": 0, "count": 0, "relation": 0}
    for i in range(150):
        img, _, s = shapes.sample(i, "train")
        arr = np.asarray(img)
        masks = _masks_by_colour(arr)
        lit = arr.max(-1) > 120
        if s.kind in ("single", "count"):
            colour = s.objects[0].color
            solid = sum(masks.values())
            assert masks[colour].sum() == solid.sum() > 10  # every solid pixel has the recorded colour
            n_blobs = ndimage.label(lit)[1]
            assert n_blobs == s.count
        if s.kind == "single":
            ys, xs = np.nonzero(lit)
            row, col = divmod(shapes.POSITIONS.index(s.position), 3)
            cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2  # bounding-box centre
            assert int(cx // (32 / 3)) == col and int(cy // (32 / 3)) == row
        if s.kind == "relation" and s.objects[0].color != s.objects[1].color:
            (ya, xa), (yb, xb) = (np.argwhere(masks[o.color]).mean(0) for o in s.objects)
            delta = {"above": yb - ya, "below": ya - yb, "left of": xb - xa, "right of": xa - xb}[s.relation]
            assert delta > 8
            areas = [masks[o.color].sum() for o in s.objects]
            sizes = [o.size for o in s.objects]
            if sizes == ["small", "large"]:
                assert areas[0] < areas[1]
        checked[s.kind] += 1
    assert min(checked.values()) > 10


def test_large_objects_cover_more_pixels_than_small_ones():
    def area(size):
        scene = shapes.place(shapes.Scene("single", (shapes.Obj("circle", "red", size),), position="center"))
        return (np.asarray(shapes.render(scene)).max(-1) > 120).sum()

    assert area("large") > 2 * area("small")


def test_to_tensor_range_and_layout():
    x, caps, scenes = shapes.batch(range(4), "heldout")
    assert x.shape == (4, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert x.min() == -1  # black background
    assert caps == [s.caption for s in scenes]
