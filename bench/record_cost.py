"""The pipeline-native corrector trainer's recording: bytes per prompt and CPU time, at real size.

PixArt-α 512 (PixArt-XL-2), FLUX.1-dev 1024 and Wan 2.1 T2V 1.3B (480×832, 81 frames), bf16, each transformer
at its REAL width and resolution with random weights but ONE block per block list: the record does not depend
on depth (block e's output has the model's width and sequence length; the call kwargs are the model's inputs).
Text conditioning goes in as prompt embeddings of the real shapes (no text encoder); a tiny VAE with its scale
factors accounted for (latents of the real shape); `output_type="latent"`.

Bytes: the trainer's `PipelineCorrectorObjective` (`prepare()`, `refresh(0)`) records one prompt on a short
schedule with full and forecast steps (5 steps, interval 2, warm-up 1); each stored tensor is attributed to what
first stored it (a step's solver tensors, a forecast step's call kwargs, a full step's block-e record, a target)
and extrapolated exactly to the recipe (20 steps, interval 2, warm-up 3: `taylor_compute_steps`). PixArt-α also
records the recipe itself: tensor bytes must agree exactly, files within 1 %. Wan is recorded at 1, 5 and 9
frames (1-3 latent frames); every part must be affine in the latent frames, then is taken to 21. RAM: the
unique storages a recorded pipeline call holds when it ends (one prompt; linear in the record batch).
Time: CPU seconds of one block forward at real size (one thread, `time.process_time`, median of `--repeats`
after the pipeline's first call as warm-up) × the block forwards of the 20-step run at full depth.

    python bench/record_cost.py --out docs/record-cost.json       # docs/record-cost.md: its table
    python bench/record_cost.py --smoke      # tiny widths, seconds (tests/test_record_cost.py)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ilf import CorrectorConfig, apply_ilf, remove_ilf
from ilf.corrector_config import taylor_compute_steps
from ilf.train import native
from ilf.train.native import PipelineCorrectorObjective
from ilf.train.record import read_shard, write_shard

RECIPE = dict(num_inference_steps=20, interval=2, warmup=3)
SHORT = dict(num_inference_steps=5, interval=2, warmup=1)
MODELS = ("pixart-alpha-512", "flux1-dev-1024", "wan2.1-t2v-1.3b-480p")


class Stop(Exception):
    """Ends the timing call after the transformer's first call."""


