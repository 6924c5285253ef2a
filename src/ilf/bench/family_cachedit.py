"""cache-dit's DBCache (`cache_dit.enable_cache`), when the optional extra is installed (`pip install ilf[cache-dit]`).

cache-dit ships a block adapter per pipeline (`BlockAdapter`: the block lists and their `ForwardPattern`, the
block's inputs and return order): PixArt and Sana (`transformer_blocks`, Pattern_3: hidden_states in and out),
DiT (Pattern_3 and a patch functor), SD3 (`transformer_blocks`, Pattern_1: returns (encoder_hidden_states,
hidden_states)) and Flux (Pattern_1; by default its dual- and single-stream lists run as one chain, the single
list a "dummy" that a patch functor skips in the model's forward, so Fn/Bn count across both). It manages its
own per-call context; we attach, read its statistics (`cache_dit.summary`) and detach (`cache_dit.disable_cache`
and the leftovers it does not remove). Where the pipeline runs the CFG branches as two calls (Flux's true CFG)
it is told so (`enable_separate_cfg`), else it would take them for two steps.

Every knob cache-dit 1.5.3 documents for DBCache is an option: Fn/Bn, the residual threshold, warm-up, the
cached-step limits, a calibrator forecasting the skipped blocks' residual (TaylorSeer order 1/2, DMD, FoCa) and
a step computation mask (`steps_computation_mask`): our evenly spread one (`compute=K`) or cache-dit's predefined
policies (`mask=slow|medium|fast|ultra`, its `steps_mask`), whose cached steps always reuse (`policy=static`: a
fixed cost, known before running) or ask the threshold (`policy=dynamic`).

Running it fairly needs three things cache-dit leaves to its user (each explained where it is done):
* calibrator states are created lazily at their first update, after the step counter was advanced, so they run
  one step behind the step for a whole call (TaylorSeer's derivatives then start a step late). `attach` makes one
  throw-away call to learn the streams' names, and every later call creates those states before its first step;
* a dynamic skip decision is one for the whole batch (both CFG halves of every image): `max_batch` is 1 then;
* SD3 at Bn=0: its text-less last block is cached, the text stream's residual is never recorded and the text
  calibrator asserts; it is turned off there (the image stream keeps its calibrator).
It is imported lazily: without it the family reports itself unavailable and the harness records the row skipped.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os

from .errors import MethodSpecError
from .family import TWO_CALLS, Attachment, Family, Prepared
from .grammar import Option, parse_choice, parse_float, parse_int

CALIBRATORS = ("none", "taylorseer1", "taylorseer2", "dmd", "foca")
MASK_POLICIES = ("none", "slow", "medium", "fast", "ultra")  # cache-dit's predefined `steps_mask` policies


def _quiet_cache_dit():
    """cache-dit logs INFO lines on every enable and a warning on every disable; keep the bench output readable."""
    from .hook_context import quiet_loggers  # imports diffusers: not when the CLI lists the families

    return quiet_loggers(*(n for n in logging.root.manager.loggerDict if n.startswith(("cache_dit", "CACHE_DIT"))))


def _import_cache_dit():
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")  # read once, when cache_dit is first imported
    import cache_dit

    return cache_dit


def even_mask(steps: int, compute: int, warmup: int) -> list[int]:
    """A static steps mask (1 = compute, 0 = reuse) computing `compute` of `steps` steps: the first `warmup`,
    then the other compute - warmup at even intervals over the rest, the last one on the last step.

    even_mask(20, 6, 2) = steps 0, 1, 6, 10, 15, 19."""
    if not 1 <= warmup <= compute <= steps:
        raise ValueError(f"need 1 <= warmup ({warmup}) <= compute ({compute}) <= steps ({steps})")
    mask = [1] * warmup + [0] * (steps - warmup)
    rest = compute - warmup
    for i in range(rest):  # the i-th of `rest` points at (i + 1)/rest of the way from step warmup-1 to the last
        mask[warmup - 1 + math.floor((i + 1) * (steps - warmup) / rest + 0.5)] = 1  # halves round up
    return mask


def steps_mask_of(spec) -> list[int] | None:
    """The spec's steps computation mask (one 0/1 per step), or None without one."""
    if spec.get("compute", 0):
        return even_mask(spec.steps, spec.get("compute"), spec.get("warmup", 8))
    if spec.get("mask", "none") != "none":
        cache_dit = _import_cache_dit()
        return list(cache_dit.steps_mask(total_steps=spec.steps, mask_policy=spec.get("mask")))
    return None


def has_mask(spec) -> bool:
    """Whether the spec gives a steps computation mask (compute=K or mask=POLICY)."""
    return bool(spec.get("compute", 0)) or spec.get("mask", "none") != "none"


def is_static(spec) -> bool:
    """Whether every step's choice is fixed before running (a mask whose cached steps always reuse)."""
    return has_mask(spec) and spec.get("policy", "static") == "static"


