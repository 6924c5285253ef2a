"""Every method family on tiny SD3 / Flux / Sana pipelines: the block forwards each must give (by hand, from each
method's rule), the stock output bit for bit after detaching, and the refusals with their reasons."""

import json

import pytest
import torch

from ilf import count_block_forwards
from ilf.adapters import get_adapter
from ilf.bench.errors import MethodRefused
from ilf.bench.hook_context import attach_diffusers_hooks
from ilf.bench.family import MethodContext
from ilf.bench.methods import get_family, parse_method
from ilf.bench.stock import check_stock, fingerprint
from ilf.cli import main
from ilf.eval.prompts import make_items
from ilf.eval.sources import default_conditions, load_tiny_source
from ilf.hooks import bind_arguments

STEPS, BLOCKS = 8, 6
# FasterCache calls torch.meshgrid without `indexing=` (its own deprecation warning, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")


class Family:
    """A tiny pipeline, one item, its stock images at STEPS steps and each call's timestep (scheduler units)."""

    def __init__(self, kind, **call_kwargs):
        self.src = load_tiny_source(kind, num_layers=BLOCKS, **call_kwargs)
        self.items = make_items(default_conditions(self.src, 1), num_images=1)
        model = self.src.pipe.transformer
        units = get_adapter(model).timestep_units(model)
        self.timesteps = []
        h = model.register_forward_pre_hook(lambda m, a, k: self.timesteps.append(
            float(bind_arguments(type(m).forward, a, k)["timestep"].flatten()[0]) / units), with_kwargs=True)
        self.stock_images = self.src(self.items, STEPS)
        h.remove()
        self.stock = fingerprint(self.src.pipe)

    def run(self, text):
        """Prepare, attach, generate (counting), detach; the pipeline must be stock again, bit for bit."""
        spec = parse_method(text)
        fam = get_family(spec.family)
        ctx = MethodContext(self.src.pipe, BLOCKS, run_once=lambda s: self.src(self.items, s), feedback="untrained",
                            cfg_batch=self.src.cfg_batch)
        try:
            prepared = fam.prepare(spec, ctx)
            att = prepared.attach(self.src.pipe)
            try:
                att.before_call()
                with count_block_forwards(self.src.pipe) as counter:
                    images = self.src(self.items, spec.steps)
                stats = att.stats()
            finally:
                att.detach()
        finally:
            check_stock(self.src.pipe, self.stock, spec.name)
            assert torch.equal(self.src(self.items, STEPS), self.stock_images), f"{text}: not stock afterwards"
        predicted = fam.predicted_block_forwards(spec, BLOCKS, "untrained")
        predicted = prepared.info.get("predicted_block_forwards", predicted)
        return counter.total, predicted, stats, images


@pytest.fixture(scope="module")
def families():
    return {}


def family(families, kind, **kw):
    key = (kind, tuple(sorted(kw.items())))
    if key not in families:
        families[key] = Family(kind, **kw)
    return families[key]


# Hand counts for 6 blocks and 8 steps. plain: 6 per step. ILF loop 1-3 (m = 3), outer:2: 4 feedback steps of
# 6 + 3 + 1 and 4 of 6. Paper cache, 2 blocks, refresh 2: steps 0, 2, 4, 6 full, the others 4 blocks. FBC and
# MagCache at threshold 1e9 skip whenever they may: FBC runs block 0 (and SD3's text-less last block, outside its
# hooks) after step 0; MagCache computes steps 0-1 (retention 0.2), then skips 3, computes 1, skips 2: 3 steps.
# TaylorSeer interval 2, warm-up 2 computes steps 0, 1, 3, 5, 7 (SD3's last block also on the 3 others).
# cache-dit Fn=1 Bn=0, 2 warm-up steps, then block 0 only (Flux: its dual and single lists are one chain).
COUNTS = {
    "plain:8": dict(sd3=48, flux=48, sana=48),
    "ilf:8,loop=1-3,plan=outer:2": dict(sd3=64, flux=64, sana=64),
    "paper-cache:8,blocks=2,refresh=2": dict(sd3=40, flux=40, sana=40),
    "fbc:8,threshold=1e9": dict(sd3=6 + 7 * 2, flux=6 + 7),
    "magcache:8,threshold=1e9,max_skip=3,retention=0.2": dict(sd3=18, flux=18),
    "taylorseer:8,interval=2,warmup=2": dict(sd3=30 + 3, flux=30, sana=30),
    "taylorseer:8,interval=2,warmup=2,mode=lite": dict(sd3=30 + 3),  # SD3: its last block is left out
    "cache-dit:8,fn=1,bn=0,threshold=1e9,warmup=2": dict(sd3=18, flux=18, sana=18),
    "seacache:8,threshold=1e9": dict(flux=24),  # computes steps 0, 3, 6 (after 2 reused) and 7 (the last)
}


