"""ILF on a GPU: the real pipelines on the real-size architectures (random weights), eager and compiled.

Models (text encoders and VAE left out: prompt embeddings of the real shapes are given, latents come out):
  * `pixart-512`, `pixart-1024`: `PixArtAlphaPipeline` on PixArt-XL-2 (28 blocks), fp16, CFG batch 2, DPM-Solver++;
  * `dit-256`: `DiTPipeline` on DiT-XL/2 (28 blocks), fp16, 8 classes (CFG batch 16), DPM-Solver++;
  * `sd3-1024`: `StableDiffusion3Pipeline` on SD3-medium (24 joint blocks), bf16, CFG batch 2;
  * `flux-dev-1024`: `FluxPipeline` on FLUX.1-dev (19 + 38 blocks), bf16, guidance 3.5 (embedded), 28-step
    Flux-dev scheduler with dynamic shifting.
Rows: stock 20 / 12 / 10 steps; ILF attached with no feedback step (20 steps); ILF-10 with feedback on
outer:2 and on last:1 (the paper's loop 8-19 of 28, scaled to the depth; an untrained feedback: timing only);
the paper cache (inner 18 of 28, refresh 1 in 3, 20 steps); diffusers' TaylorSeer (20 steps, interval 2,
warm-up 3, through `ilf.bench`'s cache-context hook); ilf's corrector at TaylorSeer's schedule with the learned
forecast (`corrector:20,feedback=untrained`: the same work as a trained one). On a GPU, eager rows also run one call with
`torch.cuda.set_sync_debug_mode("error")` inside every transformer call (`sync_inside_transformer`: None, or
the error of the first host-device sync). Modes: `eager`, `regional` (`compile_repeated_blocks`),
`reduce-overhead` (whole-model `torch.compile(mode="reduce-overhead")`: CUDA graphs).

Each row gets its own transformer that shares the base model's parameters (no copy of the weights), attached
once: rows are switched by swapping `pipe.transformer`, never by re-attaching, so compiled graphs are reused.
Per model and mode: `--warmup-rounds` untimed interleaved rounds (compilation; with several attachments
compiled in one process a few graphs are only settled by the second round), then every row once untimed inside
`count_block_forwards`, eagerly (its hooks cost time, so counting never happens in a timed call; the warm-up
call's latents are kept, and compiled rows report their max |difference| to eager's); then `--repeats` interleaved rounds of
timed calls (`torch.cuda.synchronize()` around `time.perf_counter`). The report: median seconds, block
forwards, measured speedup over stock-20, block-predicted speedup, their ratio, and peak GPU memory. The JSON
(and a Markdown table beside it) is rewritten after every model and mode, so a run cut short keeps what it
finished.

    python bench/gpu_speed.py --device cuda --out $OUT/gpu_speed.json
    python bench/gpu_speed.py --smoke --out gpu_speed_smoke.json   # tiny configs on the CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers import (
    DiTPipeline, DPMSolverMultistepScheduler, FluxPipeline, FluxTransformer2DModel, PixArtAlphaPipeline,
    StableDiffusion3Pipeline,
)
from torch import nn

from ilf import CacheConfig, ILFConfig, apply_cache, apply_ilf, count_block_forwards
from ilf.adapters import get_adapter
from ilf.bench.family import MethodContext
from ilf.bench.family_ilf import default_loop
from ilf.bench.family_paper_cache import default_cache_blocks
from ilf.bench.methods import get_family, parse_method
from ilf.tiny import dit_xl_2, pixart_xl_2, tiny_dit, tiny_pixart
from ilf.tiny_mmdit import sd3_medium, stock_scheduler, tiny_flux, tiny_sd3

MODELS = ("pixart-512", "pixart-1024", "dit-256", "sd3-1024", "flux-dev-1024")
MODES = ("eager", "regional", "reduce-overhead")
DTYPES = {"pixart": torch.float16, "dit": torch.float16, "sd3": torch.bfloat16, "flux": torch.bfloat16}


class LatentsOut(nn.Module):
    """A stand-in VAE for `DiTPipeline`, which always decodes: hands the latents back (scaling factor 1)."""

    config = SimpleNamespace(scaling_factor=1.0)

    def __init__(self, device):
        super().__init__()
        self.register_buffer("anchor", torch.empty(0, device=device))  # the pipeline asks each module's device

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def decode(self, latents):
        return SimpleNamespace(sample=latents * 2 - 1)  # the pipeline maps samples back by (x / 2 + 0.5)


def flux_dev(dtype):
    """FLUX.1-dev's transformer (black-forest-labs/FLUX.1-dev, transformer/config.json), random weights."""
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ).to(dtype).eval()


