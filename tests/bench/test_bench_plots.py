"""Pictures a person can read (issue 19): the Pareto plot's axes separate the methods, its labels do not overlap,
grid captions wrap at word boundaries."""

import json
from pathlib import Path

import numpy as np

from ilf.bench.plots import pareto_metrics, pareto_plot, place_labels

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _results(acc, psnr):
    rows = [{"display": f"m{i}", "family": "plain", "steps": 10 + i, "block_forwards": 100 + 10 * i,
             "seconds_per_image": 1.0 + i, "reference": i == 0,
             "metrics": {"accuracy": a, "psnr": p}} for i, (a, p) in enumerate(zip(acc, psnr))]
    return {"rows": rows, "metrics": ["accuracy", "psnr"], "reference": "m0", "source": {"name": "t"}}


def test_the_pareto_axes_are_psnr_and_a_quality_only_where_it_varies():
    flat = _results([0.98, 0.98, 0.98], [None, 38.0, 36.0])
    assert pareto_metrics(flat) == ["psnr"]  # accuracy 0.98 for every method separates nothing
    moving = _results([0.98, 0.95, 0.90], [None, 38.0, 36.0])
    assert pareto_metrics(moving) == ["psnr", "accuracy"]
    assert pareto_metrics(moving, "accuracy") == ["accuracy"]  # --pareto-metric still wins
    # the committed digits demo: accuracy 0.98 everywhere, so its plot is PSNR only
    digits = json.loads((DOCS / "demo-digits" / "results.json").read_text())
    assert {r["metrics"]["accuracy"] for r in digits["rows"]} == {digits["rows"][0]["metrics"]["accuracy"]}
    assert pareto_metrics(digits) == ["psnr"]


def test_labels_of_crowded_points_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    fig, ax = plt.subplots(figsize=(4, 3))
    pts = [(1.0, 1.0), (1.02, 1.01), (1.01, 0.99), (1.03, 1.0), (2.0, 2.0), (2.01, 2.0), (1.0, 1.02), (3, 1)]
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o")
    texts = ["20", "12 (=ref, ∞)", "11", "10", "paper cache", "TaylorSeer", "ILF", "x"]
    anns = place_labels(ax, pts, texts, ["k"] * len(pts))
    fig.canvas.draw()
    boxes = [Text.get_window_extent(a) for a in anns]  # the texts (a far label has a leader line too)
    overlaps = [(texts[i], texts[j]) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                if boxes[i].overlaps(boxes[j])]
    assert overlaps == []
    # the naive placement (every label at the same offset) does overlap here: the test has teeth
    naive = [ax.annotate(t, p, textcoords="offset points", xytext=(5, 4), fontsize=7) for t, p in zip(texts, pts)]
    fig.canvas.draw()
    nb = [a.get_window_extent() for a in naive]
    assert any(nb[i].overlaps(nb[j]) for i in range(len(nb)) for j in range(i + 1, len(nb)))
    plt.close(fig)


def test_pareto_plot_draws_one_row_per_axis(tmp_path):
    from PIL import Image

    path = tmp_path / "p.png"
    assert pareto_plot(_results([0.98, 0.95, 0.90], [None, 38.0, np.inf]), path)
    two_rows = Image.open(path).size
    assert pareto_plot(_results([0.98, 0.98, 0.98], [None, 38.0, 36.0]), path)
    one_row = Image.open(path).size
    assert two_rows[0] == one_row[0] and two_rows[1] > 1.8 * one_row[1]


def test_grid_captions_wrap_between_words_and_lose_none():
    from PIL import Image, ImageDraw

    from ilf.bench.grids import wrap_caption

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
    prompt = "a small red circle above a large blue square to the left of a green triangle"
    lines = wrap_caption(prompt, 120, measure)
    assert len(lines) > 1
    assert " ".join(lines) == prompt  # every word kept, none cut mid-word
    assert all(measure(line) <= 120 for line in lines)
    assert wrap_caption("class 3", 120, measure) == ["class 3"]