def build(model: str, smoke: bool) -> dict:
    """The pipeline (1 block per list), one prompt's embeddings, the call, the full depths, calls per step."""
    from diffusers import (DPMSolverMultistepScheduler, FluxPipeline, FluxTransformer2DModel, PixArtAlphaPipeline,
                           PixArtTransformer2DModel, WanPipeline, WanTransformer3DModel)

    from ilf.tiny_parts import tiny_vae
    from ilf.tiny_mmdit import stock_scheduler
    from ilf.tiny_video import tiny_wan_vae, wan_scheduler

    torch.manual_seed(0)
    r = lambda *s: torch.randn(*s, dtype=torch.bfloat16)  # noqa: E731
    if model == "pixart-alpha-512":  # PixArt-XL-2-512x512: 16×72 heads, T5 4096 × 120 tokens, 64×64 latents
        heads, dim, text, tokens, latent = (2, 8, 32, 8, 8) if smoke else (16, 72, 4096, 120, 64)
        tr = PixArtTransformer2DModel(num_attention_heads=heads, attention_head_dim=dim, in_channels=4, out_channels=8,
                                      num_layers=1, sample_size=latent, patch_size=2, cross_attention_dim=heads * dim,
                                      caption_channels=text, norm_num_groups=1 if smoke else 32)
        pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=tr,
                                   scheduler=DPMSolverMultistepScheduler())
        px = latent * pipe.vae_scale_factor  # the tiny VAE halves: the latents have the real 64×64
        ones = torch.ones(1, tokens, dtype=torch.long)
        prompt = dict(prompt_embeds=r(1, tokens, text), prompt_attention_mask=ones,
                      negative_prompt_embeds=r(1, tokens, text), negative_prompt_attention_mask=ones)
        call = dict(height=px, width=px, guidance_scale=4.5, negative_prompt=None, use_resolution_binning=False,
                    clean_caption=False, max_sequence_length=tokens)
        spec = dict(lists={"transformer_blocks": 28}, calls_per_step=1, frames=None)
    elif model == "flux1-dev-1024":  # FLUX.1-dev: 19 + 38 blocks, 24×128 heads, T5 4096 × 512, 4096 image tokens
        heads, dim, axes, text, pooled, tokens, image = ((2, 8, (2, 2, 4), 32, 16, 8, 16) if smoke else
                                                         (24, 128, (16, 56, 56), 4096, 768, 512, 128))
        tr = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                    attention_head_dim=dim, num_attention_heads=heads, joint_attention_dim=text,
                                    pooled_projection_dim=pooled, guidance_embeds=True, axes_dims_rope=axes)
        pipe = FluxPipeline(scheduler=stock_scheduler("flux-dev"), text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, transformer=tr,
                            vae=tiny_vae(scaling_factor=0.3611, shift_factor=0.1159))
        px = image * pipe.vae_scale_factor  # 1024 px: 128×128 latents (16 ch), packed 2×2 into 64×64 tokens
        prompt = dict(prompt_embeds=r(1, tokens, text), pooled_prompt_embeds=r(1, pooled))
        call = dict(height=px, width=px, guidance_scale=3.5, max_sequence_length=tokens)
        spec = dict(lists={"transformer_blocks": 19, "single_transformer_blocks": 38}, calls_per_step=1, frames=None)
    else:  # Wan2.1-T2V-1.3B: 30 blocks, 12×128 heads, ffn 8960, UMT5 4096 × 512; 480×832, 81 frames
        heads, dim, text, freq, ffn, rope, tokens, h, w = ((2, 12, 32, 32, 32, 32, 8, 32, 32) if smoke else
                                                           (12, 128, 4096, 256, 8960, 1024, 512, 480, 832))
        tr = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=dim,
                                   in_channels=16, out_channels=16, text_dim=text, freq_dim=freq, ffn_dim=ffn,
                                   num_layers=1, cross_attn_norm=True, eps=1e-6, qk_norm="rms_norm_across_heads",
                                   rope_max_seq_len=rope)
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=tiny_wan_vae(), transformer=tr,
                           scheduler=wan_scheduler())  # its VAE compresses as Wan 2.1's: 8× space, 4× time
        assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (8, 4)
        prompt = dict(prompt_embeds=r(1, tokens, text), negative_prompt_embeds=r(1, tokens, text))
        call = dict(height=h, width=w, num_frames=81, guidance_scale=5.0, max_sequence_length=tokens)
        spec = dict(lists={"blocks": 30}, calls_per_step=2, frames=(1, 5, 9))  # CFG: cond and uncond calls
    pipe.transformer.to(torch.bfloat16).eval()
    pipe.set_progress_bar_config(disable=True)
    return dict(pipe=pipe, prompt=prompt, call={**call, "output_type": "latent"}, **spec)


# ---- bytes ----

def ledger(items) -> dict:
    """{(category, step): bytes} of [(category, step, [(key, nbytes)])], each key counted where it first occurs."""
    seen, out = set(), {}
    for cat, step, entries in items:
        out.setdefault((cat, step), 0)
        for key, nbytes in entries:
            if key not in seen:
                seen.add(key)
                out[(cat, step)] += nbytes
    return out


def shard_items(path: Path, teacher: bool) -> list:
    skel, tensors = read_shard(path)
    keys = lambda s: [(k, tensors[k].numel() * tensors[k].element_size()) for k in _refs(s)]  # noqa: E731
    if teacher:
        return [("x0", 0, keys({"T": "x0"}))] + [("target", int(k.split(".")[1]), keys({"T": k}))
                                                 for k in tensors if k.startswith("target.")]
    items = []
    for k, e in enumerate(skel["steps"]):
        items.append(("solver", k, keys([e["t"], e["x"], e["y"]])))
        if "calls" in e:
            items.append(("call", k, keys(e["calls"])))
    items += [("full", f["step"], keys([f["h"], f["x"]])) for f in skel["full"]]
    # where the solver went on forecast steps: x_{k+1}, stored already, except after the last forecast step
    prevs = [e["prev"] for e in skel["steps"] if "prev" in e] + ([skel["after"]] if "after" in skel else [])
    return items + [("after", 0, keys(prevs))]


def _refs(s):
    if isinstance(s, list):
        return [r for v in s for r in _refs(v)]
    if isinstance(s, dict):
        return [s["T"]] if "T" in s else [r for v in s.values() for r in _refs(v)]
    return []


def ram_items(run, fulls) -> list:
    """The tensors a recorded pipeline call holds when it ends, keyed by storage."""
    def keys(values):
        flat = [v for v in _flat(values) if torch.is_tensor(v)]
        return [(v.untyped_storage().data_ptr(), v.untyped_storage().nbytes()) for v in flat]
    items = []
    for k, s in enumerate(run.steps):
        items.append(("solver", k, keys([s.t, s.sample, s.model_output, s.prev] + [c["output"] for c in s.calls])))
        if any(c["kwargs"] is not None for c in s.calls):
            items.append(("call", k, keys([c["kwargs"] for c in s.calls])))
    return items + [("full", k, keys([h, x])) for k, _, h, x in fulls]