@pytest.mark.parametrize("kind", ["sd3", "flux", "sana"])
@pytest.mark.parametrize("method", list(COUNTS))
def test_block_forwards_of_every_family(families, kind, method):
    if kind not in COUNTS[method]:
        pytest.skip("refused on this family (test_refusals), or nothing family-specific to test")
    if method.startswith("cache-dit"):
        pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (pip install 'ilf[cache-dit]')")
    f = family(families, kind)
    blocks, predicted, _, images = f.run(method)
    assert blocks == COUNTS[method][kind]
    if predicted is not None:
        assert predicted == blocks  # what the table predicts is what ran
    if not method.startswith("plain"):
        assert not torch.equal(images, f.stock_images)  # it changed something


@pytest.mark.parametrize("kind", ["sd3", "flux", "sana"])
def test_attention_hooks_follow_their_rules_in_scheduler_units(families, kind):
    # PAB computes attention on call 0, outside (100, 800) and every 2nd call in range (cross-attention: every
    # 4th), with t in the scheduler's units: Flux calls its model with t/1000, read back x1000. FasterCache's
    # CFG-cache skips the unconditional half on calls i > 0 with t in (-1, 641) and i % 5 != 0, where the
    # pipeline batches [uncond, cond] (SD3, Sana); Flux has no batched CFG.
    f = family(families, kind)
    ts = f.timesteps
    assert len(ts) == STEPS and 900 < ts[0] <= 1000 and ts[-1] < 300

    def computed(skip):
        return sum(1 for i, t in enumerate(ts) if i == 0 or not (100 < t < 800) or i % skip == 0)

    blocks, _, stats, _ = f.run("pab:8,spatial=2,cross=4")
    assert blocks == BLOCKS * STEPS  # every block runs: only attention is reused
    assert stats["path"] == ("enable_cache" if kind == "flux" else "cache-context shim")
    hooked = stats["hooked"]
    assert hooked["self_attention"]["computed"] == BLOCKS * computed(2) < BLOCKS * STEPS
    if kind == "sana":  # Sana's blocks cross-attend to the caption; SD3's and Flux's attend jointly
        assert hooked["cross_attention"]["computed"] == BLOCKS * computed(4)
    else:
        assert "cross_attention" not in hooked
    blocks, _, stats, _ = f.run("fastercache:8")
    assert blocks == BLOCKS * STEPS
    if kind == "flux":
        assert "uncond_skipped_calls" not in stats
    else:
        uncond = sum(i > 0 and -1 < t < 641 and i % 5 != 0 for i, t in enumerate(ts))
        assert stats["uncond_skipped_calls"] == uncond >= 1 and stats["transformer_calls"] == STEPS


def test_fastercache_halves_sd3s_pooled_projections_with_the_batch(families):
    # FasterCache halves the CFG inputs it knows by name; SD3 also passes `pooled_projections` batched for both
    # branches. Without our split, the blocks of a skipped call get a conditioning batch twice their image batch
    # (broadcast silently: the unconditional pooled text conditions the conditional half).
    from diffusers.hooks import FasterCacheConfig

    f = family(families, "sd3")

    def raw(hook):
        return FasterCacheConfig(current_timestep_callback=lambda: hook.timestep, tensor_format="BCHW",
                                 attention_weight_callback=lambda _: 0.5)

    prepared = get_family("fastercache").prepare(parse_method("fastercache:8"), MethodContext(
        f.src.pipe, BLOCKS, cfg_batch=f.src.cfg_batch))
    ours = _block0_batches(f, prepared.attach)
    assert all(x == t for x, t in ours) and (1, 1) in ours  # image and conditioning batches halved together
    assert (1, 2) in _block0_batches(f, lambda pipe: attach_diffusers_hooks(pipe, raw))


def _block0_batches(f, attach):
    """(image batch, temb batch) that SD3's first block sees on each call, with `attach`'s method attached."""
    seen = []
    att = attach(f.src.pipe)
    h = f.src.pipe.transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda m, a, k: seen.append((k["hidden_states"].shape[0], k["temb"].shape[0])), with_kwargs=True)
    try:
        att.before_call()
        f.src(f.items, STEPS)
    finally:
        h.remove()
        att.detach()
    check_stock(f.src.pipe, f.stock, "fastercache")
    return seen