def test_a_grid_with_long_prompts_grows_its_header(tmp_path):
    from PIL import Image

    from ilf.bench.grids import make_grid

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    long = "a small red circle above a large blue square to the left of a green triangle below a cat"
    items = [{"id": "0", "seed": 0, "prompt": long}]
    for name, value in (("a", 0), ("b", 255)):
        Image.new("RGB", (16, 16), (value, value, value)).save(tmp_path / name / "0.png")
    rows = [{"display": "plain:20", "reference": True, "images": "a"}, {"display": "ilf:10", "reference": False,
                                                                        "images": "b"}]
    make_grid({"items": items, "rows": rows}, tmp_path, tmp_path / "g.png")
    short = dict(items[0], prompt="a cat")
    make_grid({"items": [short], "rows": rows}, tmp_path, tmp_path / "s.png")
    tall, low = Image.open(tmp_path / "g.png").size[1], Image.open(tmp_path / "s.png").size[1]
    assert tall > low  # the long caption took more lines instead of being cut


def test_the_grid_shows_each_rows_error_against_the_reference(tmp_path):
    # issue 25: the corrector's row did not visibly support the verdict; every non-reference row now has an error
    # map |image − reference| beside its zoom: white where the images agree, red where they differ
    from PIL import Image

    from ilf.bench.grids import HEADER_HEIGHT, LABEL_WIDTH, make_grid

    ref = np.full((16, 16, 3), 128, np.uint8)
    changed = ref.copy()
    changed[:8, :8] = 255  # the top-left quadrant differs
    for name, arr in (("ref", ref), ("same", ref), ("changed", changed)):
        (tmp_path / name).mkdir()
        Image.fromarray(arr).save(tmp_path / name / "0.png")
    rows = [{"display": "plain:20", "reference": True, "images": "ref"},
            {"display": "same", "reference": False, "images": "same"},
            {"display": "corrector", "reference": False, "images": "changed"}]
    make_grid({"items": [{"id": "0", "seed": 0, "prompt": "a cat"}], "rows": rows}, tmp_path, tmp_path / "g.png")
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB")).astype(int)
    cell = 128

    def error_cell(row):
        top, left = HEADER_HEIGHT + row * cell, LABEL_WIDTH + 2 * cell
        return grid[top:top + cell, left:left + cell]

    assert grid.shape[1] == LABEL_WIDTH + 3 * cell
    assert (error_cell(1) == 255).all()  # identical to the reference: a white map
    hot, cold = error_cell(2)[: cell // 2 - 2, : cell // 2 - 2], error_cell(2)[cell // 2 + 2:, cell // 2 + 2:]
    assert (cold == 255).all()
    assert (hot[..., 0] > 100).all() and (hot[..., 1] < 40).all() and (hot[..., 2] < 40).all()  # the changed part


def test_pareto_gives_each_method_its_own_look_and_joins_only_one_methods_steps(tmp_path, monkeypatch):
    # issue 25: the corrector and ILF shared a colour, a dotted line joined the front's different methods, and
    # labels drifted off their points
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import ilf.bench.plots as plots

    results = json.loads((DOCS / "demo-shapes" / "results.json").read_text())
    figs, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    assert pareto_plot(results, tmp_path / "p.png")
    (fig,) = figs
    by_point = {}
    for r in results["rows"]:
        by_point.setdefault(("block_forwards", r["block_forwards"]), set()).add(r["display"])
    ax = fig.axes[1]  # PSNR vs block forwards
    styles = {}
    for line in ax.get_lines():
        xs = list(line.get_xdata())
        if line.get_linestyle() not in ("None", "none", "") and len(xs) > 1:
            methods = {r["display"].split(":")[0] for r in results["rows"] if r["block_forwards"] in xs
                       and r["family"] == "plain"}
            assert line.get_color() == plots.FAMILY_COLORS["plain"] and methods == {"plain"}, xs  # only plain:N
        if line.get_label() in {r["family"] for r in results["rows"]}:
            styles[line.get_label()] = (line.get_color(), line.get_marker())
    assert {"corrector", "ilf", "taylorseer", "paper-cache", "plain"} <= set(styles)
    assert len(set(styles.values())) == len(styles)  # no two families look alike
    anns = [c for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)]
    assert len(anns) == len(results["rows"]) - 1  # every non-reference point labelled (the reference has no PSNR)
    assert all(a.arrow_patch is not None for a in anns)  # anchored to its point by a leader
    assert {a.get_text() for a in anns} >= {"corrector", "ILF paper mode", "TaylorSeer (diffusers)"}
    close(fig)