class CacheDiTFamily(Family):
    name = "cache-dit"
    peer = True
    summary = ("cache-dit DBCache: the first FN and last BN blocks always run, the middle ones are skipped while "
               "the residual after the first FN changes less than THRESHOLD, or on the steps a mask leaves out "
               "(optional extra)")
    options = {
        "fn": Option(parse_int, "Fn_compute_blocks: leading blocks that always run (they measure the change)", 1),
        "bn": Option(parse_int, "Bn_compute_blocks: trailing blocks that always run (they refine a reused step)", 0),
        "threshold": Option(parse_float, "residual_diff_threshold: reuse while the relative L1 change of the "
                            "first FN blocks' residual is below it (dynamic steps only)", 0.08),
        "warmup": Option(parse_int, "max_warmup_steps: the first steps never reuse (cache-dit's default 8; with "
                         "compute=K, the mask's leading compute steps)", 8),
        "max_cached": Option(parse_int, "max_cached_steps: at most this many reused steps per call (-1 = no limit; "
                             "dynamic steps only)", -1),
        "max_continuous": Option(parse_int, "max_continuous_cached_steps: at most this many reused steps in a row "
                                 "(-1 = no limit; dynamic steps only)", -1),
        "calibrator": Option(parse_choice(*CALIBRATORS), "forecast the skipped blocks' residual from the computed "
                             "steps instead of reusing the last one: TaylorSeer of order 1 or 2, DMD (exponential "
                             "modes), FoCa (BDF2 + Heun); none = reuse as is", "none"),
        "compute": Option(parse_int, "a steps mask computing K steps in all: the first WARMUP, the rest evenly "
                          "spread ending on the last step (0 = no mask)", 0),
        "mask": Option(parse_choice(*MASK_POLICIES), "cache-dit's predefined steps mask (`steps_mask(mask_policy=)`"
                       ", e.g. medium = 15 of 28 steps, scaled to the step count; none = no mask)", "none"),
        "policy": Option(parse_choice("static", "dynamic"), "steps_computation_policy: the steps a mask leaves out "
                         "always reuse (static), or reuse only below THRESHOLD (dynamic)", "static"),
    }

    def unavailable(self):
        if importlib.util.find_spec("cache_dit") is None:
            return "cache-dit is not installed (pip install 'ilf[cache-dit]')"
        return None

    def validate(self, spec):
        if spec.get("compute", 0) and spec.get("mask", "none") != "none":
            raise MethodSpecError(f"{spec.name!r}: give compute=K (an even mask) or mask=POLICY, not both")
        if spec.get("compute", 0):
            try:
                even_mask(spec.steps, spec.get("compute"), spec.get("warmup", 8))
            except ValueError as err:
                raise MethodSpecError(f"{spec.name!r}: compute={spec.get('compute')}: {err} (set warmup=)") from None
        if spec.get("mask", "none") != "none" and self.unavailable() is None:
            try:  # cache-dit's policies cover 4, 6 and 8 or more steps
                steps_mask_of(spec)
            except (AssertionError, ValueError) as err:
                raise MethodSpecError(f"{spec.name!r}: cache-dit's steps_mask refuses it: {err}") from None
        if spec.get("policy") is not None and not has_mask(spec):
            raise MethodSpecError(f"{spec.name!r}: policy= applies to a steps mask: add compute=K or mask=POLICY")

    def max_batch(self, spec):
        # a dynamic decision compares the residual change of the whole batch (every image, both CFG halves) with
        # the threshold: batched, one image's skip depends on its neighbours. One image per call keeps it its own.
        return None if is_static(spec) else 1

    def predicted_block_forwards(self, spec, num_blocks, feedback=None):
        if not is_static(spec):
            return None  # the threshold decides per image
        # a masked-out step still runs the first Fn (they measure the change) and the last Bn blocks
        edge = min(spec.get("fn", 1) + spec.get("bn", 0), num_blocks)
        return sum(num_blocks if m else edge for m in steps_mask_of(spec))

    def prepare(self, spec, ctx):
        cache_dit = _import_cache_dit()
        from .peer_support import textless_blocks

        fn, bn, mask = spec.get("fn", 1), spec.get("bn", 0), steps_mask_of(spec)
        settings = dict(
            Fn_compute_blocks=fn, Bn_compute_blocks=bn,
            residual_diff_threshold=spec.get("threshold", 0.08), max_warmup_steps=spec.get("warmup", 8),
            max_cached_steps=spec.get("max_cached", -1), max_continuous_cached_steps=spec.get("max_continuous", -1),
            num_inference_steps=spec.steps,
        )
        if mask is not None:
            settings.update(steps_computation_mask=mask, steps_computation_policy=spec.get("policy", "static"))
        if ctx.cfg_batch == TWO_CALLS:  # Flux's true CFG: cond then uncond calls, cached apart (cache-dit's option)
            settings.update(enable_separate_cfg=True, cfg_compute_first=False)
        calibrator = spec.get("calibrator", "none")
        # SD3's text-less last block in the skipped middle (Bn too small to hold it): no text residual is ever
        # recorded, and the text calibrator would assert on its missing state
        n = ctx.num_blocks
        text_calibrator = not any(i < n - bn for i in textless_blocks(ctx.pipe.transformer))
        if calibrator != "none" and ctx.run_once is None:
            raise MethodSpecError(f"{spec.name!r}: a calibrator needs one throw-away call after enabling, and this "
                                  "caller gives no way to run the pipeline (MethodContext.run_once)")

        def calibrator_config():
            if calibrator == "none":
                return None
            if calibrator.startswith("taylorseer"):
                cfg = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=int(calibrator[-1]))
            else:
                cfg = {"dmd": cache_dit.DMDCalibratorConfig, "foca": cache_dit.FoCaCalibratorConfig}[calibrator]()
            cfg.enable_encoder_calibrator = text_calibrator
            return cfg

        def attach(pipe):
            model = pipe.transformer
            # cache-dit's disable leaves things behind: its statistics as attributes of the block list, the block
            # list re-registered last among the transformer's children, the transformer's forward as an instance
            # attribute, and for DiT its patch functor (a patched instance `forward`, an `_is_patched` flag and an
            # `_norm1_emb` alias submodule). Detach undoes all of it so the model is stock again.
            attrs_before = {name: set(m.__dict__) for name, m in model.named_modules()}
            children_before = list(model._modules)
            with _quiet_cache_dit():
                cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(**settings),
                                       calibrator_config=calibrator_config())
            aligner = None if calibrator == "none" else align_calibrators(model)

            def stats():
                with _quiet_cache_dit():
                    summary = cache_dit.summary(pipe, logging=False)
                return {"cached_steps_last_call": [list(map(int, s.cached_steps)) for s in summary]}

            def detach():
                if aligner is not None:
                    aligner.remove()
                with _quiet_cache_dit():
                    cache_dit.disable_cache(pipe)
                for name in [k for k in model._modules if k not in children_before]:
                    del model._modules[name]  # the `_norm1_emb` alias of transformer_blocks[0].norm1.emb
                for name, m in model.named_modules():
                    for attr in set(m.__dict__) - attrs_before.get(name, set(m.__dict__)):
                        if attr == "forward" or attr.startswith("_"):
                            del m.__dict__[attr]  # a patched or restored forward, flags, statistics
                if list(model._modules) != children_before:
                    model._modules = type(model._modules)((k, model._modules[k]) for k in children_before)

            if aligner is not None:
                try:
                    with _quiet_cache_dit():
                        ctx.run_once(2)  # the throw-away call: the calibrator streams' names (two steps suffice)
                except BaseException:
                    detach()
                    raise
            return Attachment(detach, stats=stats)

        version = getattr(cache_dit, "__version__", None)
        info = {"config": {**settings, "calibrator": calibrator, "text_calibrator": text_calibrator},
                "cache_dit_version": str(version) if version else None}
        return Prepared(spec, attach, info)


