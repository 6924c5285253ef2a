"""The shipped evaluators read real images: accuracy floors, alignment on matching vs mismatched captions."""

import pytest
import torch

from ilf.worlds import digits, evaluators, shapes


@pytest.fixture(scope="module")
def reader():
    return evaluators.load_evaluator("shapes")


@pytest.fixture(scope="module")
def heldout():
    x, caps, scenes = shapes.batch(range(300), "heldout")
    return (x + 1) / 2, caps, scenes  # images in [0, 1]


def test_reader_heads_are_accurate_on_rendered_heldout_images(reader, heldout):
    x, _, scenes = heldout
    acc = evaluators.shapes_head_accuracy(reader, x, scenes)
    assert set(acc) == set(evaluators.SHAPES_HEADS)
    assert min(acc.values()) > 0.9, acc


def test_alignment_is_high_on_matching_captions_and_low_on_mismatched(reader, heldout):
    x, caps, _ = heldout
    match = reader.score(x, caps)
    assert float(match.mean()) > 0.95
    shuffled = caps[1:] + caps[:1]
    assert float(reader.score(x, shuffled).mean()) < 0.5


def _recolour(caption):
    s = shapes.parse_caption(caption)
    o = s.objects[0]
    other = next(c for c in shapes.COLOR_NAMES if c != o.color and all(c != p.color for p in s.objects))
    return shapes.Scene(s.kind, (shapes.Obj(o.shape, other, o.size),) + s.objects[1:], s.position, s.count,
                        s.relation).caption


def test_alignment_drops_by_exactly_the_wrong_attribute(reader, heldout):
    x, caps, scenes = heldout
    right = reader.score(x, caps)
    wrong = reader.score(x, [_recolour(c) for c in caps])
    n_attrs = torch.tensor([{"single": 5, "count": 4, "relation": 7}[s.kind] for s in scenes], dtype=torch.float)
    ok = right == 1  # images the reader reads perfectly lose one attribute's share
    assert ok.float().mean() > 0.9
    assert torch.allclose(wrong[ok], 1 - 1 / n_attrs[ok])


def test_relation_is_judged_as_the_picture_shows_it(reader):
    a, b = shapes.Obj("circle", "red", "small"), shapes.Obj("square", "blue", "large")
    scene = shapes.place(shapes.Scene("relation", (a, b), relation="above"), seed=5)
    img = [shapes.render(scene)]
    same = ["a small red circle above a large blue square", "a large blue square below a small red circle"]
    flipped = "a small red circle below a large blue square"
    assert reader.score(img * 2, same).tolist() == [1.0, 1.0]
    assert reader.score(img, [flipped]).item() == pytest.approx(6 / 7)


def test_soft_alignment_is_a_probability_weighted_version(reader, heldout):
    x, caps, _ = heldout
    soft = reader.score(x[:50], caps[:50], soft=True)
    assert torch.all((soft >= 0) & (soft <= 1)) and float(soft.mean()) > 0.9


def test_features_for_frechet_distance(reader, heldout):
    x, _, _ = heldout
    f = reader.features(x[:20])
    assert f.shape == (20, 128) and torch.isfinite(f).all()
    assert f.std(0).gt(0).sum() > 32  # not collapsed
    # numpy [B, H, W, 3] and PIL inputs give the same features
    assert torch.allclose(reader.features(x[:4].permute(0, 2, 3, 1).numpy()), f[:4], atol=1e-5)
    pil = [shapes.sample(i, "heldout")[0] for i in range(2)]
    assert torch.allclose(reader.features(pil), f[:2], atol=1e-5)


def test_digits_classifier_reads_heldout_digits():
    ev = evaluators.load_evaluator("digits")
    x, y = digits.batch(range(360), "heldout")
    assert float(ev.score((x + 1) / 2, y).mean()) > 0.95
    wrong = (y + 1) % 10
    assert float(ev.score((x + 1) / 2, wrong).mean()) < 0.05
    assert ev.features((x[:8] + 1) / 2).shape == (8, 64)


def test_bad_input_shape_is_rejected(reader):
    with pytest.raises(ValueError):
        reader.features(torch.rand(2, 3, 64, 64))
