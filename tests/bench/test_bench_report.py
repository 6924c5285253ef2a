"""Tables, merging and the Pareto front as pure functions of hand-made results."""

import math

from ilf.bench.plots import pareto_front, pareto_plot
from ilf.bench.report import best_rows, markdown_table, merge_results, time_noise_note, time_ties


def _row(spec, steps, blocks, sec, metrics, reference=False, family="plain", peak=1000.0):
    return {"method": {"spec": spec}, "display": spec, "family": family, "steps": steps, "reference": reference,
            "block_forwards": blocks, "block_speedup": 560 / blocks, "seconds_per_image": sec,
            "speedup": 1.06 / sec if sec else None, "peak_memory": {"peak_mib": peak}, "metrics": metrics}


def _results(rows, metrics):
    return {"rows": rows, "metrics": metrics, "reference": rows[0]["method"]["spec"],
            "source": {"name": "x", "transformer_class": "PixArtTransformer2DModel", "num_blocks": 28,
                       "dtype": "float16", "device": "cuda"},
            "settings": {"num_images": 10, "batch_size": 1, "repeats": 3, "time_batch": 1, "warmup": 1}}


TABLE1 = _results([  # the paper's PixArt-alpha 512 rows (ImageReward, CLIP, FID, Noisy)
    _row("plain:20", 20, 560, 1.06, {"imagereward": 92.03, "clip_score": 29.06, "fid": 7.13, "clip_iqa_noisy": 17.17},
         reference=True),
    _row("plain:12", 12, 336, 0.62, {"imagereward": 88.42, "clip_score": 29.02, "fid": 7.86, "clip_iqa_noisy": 18.95}),
    _row("cache", 20, 326, 0.59, {"imagereward": 82.95, "clip_score": 28.93, "fid": 6.56, "clip_iqa_noisy": 19.52},
         family="paper-cache"),
    _row("ours", 10, 332, 0.59, {"imagereward": 89.47, "clip_score": 29.11, "fid": 7.20, "clip_iqa_noisy": 16.89},
         family="ilf", peak=1043.0),
], ["imagereward", "clip_score", "fid", "clip_iqa_noisy"])


def test_best_per_column_follows_the_metric_direction_and_skips_the_reference():
    assert best_rows(TABLE1, "imagereward") == {3}  # 89.47 (the reference's 92.03 is not a contender)
    assert best_rows(TABLE1, "fid") == {2}  # lower is better: 6.56
    assert best_rows(TABLE1, "clip_iqa_noisy") == {3}  # lower is better: 16.89


def test_markdown_table_has_table1_shape():
    table = markdown_table(TABLE1)
    lines = table.splitlines()
    assert lines[0] == "| Method | # Steps | # Blocks | s / img | Peak MiB | ImageReward | CLIP | FID ↓ | Noisy ↓ |"
    assert lines[2].startswith("| plain:20 (reference) | 20 | 560 | 1.06 |")
    assert "| ours | 10 | 332 (1.7x) | 0.59 (1.8x) | 1043 | **89.47** | **29.11** | 7.20 | **16.89** |" in lines
    assert "| cache | 20 | 326 (1.7x) | 0.59 (1.8x) | 1000 | 82.95 | 28.93 | **6.56** |" in table


def test_a_peak_memory_that_is_the_same_on_every_row_is_left_out_with_a_note():
    # issue 25: the demos' CPU tables showed 874.5 MiB on every row (the process's RSS high-water mark)
    rows = [_row("plain:20", 20, 560, 1.0, {"psnr": math.inf}, reference=True, peak=874.48),
            _row("plain:10", 10, 280, 0.5, {"psnr": 30.0}, peak=874.48)]
    for r in rows:
        r["peak_memory"]["kind"] = "process_rss_high_water"
    table = markdown_table(_results(rows, ["psnr"]))
    assert "Peak MiB" not in table.splitlines()[0]
    assert "Peak memory left out: every method read the same process rss high water within 1 % (874.5 MiB)" in table
    rows[1]["peak_memory"]["peak_mib"] = 875.1  # 0.07 % apart (the digits demo's spread): still noise
    assert "Peak MiB" not in markdown_table(_results(rows, ["psnr"])).splitlines()[0]


def test_infinite_psnr_is_shown_and_counts_as_best():
    res = _results([_row("a", 20, 120, 1.0, {}, reference=True), _row("b", 20, 60, 0.5, {"psnr": math.inf}),
                    _row("c", 10, 60, 0.5, {"psnr": 30.0})], ["psnr"])
    assert best_rows(res, "psnr") == {1}
    assert "| **∞** |" in markdown_table(res)