def _flat(v):
    if isinstance(v, (list, tuple)):
        return [x for y in v for x in _flat(y)]
    return [x for y in v.values() for x in _flat(y)] if isinstance(v, dict) else [v]


def parts(book: dict) -> dict:
    """Per category: (bytes per instance = its last instance, fixed = the rest, instances)."""
    out = {}
    for cat in {c for c, _ in book}:
        vals = [b for (c, _), b in sorted(book.items()) if c == cat]
        out[cat] = dict(each=vals[-1], fixed=sum(vals) - len(vals) * vals[-1], n=len(vals))
    return out


def counts(num_inference_steps: int, interval: int, warmup: int) -> dict:
    """How many instances of each category a run of this schedule records (shard and RAM)."""
    full = taylor_compute_steps(num_inference_steps, interval, warmup)
    forecast = [s for s in range(num_inference_steps) if s not in full]
    last = forecast[-1]
    return dict(teacher=dict(x0=1, target=len(forecast)),
                rollout=dict(solver=last + 1, call=len(forecast), full=sum(s < last for s in full), after=1),
                ram_teacher=dict(solver=num_inference_steps),
                ram_rollout=dict(solver=num_inference_steps, call=len(forecast), full=len(full)),
                full_steps=len(full), forecast_steps=len(forecast))