def test_refusals_name_the_reason_and_leave_the_pipeline_stock(families):
    sana = family(families, "sana")
    for method in ("fbc:8", "magcache:8"):
        with pytest.raises(MethodRefused, match="SanaTransformerBlock.*not registered.*TransformerBlockRegistry"):
            sana.run(method)
    flux_cfg = family(families, "flux", negative_prompt="", true_cfg_scale=2.0)
    assert flux_cfg.src.cfg_batch == "cond|uncond" and len(flux_cfg.timesteps) == 2 * STEPS
    for method in ("pab:8", "fastercache:8"):
        with pytest.raises(MethodRefused, match="two transformer calls per step.*one state per attention module"):
            flux_cfg.run(method)
    with pytest.raises(MethodRefused, match="SanaTransformerBlock.*not registered"):
        sana.run("seacache:8")
    # SD3's last block returns no text stream: SeaCache's tail would record nothing and silently run every step
    with pytest.raises(MethodRefused, match="returns no text stream"):
        family(families, "sd3").run("seacache:8")


@pytest.mark.parametrize("method,blocks", [
    ("plain:8", 2 * 48), ("ilf:8,loop=1-3,plan=outer:2", 2 * 64), ("fbc:8,threshold=1e9", 2 * 13),
    ("taylorseer:8,interval=2,warmup=2", 2 * 30), ("magcache:8,threshold=1e9,max_skip=3,retention=0.2", 2 * 18),
    ("cache-dit:8,fn=1,bn=0,threshold=1e9,warmup=2", 2 * 18), ("seacache:8,threshold=1e9", 2 * 24),
])
def test_flux_true_cfg_runs_each_step_twice_with_a_state_per_branch(families, method, blocks):
    # Flux's true CFG: a cond and an uncond call per step; diffusers' stateful hooks keep a state per cache context
    # the pipeline names, and cache-dit is told the calls are separate, so each branch caches as alone.
    if method.startswith("cache-dit"):
        pytest.importorskip("cache_dit")
    f = family(families, "flux", negative_prompt="", true_cfg_scale=2.0)
    assert f.run(method)[0] == blocks


def test_ilf_bench_tiny_mmdit_reports_counts_and_skipped_rows(tmp_path):
    out = tmp_path / "sana"
    assert main(["bench", "--tiny", "sana", "--tiny-layers", "4", "--threads", "1", "--num-images", "1",
                 "--repeats", "0", "--grid-items", "0", "--no-progress", "--out", str(out),
                 "--methods", "plain:6", "ilf:4,loop=1-2", "fbc:6", "taylorseer:6,interval=2,warmup=2"]) == 0
    res = json.loads((out / "results.json").read_text())
    rows = {r["family"]: r for r in res["rows"]}
    assert res["source"]["transformer_class"] == "SanaTransformer2DModel" and res["source"]["num_blocks"] == 4
    assert rows["plain"]["block_forwards"] == rows["plain"]["predicted_block_forwards"] == 4 * 6
    assert rows["ilf"]["block_forwards"] == rows["ilf"]["predicted_block_forwards"] == 4 * (4 + 2 + 1)
    # taylorseer computes steps 0, 1, 3, 5
    assert rows["taylorseer"]["block_forwards"] == rows["taylorseer"]["predicted_block_forwards"] == 4 * 4
    assert [s["method"] for s in res["skipped"]] == ["fbc:6"]
    assert "not registered" in res["skipped"][0]["reason"]
    assert "Skipped fbc:6" in (out / "table.md").read_text()


def test_bench_predicts_both_calls_of_flux_true_cfg_and_skips_refused_rows(families, tmp_path):
    from ilf.bench.presets import expand_methods
    from ilf.bench.runner import Bench, BenchOptions
    from ilf.eval.score import build_scorer

    f = family(families, "flux", negative_prompt="", true_cfg_scale=2.0)
    specs = expand_methods(["plain:4", "ilf:4,loop=1-2", "pab:4"])
    options = BenchOptions(out_dir=tmp_path, repeats=0, grid_items=0, progress=False, feedback="untrained")
    res = Bench(f.src, f.items, specs, lambda: build_scorer(progress=False), options).run()
    rows = {r["family"]: r for r in res["rows"]}
    assert rows["plain"]["block_forwards"] == rows["plain"]["predicted_block_forwards"] == 2 * BLOCKS * 4
    assert rows["ilf"]["block_forwards"] == rows["ilf"]["predicted_block_forwards"] == 2 * 4 * (BLOCKS + 2 + 1)
    assert [s["method"] for s in res["skipped"]] == ["pab:4"] and "true CFG" in res["skipped"][0]["reason"]
    check_stock(f.src.pipe, f.stock, "the bench")
