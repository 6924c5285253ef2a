"""The method grammar, presets, and the block forwards each family predicts, against the paper's numbers."""

import json

import pytest

from conftest import write_feedback_config
from ilf.bench.errors import MethodSpecError
from ilf.bench.methods import get_family, parse_method
from ilf.bench.presets import PRESETS, expand_methods
from ilf.corrector_config import taylor_compute_steps as taylorseer_compute_steps  # the bench's and the corrector's rule

N = 28  # PixArt-XL-2 / DiT-XL-2


def predicted(text, feedback=None):
    spec = parse_method(text)
    return get_family(spec.family).predicted_block_forwards(spec, N, feedback)


@pytest.mark.parametrize("text", [
    "plain:20", "paper-cache:20,location=outer,blocks=14,refresh=2", "ilf:10,feedback=untrained,plan=outer:2,"
    "t_post=anneal,ratio=n/m,loop=0-5", "ilf:12,feedback=untrained,plan=[0,1,-2,-1]", "fbc:20,threshold=0.1",
    "taylorseer:20,interval=3,warmup=2,order=2,mode=lite", "magcache:20,threshold=0.1,max_skip=2,retention=0.3",
    "pab:20,spatial=3,cross=5,range=100-700", "fastercache:20,range=-1-681,uncond=4", "cache-dit:20,fn=2,bn=1",
])
def test_canonical_name_parses_back_to_the_same_spec(text):
    spec = parse_method(text)
    assert parse_method(spec.name) == spec
    assert parse_method(spec.name + ",label=row x").label == "row x"


def test_values_are_parsed_to_their_types():
    spec = parse_method("pab:20,range=-1-681")
    assert spec.get("range") == (-1.0, 681.0)
    assert parse_method("ilf:12,feedback=untrained,plan=[0,1,-2,-1]").get("plan") == (0, 1, -2, -1)
    assert parse_method("ilf,feedback=untrained").steps == 10  # the family's default steps
    assert parse_method("plain").steps == 20


@pytest.mark.parametrize("text, words", [
    ("nope:20", ["unknown method family", "plain"]),
    ("plain:0", ["positive integer"]),
    ("fbc:20,thresh=1", ["no option 'thresh'", "threshold"]),
    ("fbc:20,threshold=abc", ["threshold='abc' is invalid"]),
    ("paper-cache:20,location=middle", ["choose one of"]),
    ("fbc:20,threshold", ["not KEY=VALUE"]),
    ("ilf:10,feedback=fb,loop=1-3", ["loop= only applies to feedback=untrained"]),
    ("ilf:10,plan=sometimes", ["not understood"]),
])
def test_bad_specs_name_the_problem(text, words):
    with pytest.raises(MethodSpecError) as err:
        parse_method(text)
    for w in words:
        assert w in str(err.value)


def test_presets_expand_in_order_without_duplicates():
    specs = expand_methods(["plain:20", "@table1"])
    assert [s.name for s in specs][:3] == ["plain:20", "plain:12", "paper-cache:20,location=inner,blocks=18,refresh=3"]
    assert len(specs) == len(PRESETS["table1"])  # plain:20 appears once
    families = {s.family for s in expand_methods(["@all"])}
    assert families == {"plain", "paper-cache", "ilf", "fbc", "taylorseer", "magcache", "pab", "fastercache",
                        "seacache", "cache-dit"}
    with pytest.raises(MethodSpecError, match="unknown preset"):
        expand_methods(["@nope"])


def test_table1_block_forwards_are_the_papers():
    # Table 1: 560 (20 plain), 336 (12 plain), 326 (cache inner 18, refresh 1 in 3), 332 (ILF 10, outer 2+2)
    assert predicted("plain:20") == 560
    assert predicted("plain:12") == 336
    assert predicted("paper-cache:20,location=inner,blocks=18,refresh=3") == 326
    assert predicted("ilf:10,feedback=untrained,loop=8-19,plan=outer:2") == 332
    assert predicted("ilf:10,feedback=untrained,plan=outer:2") == 332  # default loop of 28 blocks is 8-19


def test_table4_and_table6_block_forwards_are_the_papers():
    assert predicted("paper-cache:20,location=inner,blocks=18,refresh=2") == 380  # Table 4 cache
    assert predicted("ilf:12,feedback=untrained,plan=skip-inner:8") == 388  # Table 4 ours
    for loc in ("first", "last", "outer", "inner", "alternating"):  # Table 6: 440 (c = 12, every other step)
        assert predicted(f"paper-cache:20,location={loc},blocks=12,refresh=2") == 440


def test_table2_and_table3_block_forwards_from_saved_feedback_loops(tmp_path):
    # Table 3: 6-block loops with feedback on all 12 steps -> 420; 12-block loops skipping the inner 8 -> 388
    for loop in ((0, 5), (11, 16), (22, 27)):
        fb = write_feedback_config(tmp_path / f"fb{loop[0]}-{loop[1]}", loop)
        assert predicted(f"ilf:12,feedback={fb},plan=all") == 420
    for loop in ((0, 11), (8, 19), (16, 27)):
        fb = write_feedback_config(tmp_path / f"fb{loop[0]}-{loop[1]}", loop)
        assert predicted(f"ilf:12,feedback={fb},plan=skip-inner:8") == 388
    # Table 2 (DiT): 304 / 584 / 1144 with an 11-block loop and feedback on the first and last step
    fb = write_feedback_config(tmp_path / "dit", (8, 18))
    assert [predicted(f"ilf:{n},plan=outer:1", feedback=str(fb)) for n in (10, 20, 40)] == [304, 584, 1144]
    assert [predicted(f"plain:{n}") for n in (12, 25, 50)] == [336, 700, 1400]


def test_ilf_without_feedback_asks_for_one():
    with pytest.raises(MethodSpecError, match="--feedback"):
        predicted("ilf:10")
    with pytest.raises(MethodSpecError, match="does not exist"):
        predicted("ilf:10,feedback=/nonexistent/fb")


def test_bench_reads_feedback_configs_as_load_feedback_does(tmp_path):
    # one reader: a description load_feedback would refuse (no format marker) is refused before any row runs
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ilf_config.json").write_text('{"loop": [2, 4], "config": {"loop": [2, 4]}}')
    with pytest.raises(MethodSpecError, match="format"):
        predicted(f"ilf:10,feedback={bad}")
    newer = write_feedback_config(tmp_path / "newer", (2, 4))
    meta = json.loads((newer / "ilf_config.json").read_text())
    (newer / "ilf_config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(MethodSpecError, match="upgrade ilf"):
        predicted(f"ilf:10,feedback={newer}")


def test_taylorseer_compute_steps_follow_diffusers_rule():
    # diffusers computes when step < warmup or (step - warmup - 1) % interval == 0 (written out by hand here)
    assert taylorseer_compute_steps(20, interval=5, warmup=3, cooldown=None) == [0, 1, 2, 4, 9, 14, 19]
    assert taylorseer_compute_steps(20, interval=2, warmup=3, cooldown=None) == [0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert taylorseer_compute_steps(10, interval=5, warmup=3, cooldown=8) == [0, 1, 2, 4, 8, 9]
    assert predicted("taylorseer:20,interval=2,warmup=3") == 11 * N


def test_attention_only_peers_predict_every_block():
    assert predicted("pab:20") == 560
    assert predicted("fastercache:20") == 560
    assert predicted("fbc:20") is None and predicted("magcache:20") is None  # data-dependent