def _unshared(path, skeleton, tensors):
    """`write_shard` of tensors that share no memory: the trainer's `pack` keeps a size-1 expanded view (Wan's
    `timestep = t.expand(B)` with B = 1) as the view of the solver's t, which safetensors refuses to write (a trainer
    bug, reported). A copy of each such view: the same names, shapes and bytes."""
    owners, out = {}, {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in owners else v
        owners.setdefault(key, k)
    return write_shard(path, skeleton, out)


def record(b: dict, schedule: dict, folder: Path, frames: int | None = None) -> dict:
    """One prompt recorded by the trainer's objective; per record: its ledger parts, tensor and file bytes."""
    pipe = b["pipe"]
    runtime = apply_ilf(pipe, CorrectorConfig(**schedule))
    call = {**b["call"], **({"num_frames": frames} if frames else {})}
    from accelerate import Accelerator
    obj = PipelineCorrectorObjective(
        pipe=pipe, runtime=runtime, prompts=[b["prompt"]], call_kwargs=call, output_dir=folder,
        num_steps=schedule["num_inference_steps"], teacher_steps=None, rollout_every=1, per_device=1,
        accelerator=Accelerator(cpu=True), seed=0, record_batch=1, log=lambda *a: None, progress=False)
    ram = {}
    native.write_shard = _unshared  # see `_unshared`
    targets, shard = obj._targets, obj._rollout_shard
    obj._targets = lambda run, ts: (ram.setdefault("ram_teacher", ram_items(run, [])), targets(run, ts))[1]
    obj._rollout_shard = lambda run, fulls: (ram.setdefault("ram_rollout", ram_items(run, fulls)), shard(run, fulls))[1]
    try:
        obj.prepare()
        obj.refresh(0)
    finally:
        native.write_shard = write_shard
        remove_ilf(pipe)
    out = {k: dict(parts=parts(ledger(v))) for k, v in ram.items()}
    for name, path in (("teacher", obj._rank_file(obj.root / f"teacher-{obj.n}", 0)),
                       ("rollout", obj._rank_file(obj.rollout_dir, 0))):
        book = ledger(shard_items(path, name == "teacher"))
        out[name] = dict(parts=parts(book), tensor_bytes=sum(book.values()), file_bytes=path.stat().st_size)
    return out


def extrapolate(short: dict, schedule: dict) -> dict:
    n = counts(**schedule)
    out = {k: sum(v["fixed"] + n[k][c] * v["each"] for c, v in short[k]["parts"].items())
           for k in ("teacher", "rollout", "ram_teacher", "ram_rollout")}
    for k in ("teacher", "rollout"):  # files: + the header (kB), scaled by the number of entries
        p = short[k]["parts"]
        scale = sum(n[k][c] for c in p) / sum(v["n"] for v in p.values())
        out[k + "_file"] = out[k] + round((short[k]["file_bytes"] - short[k]["tensor_bytes"]) * scale)
    return out


def affine(points: dict, target: float) -> dict:
    """Per record and category, bytes affine in the latent frames (checked on three counts), at `target`."""
    (f1, a), (f2, b), (f3, c) = sorted(points.items())
    out = {}
    for rec in a:
        out[rec] = dict(a[rec])
        for cat in a[rec]["parts"]:
            va, vb, vc = (x[rec]["parts"][cat] for x in (a, b, c))
            p = {}
            for key in ("each", "fixed"):
                assert (vc[key] - vb[key]) * (f2 - f1) == (vb[key] - va[key]) * (f3 - f2), (rec, cat, key)
                p[key] = va[key] + (vb[key] - va[key]) * (target - f1) // (f2 - f1)
            out[rec]["parts"] = {**out[rec]["parts"], cat: {**va, **p}}
    return out


# ---- time ----

def block_seconds(b: dict, repeats: int) -> dict:
    """CPU seconds of one forward of the first block of each list, at the call's real size (one call)."""
    pipe, caught = b["pipe"], {}
    tr = pipe.transformer
    hooks = [getattr(tr, name)[0].register_forward_pre_hook(
        lambda m, a, kw, name=name: caught.setdefault(name, (a, kw)), with_kwargs=True) for name in b["lists"]]

    def stop(*_):
        raise Stop

    hooks.append(tr.register_forward_hook(stop))  # the first transformer call (every block's warm-up) ends it
    try:
        pipe(**b["prompt"], **b["call"], num_inference_steps=2)
    except Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    out = {}
    with torch.no_grad():
        for name, (args, kwargs) in caught.items():
            times = []
            for _ in range(repeats):
                t0 = time.process_time()
                getattr(tr, name)[0](*args, **kwargs)
                times.append(time.process_time() - t0)
            out[name] = statistics.median(times)
    return out


def measure(model: str, smoke: bool, repeats: int, direct: bool) -> dict:
    b = build(model, smoke)
    n = counts(**RECIPE)
    res = dict(block_lists=b["lists"], calls_per_step=b["calls_per_step"], dtype="bfloat16",
               params_1_block_per_list=sum(p.numel() for p in b["pipe"].transformer.parameters()))
    with tempfile.TemporaryDirectory() as tmp:
        if b["frames"]:
            latent = lambda f: (f - 1) // 4 + 1  # noqa: E731
            points = {latent(f): record(b, SHORT, Path(tmp) / f"s{f}", frames=f) for f in b["frames"]}
            short = affine(points, latent(b["call"]["num_frames"]))
            res["frames_recorded"] = list(b["frames"])
        else:
            short = record(b, SHORT, Path(tmp) / "short")
        res["extrapolated"] = extrapolate(short, RECIPE)
        res["short"] = {k: {c: v for c, v in short[k].items()} for k in short}
        if direct:
            d = record(b, RECIPE, Path(tmp) / "direct", frames=b["frames"][-1] if b["frames"] else None)
            res["direct"] = {f"{k}{s}": d[k][f"{t}_bytes"] for k in ("teacher", "rollout")
                             for s, t in (("", "tensor"), ("_file", "file"))}
            e = extrapolate(points[latent(b["frames"][-1])], RECIPE) if b["frames"] else res["extrapolated"]
            res["direct_extrapolated"] = e  # (Wan: from the last recorded frame count, where `direct` is)
            for k, v in res["direct"].items():  # tensors exactly; files (their JSON headers) within 1 % / 2 %
                assert e[k] == v if "file" not in k else abs(e[k] / v - 1) < (0.02 if smoke else 0.01), (k, e[k], v)
    e = res["extrapolated"]
    res["mib_per_prompt"] = (e["teacher_file"] + e["rollout_file"]) / 2**20
    res["gib_per_128_prompts"] = 128 * (e["teacher_file"] + e["rollout_file"]) / 2**30
    secs = block_seconds(b, repeats)
    per_call = sum(b["lists"][name] * s for name, s in secs.items())  # one call of the full-depth model
    res["cpu_block_seconds"] = secs
    res["cpu_estimate_s"] = dict(
        teacher=RECIPE["num_inference_steps"] * b["calls_per_step"] * per_call,
        rollout=n["full_steps"] * b["calls_per_step"] * per_call)  # forecast steps run no block (fresh 0, tail 0)
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny widths (seconds); the direct check on every model")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = dict(recipe=RECIPE, short_schedule=SHORT, smoke=args.smoke, counts=counts(**RECIPE), models={})
    for m in args.models.split(","):
        results["models"][m] = measure(m, args.smoke, args.repeats, direct=args.smoke or m == MODELS[0])
        r = results["models"][m]
        print(f"{m}: {r['mib_per_prompt']:.2f} MiB per prompt, {r['gib_per_128_prompts']:.3f} GiB per 128; "
              f"CPU block s {r['cpu_block_seconds']}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return results


if __name__ == "__main__":
    main()
