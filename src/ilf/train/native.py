"""The corrector's objective on the user's own pipeline: record its sampling, replay its transformer.

For S prompts (each with its own seeded noise) and the corrector attached:

    teacher   = the stock pipeline's run (the corrector bypassed): target_k = its state after step k (or, with a
                finer --teacher-steps grid, its state at the student's next timestep)
    rollout   = the pipeline's run with cache + corrector, re-recorded every `rollout_every` iterations: for
                each forecast step k the transformer's arguments of every call (branch), the solver's (x_j, y_j,
                t_j) up to k, and on every full step block e's outputs (and x_a): from those the trainer rebuilds
                exactly the forecasts the runtime used (`corrector_state.BranchCache`)
    loss      = MSE(scheduler.step(combine(transformer(args of step k | forecasts of step k)), t_k, x_k | the
                rollout's solver state before k), target_k)     over the forecast steps k

so every visited forecast state is trained to land the real solver update on the stock pipeline's path. No
latent, conditioning or scheduler code of any family is written here: the pipeline builds all of it, and
`guidance.fit` checks on every step that the rebuilt solver input equals the recorded one, as the replay of
the scheduler must land on the recorded next state; anything else is refused.

Records stream to `OUTPUT_DIR/record/` in shards (one pipeline call of `record_batch` prompts each, atomic
safetensors); a shard holds only what the loss reads. Each rank records and trains on its own shards.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..runtime.clock import StepInfo
from ..runtime.corrector import CacheCorrector
from ..runtime.corrector_state import BranchCache
from ..errors import ILFError
from .checkpoint import rank_generator
from .guidance import Combination, combine, fit
from .objective import LossTerms
from .prompts import generators, prompt_batches
from .record import (
    PipelineRecorder, ShardCache, capture_template, pack, primary_output, replay_check, unpack, write_shard,
)

STATE_FILE = "native_state.json"
STOCK = {"ilf_feedback": False}  # the control kwarg that makes an attached corrector run the stock model


def timesteps(scheduler) -> torch.Tensor:
    """A scheduler's timesteps as float64 on the host."""
    return torch.as_tensor(scheduler.timesteps).double().cpu()


def grid_indices(teacher: torch.Tensor, student: torch.Tensor) -> list[int] | None:
    """Where each student timestep after the first sits on the teacher's grid (None: one does not)."""
    hits = [torch.nonzero(torch.abs(teacher - t) < 1e-3).flatten() for t in student[1:]]
    return None if any(len(h) == 0 for h in hits) else [int(h[0]) for h in hits]