def _randn(*shape, dtype, device):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)


def build(name: str, smoke: bool, device: str):
    """(pipeline, call kwargs) of one model; the transformer is built on `device`, the scheduler outside it."""
    family = name.split("-")[0]
    dtype = DTYPES[family]
    with torch.device(device):  # random init on the GPU: seconds, not minutes
        if family == "pixart":
            size = 8 if smoke else int(name.split("-")[1]) // 8
            model = (tiny_pixart(num_layers=28, sample_size=size) if smoke else pixart_xl_2(sample_size=size)).to(dtype)
        elif family == "dit":
            model = (tiny_dit(num_layers=28) if smoke else dit_xl_2(sample_size=32)).to(dtype)
        elif family == "sd3":
            model = (tiny_sd3(num_layers=24) if smoke else sd3_medium(sample_size=128)).to(dtype)
        else:
            model = tiny_flux(guidance_embeds=True).to(dtype) if smoke else flux_dev(dtype)
    model.eval().requires_grad_(False)
    cfg = model.config
    if family == "pixart":
        tokens, width = (16 if smoke else 120), cfg.caption_channels
        pipe = PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=model,
                                   scheduler=DPMSolverMultistepScheduler())
        mask = torch.ones(1, tokens, dtype=torch.long, device=device)
        px = cfg.sample_size * 8
        call = dict(prompt_embeds=_randn(1, tokens, width, dtype=dtype, device=device), prompt_attention_mask=mask,
                    negative_prompt_embeds=_randn(1, tokens, width, dtype=dtype, device=device),
                    negative_prompt_attention_mask=mask, negative_prompt=None, height=px, width=px,
                    guidance_scale=4.5, use_resolution_binning=False, output_type="latent")
    elif family == "dit":
        pipe = DiTPipeline(transformer=model, vae=LatentsOut(device), scheduler=DPMSolverMultistepScheduler())
        call = dict(class_labels=list(range(8)), guidance_scale=4.0, output_type="pt")
    elif family == "sd3":
        tokens, width, pooled = (16, cfg.joint_attention_dim, cfg.pooled_projection_dim) if smoke else (333, 4096, 2048)
        pipe = StableDiffusion3Pipeline(
            transformer=model, scheduler=stock_scheduler("sd3"), vae=None, text_encoder=None, tokenizer=None,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
        px = cfg.sample_size * 8
        call = dict(prompt_embeds=_randn(1, tokens, width, dtype=dtype, device=device),
                    negative_prompt_embeds=_randn(1, tokens, width, dtype=dtype, device=device),
                    pooled_prompt_embeds=_randn(1, pooled, dtype=dtype, device=device),
                    negative_pooled_prompt_embeds=_randn(1, pooled, dtype=dtype, device=device),
                    height=px, width=px, guidance_scale=7.0, output_type="latent")
    else:
        tokens, width, pooled = (16, cfg.joint_attention_dim, cfg.pooled_projection_dim) if smoke else (512, 4096, 768)
        pipe = FluxPipeline(scheduler=stock_scheduler("flux-dev"), vae=None, text_encoder=None, tokenizer=None,
                            text_encoder_2=None, tokenizer_2=None, transformer=model)
        px = 16 if smoke else 1024
        call = dict(prompt_embeds=_randn(1, tokens, width, dtype=dtype, device=device),
                    pooled_prompt_embeds=_randn(1, pooled, dtype=dtype, device=device), height=px, width=px,
                    guidance_scale=3.5, max_sequence_length=tokens, output_type="latent")
    pipe.set_progress_bar_config(disable=True)
    return pipe, call


def rows(num_blocks: int) -> dict:
    b, e = default_loop(num_blocks)
    c = default_cache_blocks(num_blocks)
    loop = dict(loop=(b, e), t_post="rescale")
    return {
        "stock-20": dict(steps=20), "stock-12": dict(steps=12), "stock-10": dict(steps=10),
        "ilf-20 no feedback step": dict(steps=20, ilf=ILFConfig(**loop, feedback_steps="none")),
        "ilf-10 outer:2": dict(steps=10, ilf=ILFConfig(**loop, feedback_steps="outer:2")),
        "ilf-10 last:1": dict(steps=10, ilf=ILFConfig(**loop, feedback_steps="last:1")),
        f"paper-cache-20 (inner {c}, 1 in 3)": dict(steps=20, cache=CacheConfig("inner", c, 3)),
        "taylorseer-20": dict(steps=20, peer="taylorseer:20"),
        # ilf's corrector at TaylorSeer's schedule with the learned forecast (weights zero: the timing is the same)
        "corrector-20 (TaylorSeer i2, learned forecast)": dict(steps=20, peer="corrector:20,feedback=untrained"),
    }


def shared_clone(model: nn.Module) -> nn.Module:
    """A new module tree over the same parameter and buffer tensors (no weights copied)."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def compile_model(model: nn.Module, mode: str, backend: str) -> nn.Module:
    if mode == "regional":
        if not getattr(model, "_repeated_blocks", None):  # PixArt, DiT, SD3 declare none: their block classes
            model._repeated_blocks = sorted({type(b).__name__ for b in get_adapter(model).blocks(model)})
        model.compile_repeated_blocks(backend=backend)
        return model
    if mode == "reduce-overhead":
        return torch.compile(model, mode="reduce-overhead" if backend == "inductor" else None, backend=backend)
    return model


class Row:
    """One row's own transformer (sharing the base's weights), with its method attached once."""

    def __init__(self, pipe, base, spec, mode, backend):
        self.spec, self.steps, self.attachment = spec, spec["steps"], None
        model = shared_clone(base)
        pipe.transformer = model
        if "ilf" in spec:
            apply_ilf(pipe, spec["ilf"])
        if "cache" in spec:
            apply_cache(pipe, spec["cache"])
        if "peer" in spec:
            method = parse_method(spec["peer"])
            ctx = MethodContext(pipe=pipe, num_blocks=len(get_adapter(model).blocks(model)))
            self.attachment = get_family(method.family).prepare(method, ctx).attach(pipe)
        self.model = compile_model(model, mode, backend)

    def __call__(self, pipe, call, sync):
        pipe.transformer = self.model
        if self.attachment is not None:
            self.attachment.before_call()
        with torch.no_grad():
            out = pipe(num_inference_steps=self.steps, generator=torch.Generator().manual_seed(0), **call).images
        sync()
        return out


def sync_check(pipe, call, row, sync) -> str | None:
    """Run one call with `torch.cuda.set_sync_debug_mode("error")` inside every transformer call (the
    pipeline's own loop may sync, the transformer with what ilf attached must not); None: no sync."""
    model = row.model
    on = model.register_forward_pre_hook(lambda *_: torch.cuda.set_sync_debug_mode("error"))
    off = model.register_forward_hook(lambda *_: torch.cuda.set_sync_debug_mode("default"))
    try:
        row(pipe, call, sync)
        return None
    except RuntimeError as err:
        return str(err).splitlines()[0][:300]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        on.remove()
        off.remove()


def bench_model(name, mode, args, eager_latents: dict) -> dict:
    device = "cpu" if args.smoke else args.device
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    pipe, call = build(name, args.smoke, device)
    base = pipe.transformer
    specs = rows(len(get_adapter(base).blocks(base)))
    table = {k: Row(pipe, base, s, mode, args.backend) for k, s in specs.items()}
    info = {}
    outputs = {}
    for _ in range(args.warmup_rounds):  # interleaved like the timed rounds: compilation settles in all orders
        for key, row in table.items():
            outputs[key] = row(pipe, call, sync)
    for key, row in table.items():  # the untimed counting call, run eagerly
        latents = torch.as_tensor(outputs[key]).float().cpu()
        pipe.transformer = row.model
        with count_block_forwards(pipe) as counter, torch.compiler.set_stance("force_eager"):
            row(pipe, call, sync)
        info[key] = dict(block_forwards=counter.total, calls=counter.calls)
        if mode == "eager":
            eager_latents[(name, key)] = latents
        elif (name, key) in eager_latents:
            info[key]["max_abs_diff_to_eager"] = float((latents - eager_latents[(name, key)]).abs().max())
    if cuda and mode == "eager":
        for key, row in table.items():
            info[key]["sync_inside_transformer"] = sync_check(pipe, call, row, sync)
    times = {k: [] for k in table}
    peak = {k: 0 for k in table}
    for _ in range(args.repeats):  # interleaved rounds
        for key, row in table.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            row(pipe, call, sync)
            times[key].append(time.perf_counter() - start)
            if cuda:
                peak[key] = max(peak[key], torch.cuda.max_memory_allocated())
    ref = statistics.median(times["stock-20"])
    out = {}
    for key, ts in times.items():
        med, fwd = statistics.median(ts), info[key]["block_forwards"]
        measured, predicted = ref / med, info["stock-20"]["block_forwards"] / fwd
        out[key] = dict(**info[key], seconds=ts, median_s=med, measured_speedup=measured, predicted_speedup=predicted,
                        measured_over_predicted=measured / predicted, peak_memory_gib=peak[key] / 2**30)
    del table, pipe, base
    if cuda:
        torch.cuda.empty_cache()
    return out


def markdown(results: dict) -> str:
    lines = ["| model | mode | row | block fwds | median s | measured × | predicted × | measured ÷ predicted | "
             "peak GiB | max diff to eager |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, modes in results["models"].items():
        for mode, rws in modes.items():
            for key, r in rws.items():
                diff = r.get("max_abs_diff_to_eager")
                lines.append(f"| {model} | {mode} | {key} | {r['block_forwards']} | {r['median_s']:.3f} | "
                             f"{r['measured_speedup']:.2f} | {r['predicted_speedup']:.2f} | "
                             f"{r['measured_over_predicted']:.3f} | {r['peak_memory_gib']:.1f} | "
                             f"{'' if diff is None else f'{diff:.2e}'} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--modes", default="eager,regional", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=3, help="timed interleaved rounds (median reported)")
    p.add_argument("--warmup-rounds", type=int, default=2, help="untimed interleaved rounds first (default 2)")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (--smoke: eager)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny configs of every model on the CPU, compiled with the eager backend, 1 round")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu_speed.json"), help="JSON output path")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.backend, args.repeats = "cpu", "eager", 1
    models, modes = args.models.split(","), args.modes.split(",")
    for bad in [m for m in models if m not in MODELS] + [m for m in modes if m not in MODES]:
        p.error(f"unknown model or mode {bad!r}; models: {', '.join(MODELS)}; modes: {', '.join(MODES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no GPU; use --smoke for the CPU check")
    # One process compiles eight attachments of a model (stock, ILF, cache, TaylorSeer rows, each its own module
    # tree) through the same block code: each stays within dynamo's limit (tests/test_compile.py), together
    # they do not, and TaylorSeer's hooks guard its step counters.
    for key, value in (("recompile_limit", 1024), ("accumulated_recompile_limit", 1 << 16)):
        if hasattr(torch._dynamo.config, key):  # torch versions differ
            setattr(torch._dynamo.config, key, value)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    results = {"device": gpu, "torch": torch.__version__, "smoke": args.smoke, "repeats": args.repeats,
               "backend": args.backend, "models": {}, "complete": False}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    eager_latents: dict = {}
    for model in models:
        for mode in sorted(modes, key=lambda m: m != "eager"):  # eager first: compiled rows compare to it
            print(f"[gpu_speed] {model} {mode} …", flush=True)
            results["models"].setdefault(model, {})[mode] = bench_model(model, mode, args, eager_latents)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            args.out.with_suffix(".md").write_text(markdown(results) + "\n")
    results["complete"] = True
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