def test_merge_adds_metrics_of_other_prompt_sets_and_new_rows():
    a = _results([_row("plain:20", 20, 560, 1.0, {"imagereward": 90.0}, reference=True),
                  _row("ilf:10", 10, 332, 0.6, {"imagereward": 91.0})], ["imagereward"])
    b = _results([_row("plain:20", 20, 560, None, {"fid": 7.0, "imagereward": 1.0}, reference=True),
                  _row("ilf:10", 10, 332, None, {"fid": 6.0}), _row("plain:12", 12, 336, None, {"fid": 8.0})],
                 ["fid", "imagereward"])
    m = merge_results([a, b])
    assert m["metrics"] == ["imagereward", "fid"]
    assert [r["method"]["spec"] for r in m["rows"]] == ["plain:20", "ilf:10", "plain:12"]
    assert m["rows"][0]["metrics"] == {"imagereward": 90.0, "fid": 7.0}  # the first measurement wins
    assert m["rows"][1]["seconds_per_image"] == 0.6  # latency from the part that timed it


def test_pareto_front_by_hand():
    pts = [(1.0, 10.0), (2.0, 12.0), (2.0, 11.0), (3.0, 12.0), (0.5, 5.0)]
    assert sorted(pareto_front(pts, higher_is_better=True)) == [0, 1, 4]
    assert sorted(pareto_front([(1.0, 3.0), (2.0, 1.0), (3.0, 2.0)], higher_is_better=False)) == [0, 1]


def test_pareto_plot_writes_a_png(tmp_path):
    assert pareto_plot(TABLE1, tmp_path / "p.png") is True  # ImageReward on the y axis
    assert (tmp_path / "p.png").stat().st_size > 1000


def _timed(name, times, reference=False):
    r = _row(name, 10, 280, sorted(times)[len(times) // 2], {"psnr": 30.0}, reference=reference)
    r["times"] = times
    return r


def test_s_per_img_differences_within_the_run_to_run_spread_are_called_noise(tmp_path):
    # issue 25: the s/img panel flipped between runs with no warning. The digits demo's corrector (0.15-0.19) and
    # TaylorSeer (0.167-0.203) overlap; plain:20 (0.24-0.25) and plain:10 (0.134-0.137) stand apart from both
    rows = [_timed("plain:20", [0.237, 0.249, 0.242], reference=True), _timed("plain:10", [0.134, 0.137, 0.135]),
            _timed("TaylorSeer", [0.167, 0.203, 0.169]), _timed("corrector", [0.15, 0.19, 0.18])]
    results = _results(rows, ["psnr"])
    assert time_ties(results) == [["corrector", "TaylorSeer"]]  # fastest call first
    table = markdown_table(results)
    assert ("s / img within run-to-run noise (their timed calls' ranges overlap, so their order can flip between "
            "runs): corrector, TaylorSeer.") in table
    rows[3]["times"] = [0.150, 0.160, 0.165]  # now below TaylorSeer's fastest call: an order the run supports
    assert time_ties(results) == [] and "run-to-run noise" not in markdown_table(results)
    rows[3]["times"] = [0.16]  # a single timed call says nothing about noise: the table says so
    assert "one timed call per method, so its run-to-run noise is not measured" in markdown_table(results)
    rows[3]["times"] = [0.2, 0.23, 0.24]  # overlaps TaylorSeer's slowest call and plain:20's fastest
    chain = time_ties(results)  # one group holds every row linked by overlaps, fastest first
    assert chain == [["TaylorSeer", "corrector", "plain:20"]]
    assert time_noise_note(results).endswith("TaylorSeer, corrector, plain:20.")


def test_the_pareto_plot_says_which_s_per_img_differences_are_noise(tmp_path, monkeypatch):
    import ilf.bench.plots as plots

    said = []
    real = plots._plt

    def spy_plt():
        plt = real()
        orig = plt.Axes.text

        def text(ax, x, y, s, *a, **k):
            said.append(s)
            return orig(ax, x, y, s, *a, **k)

        monkeypatch.setattr(plt.Axes, "text", text)
        return plt

    monkeypatch.setattr(plots, "_plt", spy_plt)
    rows = [_timed("plain:20", [0.237, 0.249, 0.242], reference=True), _timed("plain:10", [0.134, 0.137, 0.135]),
            _timed("TaylorSeer", [0.167, 0.203, 0.169]), _timed("corrector", [0.15, 0.19, 0.18])]
    rows[0]["metrics"]["psnr"] = math.inf
    assert pareto_plot(_results(rows, ["psnr"]), tmp_path / "p.png")
    assert any(s.startswith("within run-to-run noise") and "corrector, TaylorSeer" in s for s in said), said