class PipelineObjective:
    """The loss on recordings of `pipe` (see the module docstring) for the corrector or, with an ILF runtime, the
    trajectory objective; the trainer's objective API: `prepare`, `refresh(step)`, `loss(ddp_model, step,
    micro)`, `save(folder)`, `restore(folder)`, `finish()`."""

    def __init__(self, *, pipe, runtime, prompts: list, call_kwargs: dict, output_dir: Path, num_steps: int,
                 teacher_steps: int | None, rollout_every: int, per_device: int, accelerator, seed: int,
                 record_batch: int, max_ram_bytes: int = 2 << 30, log=print, progress: bool = True):
        self.pipe, self.runtime, self.prompts, self.call = pipe, runtime, prompts, dict(call_kwargs)
        self.corrector = isinstance(runtime, CacheCorrector)  # else ILF: the trajectory objective
        self.n, self.m = num_steps, teacher_steps
        if self.m is not None and self.m < self.n:
            raise ILFError(f"--teacher-steps {self.m} must be at least the {self.n} steps it is trained for")
        self.rollout_every, self.acc, self.seed, self.log = rollout_every, accelerator, seed, log
        self.show_progress = progress
        self.root = Path(output_dir) / "record"
        if self.corrector:  # the steps trained: the cache's forecast steps, or the ILF plan's feedback steps
            self.forecast_steps = sorted(set(range(num_steps)) - set(runtime.config.compute_steps(num_steps)))
            if not self.forecast_steps:
                raise ILFError(f"the cache's schedule computes every one of the {num_steps} steps: nothing to "
                               "correct; choose a larger --cache-interval or fewer --cache-warmup steps")
        else:
            self.forecast_steps = sorted(runtime.feedback_plan(num_steps))
            if not self.forecast_steps:
                raise ILFError(f"the feedback plan has no step in a {num_steps}-step schedule: nothing to train; "
                               "choose --feedback-steps")
        rank, world = accelerator.process_index, accelerator.num_processes
        batches = prompt_batches(prompts, record_batch)
        self.batches = [b for i, b in enumerate(batches) if i % world == rank]  # this rank's shards
        if not self.batches:
            raise ILFError(f"{len(prompts)} prompt(s) in batches of {record_batch} give {len(batches)} pipeline calls "
                           f"for {world} processes: give at least {world * record_batch} prompts or a smaller "
                           "record batch")
        self.shards_per_loss = max(1, round(per_device / record_batch))
        self.cache = ShardCache(max_ram_bytes)
        self.templates: dict[int, object] = {}
        self.rollout_dir: Path | None = None
        self.rollout_step = -1
        self.saved_rollout = -1  # the rollout the newest checkpoint trains on (kept on disk for a resume)
        self.cost: dict = {}

    # ---- recording ----
    def _call(self, j: int, num_steps: int) -> dict:
        idx, kwargs = self.batches[j]
        # one negative prompt for the whole run, as a list of the batch's size (diffusers pipelines take a string
        # negative prompt only where they repeat it themselves)
        negatives = {k: [v] * len(idx) for k, v in self.call.items() if k.startswith("negative_prompt")
                     and isinstance(v, str) and "prompt" in kwargs}
        kwargs = {k: list(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # fresh lists: Z-Image's
        # encode_prompt rewrites the caller's prompt list in place
        return {**self.call, **negatives, **kwargs, "num_inference_steps": num_steps,
                "generator": generators(idx, self.seed), "output_type": self.call.get("output_type", "latent")}

    def _rank_file(self, folder: Path, j: int) -> Path:
        return folder / f"rank{self.acc.process_index:03d}-shard{j:05d}.safetensors"

    def _teacher_steps(self) -> int:
        """The stock run's step count: the corrector's own N (its target is plain N's image); ILF's, the
        smallest M ≥ 2N whose timesteps hold the student's (a finer path to learn from), found on the pipeline's
        own schedules."""
        if self.m is None and self.corrector:
            self.m = self.n
        if self.m is None:
            student = timesteps(self._template(0))
            for m in range(2 * self.n, 8 * self.n + 1):
                if grid_indices(timesteps(capture_template(self.pipe, self._call(0, m), STOCK)), student) is not None:
                    self.m = m
                    break
            else:
                raise ILFError(f"no teacher grid of {2 * self.n} to {8 * self.n} steps holds the student's "
                               f"{self.n} timesteps; give --teacher-steps")
        return self.m

    def _record_teacher(self) -> None:
        self._teacher_steps()
        folder = self.root / f"teacher-{self.m}"
        manifest = folder / f"rank{self.acc.process_index:03d}.json"
        ident = {"prompts": repr(self.prompts), "call": repr(sorted(self.call.items())), "steps": self.m,
                 "seed": self.seed, "student_steps": self.n}
        if manifest.is_file() and json.loads(manifest.read_text()) == ident and all(
                self._rank_file(folder, j).is_file() for j in range(len(self.batches))):
            return  # recorded by the run this one resumes
        start, total = time.perf_counter(), 0
        student_ts = None
        for j in self._progress(range(len(self.batches)), "record teacher"):
            with PipelineRecorder(self.pipe, keep_call=lambda k: False, inject=STOCK) as rec, \
                    rec.run() as run:
                self.pipe(**self._call(j, self.m))
            for k, s in enumerate(run.steps):
                fit([c["output"] for c in s.calls], s.model_output, k)
            replay_check(run, run.extra_step_kwargs)
            if student_ts is None:
                student_ts = timesteps(self._template(j))
            targets = self._targets(run, student_ts)
            tensors = {"x0": run.steps[0].sample.contiguous().cpu()}
            tensors |= {f"target.{k}": targets[k].contiguous().cpu() for k in self.forecast_steps}
            total += write_shard(self._rank_file(folder, j), {"steps": len(run.steps)}, tensors)
            if j == 0:
                self._report("teacher", j, start, total)
        manifest.write_text(json.dumps(ident))
        self.cost["teacher_seconds"] = time.perf_counter() - start

    def _targets(self, run, student_ts: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's state at each student step's next timestep (its final state after the last step): what
        its solver returned (the next step's sample may differ: DiT's pipeline steps the scaled model input)."""
        prevs = [s.prev for s in run.steps]
        if self.m == self.n:
            return prevs
        hits = grid_indices(timesteps(run.template), student_ts)
        if hits is None:
            raise ILFError(f"the student's {self.n}-step grid does not lie on the teacher's {self.m}-step grid; "
                           "choose --teacher-steps whose timesteps include the student's (e.g. 2N for "
                           "DDPM-style spacing) or leave it unset")
        # the state the teacher's step before each of those timesteps returned; its final state after the last
        return [prevs[i - 1] for i in hits] + [prevs[-1]]

    def _record_rollout(self, step: int) -> float:
        folder = self.root / f"rollout-{step:08d}"
        start, total, fulls = time.perf_counter(), 0, []
        keep = set(self.forecast_steps)
        if self.corrector:  # what the forecasts are rebuilt from
            self.runtime.on_full = lambda k, b, out_e, x_a: fulls.append((k, b, dict(out_e), dict(x_a)))
        try:
            for j in self._progress(range(len(self.batches)), f"record rollout @{step}"):
                fulls.clear()
                with PipelineRecorder(self.pipe, keep_call=lambda k: k in keep) as rec, rec.run() as run:
                    self.pipe(**self._call(j, self.n))
                self.templates[j] = run.template
                replay_check(run, run.extra_step_kwargs)
                total += write_shard(self._rank_file(folder, j), *self._rollout_shard(run, fulls))
                if j == 0 and step == 0:
                    self._report("rollout", j, start, total)
        finally:
            if self.corrector:
                self.runtime.on_full = None
        self.rollout_dir, self.rollout_step = folder, step
        self.cache.clear()
        self._prune(keep={step, self.saved_rollout})  # at most two on disk: this one and the last checkpoint's
        return time.perf_counter() - start

    def _rollout_shard(self, run, fulls) -> tuple[dict, dict]:
        last = self.forecast_steps[-1]
        tensors, seen = {}, {}
        steps = []
        for k, s in enumerate(run.steps[:last + 1]):
            entry = {"t": pack(s.t, tensors, seen), "x": pack(s.sample, tensors, seen),
                     "y": pack(s.model_output, tensors, seen)}
            if k in self.forecast_steps:
                entry["comb"] = fit([c["output"] for c in s.calls], s.model_output, k).to_dict()
                entry["calls"] = [pack(c["kwargs"], tensors, seen) for c in s.calls]
                entry["prev"] = pack(s.prev, tensors, seen)  # where the pipeline went (replay checks)
            else:
                fit([c["output"] for c in s.calls], s.model_output, k)  # every step's combination is checked
            steps.append(entry)
        full = [{"step": k, "branch": b, "h": pack(h, tensors, seen), "x": pack(x, tensors, seen)}
                for k, b, h, x in fulls if k < last]
        return {"steps": steps, "full": full, "extra": run.extra_step_kwargs}, tensors

    def _report(self, what: str, j: int, start: float, nbytes: int) -> None:
        n = len(self.batches[j][0])
        per_prompt = nbytes / n
        self.log(f"ilf train: the {what} record takes {per_prompt / 2**20:.2f} MiB and "
                 f"{(time.perf_counter() - start) / n:.2f} s per prompt; {len(self.prompts)} prompts: "
                 f"{per_prompt * len(self.prompts) / 2**30:.2f} GiB on disk ({self.root})")

    def _progress(self, it, desc: str):
        from tqdm.auto import tqdm

        return tqdm(it, desc=desc, leave=False, disable=not (self.show_progress and self.acc.is_local_main_process))

    # ---- the trainer's objective API ----
    def prepare(self) -> dict:
        self._record_teacher()
        return {"teacher_seconds": self.cost.get("teacher_seconds", 0.0), "prompts": len(self.prompts),
                "forecast_steps": self.forecast_steps}

    def refresh(self, step: int) -> dict | None:
        if self.rollout_dir is not None and step % self.rollout_every:
            return None
        seconds = self._record_rollout(step)
        self.cost["rollout_seconds"] = self.cost.get("rollout_seconds", 0.0) + seconds
        return {"rollout_step": step, "rollout_seconds": seconds}

    def loss(self, ddp_model, step: int, micro: int) -> tuple[LossTerms, int]:
        g = rank_generator(self.seed, step, micro, self.acc.process_index)
        k = self.forecast_steps[int(torch.randint(len(self.forecast_steps), (1,), generator=g))]
        picks = torch.randperm(len(self.batches), generator=g)[:self.shards_per_loss].tolist()  # distinct shards
        total, rows = 0.0, 0
        for j in picks:
            err, n = self._shard_loss(ddp_model, j, k)
            total, rows = total + err * n, rows + n
        distill = total / rows
        zero = torch.zeros((), device=distill.device)
        return LossTerms(total=distill, diffusion=zero, distill=distill.detach()), rows

    def _shard_loss(self, ddp_model, j: int, k: int):
        x_next = self.replay_step(ddp_model, j, k)
        _, teacher = self.cache.get(self._rank_file(self.root / f"teacher-{self.m}", j))
        target = teacher[f"target.{k}"].to(x_next.device)
        return F.mse_loss(x_next.float(), target.float()), len(self.batches[j][0])

    def replay_step(self, ddp_model, j: int, k: int) -> torch.Tensor:
        """Forecast step k of shard j's rollout, replayed with the model's current corrector: the solver's next
        state. With the corrector the rollout ran with, it is the rollout's own next state (tested)."""
        device = self.acc.device
        skel, tensors = self.cache.get(self._rank_file(self.rollout_dir, j))
        steps, extra = skel["steps"], skel["extra"]
        sched = copy.deepcopy(self._template(j))
        with torch.no_grad():  # the solver's state before step k, from the rollout's own inputs
            for e in steps[:k]:
                sched.step(unpack(e["y"], tensors, device), unpack(e["t"], tensors, device),
                           unpack(e["x"], tensors, device), return_dict=False, **extra)
        caches: dict[int, BranchCache] = {}
        for f in skel["full"]:
            if f["step"] < k:
                cache = caches.setdefault(f["branch"], self._branch_cache())
                cache.update(f["step"], unpack(f["h"], tensors, device), unpack(f["x"], tensors, device))
        entry = steps[k]
        outs = []
        for b, call in enumerate(entry["calls"]):
            control = {"ilf_forecast": caches[b].forecasts(k)} if self.corrector else self._ilf_control(j, k)
            outs.append(primary_output(ddp_model(**unpack(call, tensors, device), **control)))
        y_rec, x_k = unpack(entry["y"], tensors, device), unpack(entry["x"], tensors, device)
        y = combine(outs, tuple(y_rec.shape), Combination.from_dict(entry["comb"])).to(y_rec.dtype)
        return sched.step(y, unpack(entry["t"], tensors, device), x_k, return_dict=False, **extra)[0]

    def _ilf_control(self, j: int, k: int) -> dict:
        """ILF on step k, with the t_post inference would give it (read off the pipeline's own schedule; with
        t_post "none" the call's own timestep, as the runtime takes it)."""
        if self.runtime.config.t_post == "none":
            return {"ilf_feedback": True}
        ts = timesteps(self._template(j))
        info = StepInfo(index=k, num_steps=len(ts), t=float(ts[k]), t_next=float(ts[k + 1]) if k + 1 < len(ts) else 0.0,
                        num_train_timesteps=int(self._template(j).config.get("num_train_timesteps", 1000)))
        return {"ilf_feedback": True, "ilf_t_post": self.runtime.model_t_post(info)}

    def _branch_cache(self) -> BranchCache:
        cfg = self.runtime.config
        return BranchCache(cfg.order, next(self.runtime.model.parameters()).dtype, cfg.uses_fresh_forecast)

    def _template(self, j: int):
        """Shard j's scheduler before its first step: the rollout's own, else captured from the pipeline (a resumed
        run, the teacher's first record)."""
        if j not in self.templates:
            self.templates[j] = capture_template(self.pipe, self._call(j, self.n), STOCK)
        return self.templates[j]

    def save(self, folder: Path) -> None:
        """With each checkpoint: the rollout it trains on. Older rollouts go now, not when a new one is recorded,
        so the newest checkpoint's rollout is on disk whenever a run is killed."""
        (Path(folder) / STATE_FILE).write_text(json.dumps({"rollout_step": self.rollout_step}))
        self.saved_rollout = self.rollout_step
        self._prune(keep={self.rollout_step})

    def finish(self) -> None:
        """After the last step: the rollouts go; the teacher's record stays for another run on the same prompts."""
        self._prune(keep=set())

    def _prune(self, keep: set) -> None:
        """Delete the rollouts not in `keep` (this rank's files only: ranks may share one folder)."""
        for folder in self.root.glob("rollout-*"):
            if int(folder.name.split("-")[1]) not in keep:
                for j in range(len(self.batches)):
                    self._rank_file(folder, j).unlink(missing_ok=True)
                if not any(folder.iterdir()):
                    shutil.rmtree(folder, ignore_errors=True)

    def restore(self, folder: Path) -> None:
        path = Path(folder) / STATE_FILE
        if not path.is_file():
            raise ILFError(f"{folder} has no {STATE_FILE}: it was not written by a pipeline-native corrector run; "
                           "resume it with the objective it was trained with, or start a new --output-dir")
        step = json.loads(path.read_text())["rollout_step"]
        folder = self.root / f"rollout-{step:08d}"
        if all(self._rank_file(folder, j).is_file() for j in range(len(self.batches))):
            self.rollout_dir, self.rollout_step = folder, step  # the rollout this checkpoint trained on
            self.saved_rollout = step


PipelineCorrectorObjective = PipelineObjective  # the name it had when only the corrector trained this way