def align_calibrators(model):
    """A forward pre-hook on the cached transformer that starts cache-dit's calibrator states on step 0.

    cache-dit creates a fresh context (and fresh calibrators) for every pipeline call. At each step it first
    advances the calibrators' states (`mark_step_begin`), then computes or forecasts; but a state is created only
    at its stream's first update, after step 0's advance, so it counts one step behind the context for the whole
    call (TaylorSeer then forms its first derivative a step late). Before each call's first transformer call this
    hook creates the states of every stream seen before, so step 0's advance starts them at step 0, as cache-dit's
    own persistent contexts are from their second call on. The names are learned from the calls it sees: the
    attach's throw-away call supplies them before the first real one. Returns the hook handle."""
    seen: dict[tuple[str, int], set[str]] = {}  # (context name, calibrator slot) -> stream names

    def calibrators(module, name):
        ctx = module._context_manager.get_context(name)
        return ctx, (*ctx.get_calibrators(), *ctx.get_cfg_calibrators())  # image, text; CFG-branch image, text

    def pre_hook(module, args, kwargs):
        for name in module._context_names:
            ctx, cals = calibrators(module, name)
            if ctx.get_current_transformer_step() != -1:
                continue  # a step of this call has begun: its states exist and count with it
            for slot, cal in enumerate(cals):
                for stream in seen.get((name, slot), ()) if cal is not None else ():
                    cal.maybe_init_state(stream)

    def post_hook(module, args, kwargs, output):
        for name in module._context_names:  # this call's streams, for the next call's first step
            for slot, cal in enumerate(calibrators(module, name)[1]):
                if cal is not None:
                    seen.setdefault((name, slot), set()).update(cal.states)

    pre = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    post = model.register_forward_hook(post_hook, with_kwargs=True)

    class Handles:
        @staticmethod
        def remove():
            pre.remove()
            post.remove()

    return Handles()
