"""The ILF forward (paper §3.1, eq. 2–3), built from hooks on the backbone's own blocks.

One denoising call at timestep t with feedback, for loop [b, e] of an N-block backbone:

    f_{b-1,t}  = input of block b                       (saved by the hook on block b)
    f_{e,t}    = B_e(...B_0(x))                         (blocks 0..e run unchanged, conditioned on t)
    f_feed     = F(f_{e,t}; cond(t), text/class)        (feedback block, conditioned on t)
    h_{b-1}    = f_{b-1,t}
    h_i        = B_i(h_{i-1} + s_i · f_feed; t_post)    for i = b..e   (the loop, re-run)
    out        = Out(B_{N-1}(...B_{e+1}(h_e; t_post)); t_post)

Reading of eq. 2–3: the paper writes f_{i,t-r} = f_feed·s_i + f_{i-1,t-r}; we read the right-hand side as
the *input* of block B_i (which is then run), because the paper's block counts (N + m + 1 per feedback step)
require the m loop blocks to run again. The block-e hook returns h_e in place of f_{e,t}, so the model's own
loop carries on with blocks e+1.. and its own output layer.

Blocks are addressed through the adapter's block contract (`adapters/blocks.py`): global indices across
the model's block lists, and streams by name. f and h above are the image stream (`hidden_states`); in
MMDiT blocks (SD3, Flux) the text stream (`encoder_hidden_states`) threads through the loop re-run as the
model threads it (block b gets the text stream block b got, each loop block the one its predecessor
returned), and F gets the streams block e returned (where block e returns no text stream, SD3's
`context_pre_only` last block, the text stream block e was given). Each loop block re-runs with its own
conditioning arguments of this call, its time argument replaced by t_post's.

Per call, one model-level hook (the call planner, `planner.py`) locates the step on the host from the
scheduler's counter and decides; only a feedback call arms a `FeedbackLoop` (`ILFRuntime.active`), which the
block and time hooks hand their work to. Without feedback on a call (a skipped step, or
`ilf_feedback=False`) every hook passes straight through after one `is None` test, and no device tensor is
read into Python.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers.hooks import ModelHook
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..adapters import BackboneAdapter
from ..adapters.blocks import BlockSite, BlockStack
from ..config import INFERENCE_FIELDS, ILFConfig
from ..errors import FeedbackMismatchError, ILFError, LoopRangeError, ScheduleError
from ..feedback import FeedbackModule
from ..hooks import ILF_BLOCK_HOOK, ILF_MODEL_HOOK, ArgBinder, HookHandle, register, unregister_all
from ..schedule import feedback_steps, loop_ratio, post_timestep
from ..warn import warn_user
from .attached import FEEDBACK_ATTR, RUNTIME_ATTR
from .clock import SchedulerClock, StepInfo
from .planner import CallPlanner, ModelCall, attach_planner

CONTROL_KWARGS = ("ilf_t_post", "ilf_feedback")  # per-call controls the model hook pops


class FeedbackLoop:
    """The loop executor of one feedback call: armed by `ILFRuntime.plan_call` only when the call has feedback
    (`ILFRuntime.active`), disarmed when the call returns. Its methods are the only writers of its state: the
    block hooks hand it blocks b..N-1, the time hook hands it t_post's block conditioning."""

    def __init__(self, runtime: "ILFRuntime", inputs: dict, t_post: torch.Tensor, keep=None):
        self.runtime, self.inputs, self.t_post = runtime, inputs, t_post  # t_post: model units, on t's device
        self.keep = keep  # a host tensor an asynchronous copy reads from: alive until the call ends
        self.post_block_kwargs: dict = {}  # t_post's time conditioning for the blocks after e (time hook)
        self.loop_input: dict | None = None  # the streams block b was given: {"hidden_states": f_{b-1,t} [B, L, D], …}
        self.in_loop = False  # each loop block's non-stream arguments of this call: on its hook (`saved`)

    def set_post_block_kwargs(self, kwargs: dict) -> None:
        self.post_block_kwargs = kwargs

    def block(self, hook: "_BlockHook", args: tuple, kwargs: dict):
        """Block `hook.index` (≥ b) of a feedback call: save block b's streams, run the loop (block e), swap in
        t_post (blocks > e).

        Compiled (regionally, `compile_repeated_blocks`, or the whole model) this is traced. It branches only on
        the hook's role flags (first / last / after), which many blocks share, and stores a block's arguments
        on its own hook rather than in a dict indexed by block: dynamo guards neither a block index nor a
        dict's length, so the blocks of one class share a graph per role."""
        original = hook.fn_ref.original_forward
        if self.in_loop:
            return original(*args, **kwargs)
        rt = self.runtime
        call = hook.binder.bind(args, kwargs)
        if hook.after:
            call.update(rt.adapter.post_block_kwargs(rt.model, self))
            return original(**call)
        streams = {k: call[k] for k in hook.stack.streams if k in call}
        hook.saved = {k: v for k, v in call.items() if k not in streams}  # cleared by `close`
        if hook.first:
            self.loop_input = streams
        out = original(**call)
        if hook.last:
            out = self.inner_loop(out, call, hook.stack)
        return out

    def close(self) -> None:
        """Drop what the call saved on the loop's block hooks."""
        for hook in self.runtime.loop_hooks:
            hook.saved = None

    def inner_loop(self, out_e, call_e: dict, stack_e: BlockStack):
        """Feedback on block e's output, then the loop b..e re-run with the scaled feedback added to the image
        stream (eq. 2–3); returns the loop's result in block e's return form."""
        rt = self.runtime
        fb, img = rt.feedback, rt.adapter.image_stream
        streams_e = stack_e.as_streams(out_e)
        fb_in = {k: (v if v is not None else call_e[k]) for k, v in streams_e.items()}  # F's streams
        loop_hooks = rt.loop_hooks  # blocks b..e, with their arguments of this call
        fed = stack_e.as_streams(fb(**{**loop_hooks[-1].saved, **fb_in}))  # F's streams at t
        f_feed, f_e = fed[img], streams_e[img]  # [B, L, D]
        # feed_text: F's text stream is fed back too (MMDiT); a context-pre-only F returns none to feed
        extra = {k: v for k, v in fed.items() if k != img and v is not None} if rt.config.feed_text else {}
        if not rt.config.rerun_loop:  # the no-loop control: F's output added once to f_e
            return stack_e.as_output({**streams_e, img: f_e + fb.scales[0].to(f_e.dtype) * f_feed.to(f_e.dtype)})
        post = rt.adapter.post_block_kwargs(rt.model, self)  # t_post's time conditioning
        h = dict(self.loop_input)  # the streams block b was given; h[img] = f_{b-1,t}
        self.in_loop = True
        try:
            for j, (site, hook) in enumerate(zip(rt.loop_sites, loop_hooks)):
                for k, feed in ((img, f_feed), *extra.items()):
                    x = h[k]
                    h[k] = x + fb.scales[j].to(x.dtype) * feed.to(x.dtype)  # eq. 2 (j = 0), eq. 3 (j > 0)
                returned = site.stack.as_streams(site.module(**{**hook.saved, **post, **h}))
                h.update({k: v for k, v in returned.items() if v is not None or k == img})
        finally:
            self.in_loop = False
        return stack_e.as_output({**streams_e, **{k: h[k] for k in streams_e if streams_e[k] is not None}})


