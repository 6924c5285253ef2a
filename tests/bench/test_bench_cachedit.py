"""cache-dit's DBCache in the bench: its options, the steps it computes under a static mask (counted per block
on tiny pipelines), the throw-away call that starts its calibrators on step 0, one image per call where its skip
is dynamic, and the stock transformer bit for bit after detaching (DiT, PixArt, SD3)."""

import json

import pytest
import torch

from ilf import count_block_forwards
from ilf.bench.errors import MethodSpecError
from ilf.bench.family import MethodContext
from ilf.bench.methods import get_family, parse_method
from ilf.bench.stock import check_stock, fingerprint
from ilf.cli import main
from ilf.eval.prompts import make_items
from ilf.eval.sources import default_conditions, load_tiny_source

pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (pip install 'ilf[cache-dit]')")

STEPS, BLOCKS = 8, 6


class Tiny:
    """A tiny pipeline, two items, and its stock images at STEPS steps."""

    def __init__(self, kind):
        self.src = load_tiny_source(kind, num_layers=BLOCKS)
        self.items = make_items(default_conditions(self.src, 2), num_images=1)
        self.stock_images = self.src(self.items, STEPS)
        self.stock = fingerprint(self.src.pipe)

    def attach(self, text, run_once=True):
        spec = parse_method(text)
        ctx = MethodContext(self.src.pipe, BLOCKS, cfg_batch=self.src.cfg_batch,
                            run_once=(lambda s: self.src(self.items[:1], s)) if run_once else (lambda s: None))
        prepared = get_family(spec.family).prepare(spec, ctx)
        return prepared, prepared.attach(self.src.pipe)

    def calls(self, text, n=1, run_once=True):
        """Attach, run n identical calls (each counted, and which steps ran the middle block), detach; the
        pipeline must be stock again. Returns [(images, block forwards, steps that ran block BLOCKS // 2)]."""
        prepared, att = self.attach(text, run_once)
        middle = self.src.pipe.transformer.transformer_blocks[BLOCKS // 2]
        seen = []
        h = middle.register_forward_pre_hook(lambda m, a: seen.append(step[0]))
        model_calls = [0]
        step = [0]

        def next_step(m, a, k):
            step[0] = model_calls[0]
            model_calls[0] += 1

        h2 = self.src.pipe.transformer.register_forward_pre_hook(next_step, with_kwargs=True)
        out = []
        try:
            for _ in range(n):
                seen.clear()
                model_calls[0] = 0
                with count_block_forwards(self.src.pipe) as counter:
                    images = self.src(self.items, STEPS)
                out.append((images, counter.total, sorted(set(seen))))
        finally:
            h.remove()
            h2.remove()
            att.detach()
        check_stock(self.src.pipe, self.stock, text)
        assert torch.equal(self.src(self.items, STEPS), self.stock_images), f"{text}: not stock afterwards"
        return out


@pytest.fixture(scope="module")
def tiny():
    made = {}

    def get(kind):
        if kind not in made:
            made[kind] = Tiny(kind)
        return made[kind]

    return get


def test_options_parse_and_refuse_what_does_not_fit():
    spec = parse_method("cache-dit:20,fn=2,bn=1,calibrator=taylorseer2,compute=6,warmup=2")
    assert dict(spec.options)["calibrator"] == "taylorseer2" and dict(spec.options)["compute"] == 6
    assert all(opt.help for opt in get_family("cache-dit").options.values())
    with pytest.raises(MethodSpecError, match="not both"):
        parse_method("cache-dit:20,compute=6,warmup=2,mask=fast")
    with pytest.raises(MethodSpecError, match="warmup"):
        parse_method("cache-dit:20,compute=6")  # the default warm-up (8) does not fit in 6 compute steps
    with pytest.raises(MethodSpecError, match="applies to a steps mask"):
        parse_method("cache-dit:20,policy=dynamic")
    with pytest.raises(MethodSpecError, match="steps_mask refuses"):
        parse_method("cache-dit:5,mask=fast")  # cache-dit's policies: 4, 6 or at least 8 steps
    with pytest.raises(MethodSpecError, match="calibrator"):
        parse_method("cache-dit:20,calibrator=taylorseer3")


@pytest.mark.parametrize("text,computed", [
    # an even mask of 4 computed steps out of 8 after a warm-up of 2: the other two at 1 + 6/2 and 1 + 6, by hand
    ("cache-dit:8,compute=4,warmup=2", [0, 1, 4, 7]),
    ("cache-dit:8,compute=5,warmup=1,fn=2,bn=1,calibrator=taylorseer1", [0, 2, 4, 5, 7]),  # 1 + 7/4·k, halves up
])
def test_a_static_mask_computes_exactly_its_steps(tiny, text, computed):
    spec = parse_method(text)
    fn, bn = spec.get("fn", 1), spec.get("bn", 0)
    (images, blocks, ran), = tiny("pixart").calls(text)
    assert ran == computed  # the middle block ran on these steps only, whatever the images
    assert blocks == BLOCKS * len(computed) + (fn + bn) * (STEPS - len(computed))  # Fn and Bn run on every step
    assert get_family("cache-dit").predicted_block_forwards(spec, BLOCKS) == blocks
    assert not torch.equal(images, tiny("pixart").stock_images)


def test_cache_dits_own_mask_policies_compute_its_steps(tiny):
    import cache_dit

    mask = cache_dit.steps_mask(total_steps=STEPS, mask_policy="fast")
    (_, blocks, ran), = tiny("pixart").calls("cache-dit:8,mask=fast,warmup=2")
    assert ran == [i for i, m in enumerate(mask) if m]
    assert blocks == BLOCKS * sum(mask) + (STEPS - sum(mask))


@pytest.mark.parametrize("calibrator", ["taylorseer1", "taylorseer2", "dmd"])
def test_the_throwaway_call_starts_the_calibrator_on_step_0(tiny, calibrator):
    # Computing steps 0-2, then every third: a calibrator whose state counts one step behind forms no derivative
    # from the warm-up (TaylorSeer's first needs step > 1), so it forecasts exactly what no calibrator reuses.
    # After the throw-away call the first real call already forecasts, and equals the next identical call.
    text = "cache-dit:8,compute=4,warmup=3"
    (plain_reuse, _, _), = tiny("pixart").calls(text)
    (first, b1, _), (second, b2, _) = tiny("pixart").calls(f"{text},calibrator={calibrator}", n=2)
    assert torch.equal(first, second) and b1 == b2
    assert not torch.equal(first, plain_reuse)  # the calibrator acts from the first call on
    # without the throw-away call, the first call's states start a step late (and it differs from the second)
    (late, _, _), (aligned, _, _) = tiny("pixart").calls(f"{text},calibrator={calibrator}", n=2, run_once=False)
    assert torch.equal(late, plain_reuse) and torch.equal(aligned, first)


@pytest.mark.parametrize("kind", ["dit", "pixart", "sd3"])
@pytest.mark.parametrize("text", ["cache-dit:8,warmup=2,threshold=0.3,calibrator=taylorseer1",
                                  "cache-dit:8,compute=4,warmup=2,bn=1,calibrator=taylorseer2",
                                  "cache-dit:8,fn=2,warmup=1,threshold=1e9,max_continuous=2"])
def test_detaching_gives_the_stock_transformer_bit_for_bit(tiny, kind, text):
    t = tiny(kind)
    (images, blocks, _), = t.calls(text)  # `calls` asserts the fingerprint and the stock images afterwards
    assert blocks < BLOCKS * STEPS and not torch.equal(images, t.stock_images)  # it did cache something
    model = t.src.pipe.transformer
    assert "forward" not in vars(model) and not [n for n in model._modules if n.startswith("_")]
    leftovers = ("_cached", "_context", "_is_cached", "_is_patched", "_original_forward", "_forward_pattern")
    assert not [a for m in model.modules() for a in vars(m) if a.startswith(leftovers)]


def test_sd3_at_bn0_runs_its_calibrator_on_the_image_stream_only(tiny):
    # SD3's last block returns no text stream: cached in the middle (Bn=0) its text residual is never recorded,
    # and cache-dit's text calibrator asserts on the missing state; with Bn=1 that block always runs
    prepared, att = tiny("sd3").attach("cache-dit:8,compute=4,warmup=2,calibrator=taylorseer1")
    att.detach()
    assert prepared.info["config"]["text_calibrator"] is False
    prepared, att = tiny("sd3").attach("cache-dit:8,compute=4,warmup=2,bn=1,calibrator=taylorseer1")
    att.detach()
    assert prepared.info["config"]["text_calibrator"] is True
    check_stock(tiny("sd3").src.pipe, tiny("sd3").stock, "sd3")


def test_a_dynamic_skip_runs_one_image_per_call(tmp_path):
    fam = get_family("cache-dit")
    assert fam.max_batch(parse_method("cache-dit:20")) == 1
    assert fam.max_batch(parse_method("cache-dit:20,compute=6,warmup=2,policy=dynamic")) == 1
    assert fam.max_batch(parse_method("cache-dit:20,compute=6,warmup=2")) is None
    out = tmp_path / "bench"
    methods = ["plain:8", "cache-dit:8,warmup=2,threshold=1e9", "cache-dit:8,compute=4,warmup=2"]
    assert main(["bench", "--tiny", "pixart", "--tiny-layers", str(BLOCKS), "--threads", "1", "--num-images", "3",
                 "--batch-size", "2", "--repeats", "0", "--grid-items", "0", "--no-progress", "--out", str(out),
                 "--methods", *methods]) == 0
    rows = {r["method"]["spec"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    dynamic, static = rows["cache-dit:8,threshold=1e+09,warmup=2"], rows["cache-dit:8,warmup=2,compute=4"]
    assert dynamic["batch_size"] == 1 and dynamic["block_forwards_per_call"] == [2 * BLOCKS + 6] * 3
    assert static["batch_size"] == 2 and static["block_forwards_per_call"] == [4 * BLOCKS + 4] * 2
    assert rows["plain:8"]["block_forwards_per_call"] == [BLOCKS * STEPS] * 2
