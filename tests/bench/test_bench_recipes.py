"""Paper recipes: every shipped preset parses and gives the paper's block forwards on a 28-block model; the
Table 1 and Table 2 recipes run end to end on tiny stand-ins (a 28-block tiny PixArt, a tiny DiT)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_feedback_config
from ilf.bench.cmd_bench import BENCH_DEFAULTS
from ilf.bench.errors import BenchError
from ilf.bench.methods import get_family, parse_method
from ilf.bench.recipes import RECIPE_DIR, load_recipe
from ilf.cli import main

PAPER_BLOCKS = {  # recipe -> {row label: block forwards in the paper}
    "table1-pixart-alpha-512": [560, 336, 326, 332],
    "table1-pixart-alpha-1024": [560, 336, 326, 332],
    "table1-pixart-sigma-512": [560, 336, 326, 332],
    "table1-pixart-sigma-1024": [560, 336, 326, 332],
    "table2-dit-xl-2-256": [336, 304, 700, 584, 1400, 1144],
    "table3-loop-ablation": [560, 420, 420, 420, 388, 388, 388],
    "table6-cache-location": [560, 440, 440, 440, 440, 440],
}


def _vars(tmp_path):
    out = {k: "unused" for k in ("IR_PROMPTS", "MJHQ", "CLIP", "INCEPTION", "IMAGEREWARD_PYTHON", "ADM_REF")}
    out["FEEDBACK"] = str(write_feedback_config(tmp_path / "fb", (8, 19)))
    for b, e in ((0, 5), (11, 16), (22, 27), (0, 11), (8, 19), (16, 27)):
        out[f"FB_{b}_{e}"] = str(write_feedback_config(tmp_path / f"fb{b}-{e}", (b, e)))
    return out


def test_every_recipe_is_tested():
    assert sorted(p.stem for p in RECIPE_DIR.glob("*.toml")) == sorted(PAPER_BLOCKS)


@pytest.mark.parametrize("name", sorted(PAPER_BLOCKS))
def test_recipe_block_forwards_are_the_papers(name, tmp_path):
    variables = _vars(tmp_path)
    if name.startswith("table2"):  # DiT's 11-block loop (see the recipe's note)
        variables["FEEDBACK"] = str(write_feedback_config(tmp_path / "dit", (8, 18)))
    allowed = set(BENCH_DEFAULTS) | {"pipeline", "dtype", "scheduler", "guidance_scale", "feedback", "clip",
                                      "inception", "imagereward_python", "fid_ref", "prompts", "images_per_prompt",
                                      "num_images", "metrics", "report_metrics", "npz", "diagnostics"}
    parts = load_recipe(name, variables, allowed)
    blocks = []
    for _, settings in parts:
        for text in settings["methods"]:
            spec = parse_method(text)
            if spec.name not in [b[0] for b in blocks]:
                fam = get_family(spec.family)
                blocks.append((spec.name, fam.predicted_block_forwards(spec, 28, settings.get("feedback"))))
    assert [b for _, b in blocks] == PAPER_BLOCKS[name]


def test_recipe_variables_defaults_and_errors(tmp_path):
    with pytest.raises(BenchError, match=r"--set FEEDBACK=VALUE"):
        load_recipe("table1-pixart-alpha-512", {})
    parts = load_recipe("table6-cache-location", {"IR_PROMPTS": "p.json", "IMAGEREWARD_PYTHON": "py", "C": "14"})
    assert "blocks=14" in parts[0][1]["methods"][1]
    bad = tmp_path / "bad.toml"
    bad.write_text('methods = ["plain:20"]\nnum_imgs = 3\n')
    with pytest.raises(BenchError, match="num_imgs"):
        load_recipe(str(bad), {}, allowed={"methods", "num_images"})
    parts = load_recipe("table2-dit-xl-2-256", {"FEEDBACK": "f", "INCEPTION": "i", "ADM_REF": "a"})
    assert Path(parts[0][1]["prompts"]).read_text().splitlines()[-1] == "999"  # ${RECIPE_DIR}
    assert [name for name, _ in parts] == ["steps12", "steps25", "steps50"]


def test_table1_recipe_runs_on_a_tiny_28_block_pixart(tmp_path):
    from ilf import ILFConfig, apply_ilf, save_feedback
    from ilf.tiny import tiny_pipeline

    pipe = tiny_pipeline("pixart-alpha", num_layers=28)
    apply_ilf(pipe, ILFConfig(loop=(8, 19)))
    save_feedback(pipe, tmp_path / "fb")
    (tmp_path / "ir.json").write_text(json.dumps([{"id": "000", "prompt": "a red cat"}]))
    (tmp_path / "mjhq").mkdir()
    (tmp_path / "mjhq" / "meta_data.json").write_text(json.dumps({"m1": {"prompt": "a small square"}}))
    sets = [f"--set={k}={v}" for k, v in {"FEEDBACK": tmp_path / "fb", "IR_PROMPTS": tmp_path / "ir.json",
                                          "MJHQ": tmp_path / "mjhq", "CLIP": "-", "INCEPTION": "-",
                                          "IMAGEREWARD_PYTHON": "-"}.items()]
    out = tmp_path / "out"
    assert main(["bench", "--recipe", "table1-pixart-alpha-512", "--tiny", "pixart", "--threads", "1", *sets,
                 "--metrics", "fidelity", "--report-metrics", "psnr", "--num-images", "1", "--repeats", "0",
                 "--grid-items", "0", "--out", str(out), "--no-progress"]) == 0
    merged = json.loads((out / "results.json").read_text())
    assert merged["merged_from"] == ["imagereward", "mjhq"]
    assert [r["block_forwards"] for r in merged["rows"]] == [560, 336, 326, 332]
    assert [r["display"] for r in merged["rows"]][3] == "PixArt-alpha w/ ours"
    part = json.loads((out / "imagereward" / "results.json").read_text())
    assert part["items"][0]["id"] == "000_0"  # ImageReward's naming, from the recipe's prompts file
    assert (out / "imagereward" / "diagnostics" / "time_change.png").is_file()
    assert "| PixArt-alpha w/ ours | 10 | 332 (1.7x) |" in (out / "table.md").read_text()


def test_table2_recipe_packs_adm_npz_on_a_tiny_dit(tmp_path):
    from ilf import ILFConfig, apply_ilf, save_feedback
    from ilf.tiny import tiny_pipeline

    pipe = tiny_pipeline("dit", num_layers=6)
    apply_ilf(pipe, ILFConfig(loop=(1, 3)))
    save_feedback(pipe, tmp_path / "fb")
    out = tmp_path / "out"
    assert main(["bench", "--recipe", "table2-dit-xl-2-256", "--tiny", "dit", "--tiny-layers", "6", "--threads", "1",
                 f"--set=FEEDBACK={tmp_path / 'fb'}", "--set=INCEPTION=-", "--set=ADM_REF=-", "--metrics",
                 "fidelity", "--num-images", "2", "--batch-size", "2", "--repeats", "0", "--grid-items", "0",
                 "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "steps12" / "results.json").read_text())
    assert [it["class_label"] for it in res["items"]] == [0, 1]  # imagenet-classes.txt, cycled
    assert [r["block_forwards"] for r in res["rows"]] == [6 * 12, 6 * 10 + 2 * 4]  # loop 1-3, outer:1
    for rel in res["outputs"]["npz"]:
        with np.load(out / "steps12" / rel) as data:
            assert data["arr_0"].shape == (2, 16, 16, 3) and data["arr_0"].dtype == np.uint8
    merged = json.loads((out / "results.json").read_text())
    assert len(merged["rows"]) == 6


def test_recipes_ship_inside_the_package():
    # `--recipe NAME` must work from a pip install, not only from a checkout: the recipes are package data
    import ilf.bench

    assert RECIPE_DIR.parent == Path(ilf.bench.__file__).resolve().parent
    assert (RECIPE_DIR / "imagenet-classes.txt").is_file()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"bench/recipes/*.toml"' in pyproject and '"bench/recipes/*.txt"' in pyproject


def test_a_recipe_reports_every_missing_value_at_once(monkeypatch):
    for name in ("FEEDBACK", "MJHQ", "CLIP", "INCEPTION", "IMAGEREWARD_PYTHON", "IR_PROMPTS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BenchError) as info:
        load_recipe("table1-pixart-alpha-512", {"FEEDBACK": "fb", "MJHQ": "m"})
    msg = str(info.value)
    assert "4 value(s) not set: CLIP, INCEPTION, IMAGEREWARD_PYTHON, IR_PROMPTS" in msg
    for name in ("CLIP", "INCEPTION", "IMAGEREWARD_PYTHON", "IR_PROMPTS"):
        assert f"--set {name}=VALUE" in msg
    assert "FEEDBACK=" not in msg and "MJHQ=" not in msg


def test_the_ilf_row_says_whose_schedule_it_runs():
    from ilf import ILFConfig
    from ilf.bench.family_ilf import schedule_source

    saved = ILFConfig(loop=(1, 3), feedback_steps="last:2", t_post="none", num_inference_steps=10)
    words, differs = schedule_source(10, saved, saved, {})
    assert words == "plan last:2 (the feedback's recorded); t_post none (the feedback's recorded); 10 steps (as trained)"
    assert not differs
    paper = ILFConfig(loop=(1, 3), feedback_steps="outer:2", t_post="rescale", num_inference_steps=10)
    words, differs = schedule_source(10, paper, saved, {"feedback_steps": "outer:2", "t_post": "rescale"})
    assert differs and "plan outer:2 from the method string, not the feedback's recorded last:2" in words
    assert "t_post rescale from the method string, not the feedback's recorded none" in words
    words, differs = schedule_source(12, saved, saved, {})
    assert differs and "12 steps, not the 10 the feedback was trained for" in words


def test_bench_notes_and_warns_when_a_row_leaves_the_trained_schedule(tmp_path, capsys):
    from ilf import ILFConfig, apply_ilf, save_feedback
    from ilf.tiny import tiny_pipeline

    pipe = tiny_pipeline("pixart-alpha", num_layers=6)
    apply_ilf(pipe, ILFConfig(loop=(1, 3), feedback_steps="last:1", t_post="none", num_inference_steps=4))
    save_feedback(pipe, tmp_path / "fb")
    out = tmp_path / "out"
    assert main(["bench", "--tiny", "pixart", "--tiny-layers", "6", "--threads", "1", "--feedback",
                 str(tmp_path / "fb"), "--methods", "plain:4", "ilf:4,label=as trained",
                 "ilf:4,plan=outer:1,t_post=rescale,label=paper plan", "--metrics", "fidelity", "--num-images", "1",
                 "--repeats", "0", "--grid-items", "0", "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: ilf:4,plan=outer:1" in err and "not the feedback's recorded last:1" in err
    assert err.count("ilf bench: warning:") == 1  # the row on its trained schedule warns nothing
    table = (out / "table.md").read_text()
    assert "- as trained: plan last:1 (the feedback's recorded); t_post none (the feedback's recorded)" in table
    assert "- paper plan: plan outer:1 from the method string, not the feedback's recorded last:1" in table