class _BlockHook(ModelHook):
    """On blocks b..N-1: a plain call passes straight through (one `is None` test); a feedback call goes to
    the armed `FeedbackLoop`."""

    def __init__(self, runtime: "ILFRuntime", site: BlockSite, binder: ArgBinder):
        super().__init__()
        self.runtime = runtime
        self.index, self.stack = site.index, site.stack
        self.binder = binder  # the block class's signature, read at attach
        b, e = runtime.config.loop
        self.first, self.last, self.after = site.index == b, site.index == e, site.index > e  # its role
        self.saved: dict | None = None  # its non-stream arguments in the current feedback call

    def new_forward(self, module, *args, **kwargs):
        loop = self.runtime.active
        if loop is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        return loop.block(self, args, kwargs)


class ILFRuntime:
    """ILF attached to one transformer. Made by `apply_ilf`; undone by `remove_ilf`."""

    feature = "ILF"  # the planner names it when it refuses a diffusers cache

    def __init__(
        self,
        model: nn.Module,
        adapter: BackboneAdapter,
        feedback: FeedbackModule,
        config: ILFConfig,
        clock: SchedulerClock | None = None,
    ):
        if tuple(feedback.loop) != tuple(config.loop):
            raise LoopRangeError(f"feedback was built for loop {feedback.loop}, config asks for {config.loop}")
        config.check_model(len(adapter.blocks(model)))
        adapter.check_loop(model, config.loop)
        if config.feed_text:
            stack_e = adapter.stack_of(model, config.loop[1])
            if len(stack_e.streams) < 2 or not config.rerun_loop:
                raise ILFError(
                    f"feed_text=True feeds F's text stream back into the loop, but {type(model).__name__}'s "
                    f"blocks carry {'no text stream' if len(stack_e.streams) < 2 else 'it'}"
                    f"{'' if len(stack_e.streams) < 2 else ' and rerun_loop=False has no loop'}; use feed_text=False"
                )
            if getattr(adapter.blocks(model)[config.loop[1]], "context_pre_only", False):
                raise ILFError(
                    f"feed_text=True: the loop ends at block {config.loop[1]}, which is context_pre_only (it and a "
                    "feedback built like it return no text stream); end the loop earlier or use feed_text=False"
                )
        self.model, self.adapter, self.feedback, self.clock = model, adapter, feedback, clock
        self.config = config
        self.active: FeedbackLoop | None = None  # armed during a feedback call only
        self._hooked: list[HookHandle] = []
        self.planner: CallPlanner | None = None
        self.control_kwargs = CONTROL_KWARGS
        self._plans: dict[int, frozenset[int]] = {}
        self.warned_off_schedule = False

    # ---- attach / detach ----
    def attach(self) -> "ILFRuntime":
        model = self.model
        model.add_module(FEEDBACK_ATTR, self.feedback)
        setattr(model, RUNTIME_ATTR, self)
        try:
            handle, self.planner = attach_planner(model, self, ILF_MODEL_HOOK, self.clock, self.adapter)
            self._hooked.append(handle)
            self.sites = self.adapter.sites(model)  # the block contract, read once per attach
            self.loop_hooks = []  # the hooks of blocks b..e, in order
            b, e = self.config.loop
            self.loop_sites = self.sites[b:e + 1]
            for site in self.sites[b:]:
                hook = _BlockHook(self, site, ArgBinder(type(site.module).forward))
                self._hooked.append(register(site.module, hook, ILF_BLOCK_HOOK))
                if site.index <= e:
                    self.loop_hooks.append(hook)
            self._hooked += self.adapter.install_time_hooks(model, self)
        except BaseException:  # a refusal while attaching (an adapter's time hooks: Wan's t_post) changes nothing
            self.detach()
            raise
        return self

    def detach(self) -> FeedbackModule:
        unregister_all(self._hooked)  # refuses before anything changes
        del self.model._modules[FEEDBACK_ATTR]
        delattr(self.model, RUNTIME_ATTR)
        self.active = None
        return self.feedback

    # ---- schedule ----
    def update(self, **changes) -> ILFConfig:
        """Change inference settings (feedback_steps, t_post, …) of the attached feedback."""
        if "loop" in changes and tuple(changes["loop"]) != self.config.loop:
            raise LoopRangeError(
                f"the attached feedback was trained for loop {self.config.loop}; a different loop needs a "
                "feedback trained for it"
            )
        bad = sorted(k for k in changes if k not in INFERENCE_FIELDS and k != "loop")
        if bad:  # the same rule as apply_ilf's overrides of a trained feedback
            raise FeedbackMismatchError(
                f"{bad} cannot change on an attached feedback (it was built as {self.config.to_dict()}); only "
                f"{sorted(INFERENCE_FIELDS)} can be updated — remove_ilf() and apply_ilf() anew for the rest"
            )
        self.config = dataclasses.replace(self.config, **changes)
        self._plans.clear()
        return self.config

    def feedback_plan(self, num_steps: int) -> frozenset[int]:
        if num_steps not in self._plans:
            self._plans[num_steps] = feedback_steps(self.config.feedback_steps, num_steps)
        return self._plans[num_steps]

    def post_timestep_for(self, step: StepInfo) -> torch.Tensor:
        c = self.config
        k = loop_ratio(c.loop_len, len(self.adapter.blocks(self.model)), c.t_post_ratio)
        return post_timestep(
            c.t_post, step.t, step.gap, k=k, first_step=step.index == 0,
            num_train_timesteps=step.num_train_timesteps, floor=c.anneal_floor,
        )

    def model_t_post(self, step: StepInfo) -> torch.Tensor:
        """`post_timestep_for(step)` in the units of the model's `timestep` argument (what `ilf_t_post=` takes)."""
        t_post = self.post_timestep_for(step)
        return self.adapter.to_model_units(self.model, t_post)

    def warn_if_off_schedule(self, step: StepInfo) -> None:
        """Warn once per attach when a run leaves the schedule the feedback was trained for."""
        c, sched = self.config, self.clock.scheduler() if self.clock is not None else None
        problems = []
        if c.num_inference_steps is not None and step.num_steps != c.num_inference_steps:
            problems.append(f"{step.num_steps} steps (trained for {c.num_inference_steps})")
        if c.scheduler is not None and sched is not None and type(sched).__name__ != c.scheduler:
            problems.append(f"{type(sched).__name__} (trained with {c.scheduler})")
        if problems and not self.warned_off_schedule:
            self.warned_off_schedule = True
            warn_user(  # at the user's line, clear of the progress bar (ilf.warn)
                f"this feedback runs with {' and '.join(problems)}; it still works, but it was trained for "
                f"the other schedule. Call the pipeline with num_inference_steps={c.num_inference_steps} "
                "and its trained scheduler for the quality it was trained for."
            )

    # ---- per call (the planner's executor protocol) ----
    def end_call(self) -> None:
        if self.active is not None:  # drop the call's saved activations (checkpointing captured what it needs)
            self.active.close()
            self.active = None

    @torch.compiler.disable  # host work once per call (reads the scheduler); compiled code sees only its result
    def plan_call(self, call: ModelCall) -> None:
        """Decide whether this call has feedback and arm the loop executor (`self.active`, with its t_post) if so."""
        self.end_call()  # a call that raised left its loop armed
        t_post, feedback = call.controls.get("ilf_t_post"), call.controls.get("ilf_feedback")
        inputs = call.inputs
        t = inputs.get("timestep")
        if t is None:
            raise ScheduleError("the transformer was called without `timestep`; ILF conditions on it")
        # The clock and the t_post strategies work in the scheduler's units; t_post leaves in the model's.
        step, from_schedule = None, False  # from_schedule: t_post is read off the schedule
        if t_post is not None or feedback is not None:  # explicit control (training, custom loops)
            on = True if feedback is None else bool(feedback)
            if on and t_post is None and self.config.t_post == "none":
                t_post = t  # t_post = the call's own timestep: nothing to locate (a replayed training call)
            elif on and t_post is None:
                if self.clock is None:
                    raise ScheduleError("ilf_feedback=True on a bare transformer also needs ilf_t_post=")
                # an explicit call may be made outside the pipeline's loop: its value decides (one read)
                dtype = t.dtype if torch.is_tensor(t) else None
                step = self.clock.locate(self.adapter.to_scheduler_units(self.model, t), dtype=dtype)
                from_schedule = True
        elif self.clock is not None:
            step = call.step()  # the scheduler's counter, on the host: no device read
            self.warn_if_off_schedule(step)
            on = step.index in self.feedback_plan(step.num_steps)
            if on:
                if self.config.t_post == "none":
                    t_post = t
                else:
                    from_schedule = True
        else:
            raise ScheduleError(
                "ILF on a bare transformer needs, per call, ilf_t_post=<post-feedback timestep> (or "
                "ilf_feedback=False for the stock forward); or attach with apply_ilf(model, ..., "
                "scheduler=scheduler) so steps are read from the scheduler"
            )
        if from_schedule:
            t_post = self.model_t_post(step)  # a host tensor
        keep = None
        if on:
            if not torch.is_tensor(t_post):
                t_post = torch.tensor(float(t_post))
            if torch.is_tensor(t) and t_post.device != t.device:
                # an asynchronous copy from pinned memory (a blocking copy, or one from pageable memory, may
                # synchronise the stream); its source stays referenced until the call ends
                src = t_post.pin_memory() if t.device.type == "cuda" else t_post
                keep, t_post = src, src.to(t.device, non_blocking=True)
        if on:
            self.active = FeedbackLoop(self, inputs, t_post, keep)

    # ---- training ----
    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the frozen blocks (recomputed in backward) with this call's ILF state restored.

        Needed because the feedback call's loop executor is disarmed when the call returns, and a teacher
        forward between the student forward and its backward would otherwise arm another.
        """

        def run_checkpointed(block, *args):
            active = self.active
            kept = [h.saved for h in self.loop_hooks]  # the loop blocks' arguments stored so far

            def run(*a):
                outer, self.active = self.active, active
                for h, v in zip(self.loop_hooks, kept):  # recomputation: the call's own, since cleared
                    if v is not None:
                        h.saved = v
                try:
                    return block(*a)
                finally:
                    self.active = outer

            return checkpoint(run, *args, use_reentrant=False)

        self.model.enable_gradient_checkpointing(gradient_checkpointing_func=run_checkpointed)

