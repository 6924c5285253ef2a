"""The benchmark: every method on the same pipeline and the same items (prompts/classes and seeds).

Phases, in order:

1. **generate** — per method: prepare (load a feedback, calibrate MagCache), attach, generate every item
   into `images/<method>/` (sharded across processes under `accelerate launch`) while counting block forwards
   per pipeline call and the peak memory, read the method's own counters, detach, and check the pipeline is
   stock again (`stock.check_stock`);
2. **time** — on the main process: `warmup` untimed calls per method, then `repeats` rounds in which every
   method generates the same `time_batch` items once (rounds interleave the methods, so a drift of the
   machine affects all rows alike); seconds per image = the median of (call seconds / time_batch);
3. **score** — every metric of the `Scorer` per method; fidelity against the first (reference) method;
4. **report** — results.json, table.md (Table 1's shape), pareto.png, grid.png, and with `diagnostics`
   the feature-dynamics heatmaps of Fig. 3-4.
"""

from __future__ import annotations

import datetime
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ilf.runtime.counting import count_block_forwards
from ilf.portable import portable_argv
from ilf.version import __version__
from ilf.eval.generate import generate, get_state
from ilf.eval.prompts import Item
from ilf.eval.score import METRICS, Scorer, to_jsonable
from ilf.eval.sources import Source

from .errors import BenchError, MethodRefused
from .family import TWO_CALLS, MethodContext, Prepared
from .grammar import UNTRAINED, MethodSpec
from .methods import get_family
from .stock import check_stock, fingerprint
from .timing import PeakMemory, median, time_call


@dataclass
class BenchOptions:
    out_dir: Path
    batch_size: int = 4
    repeats: int = 3
    warmup: int = 1
    time_batch: int = 1
    feedback: str | None = None  # default feedback for ilf rows without feedback=
    grid_items: int = 4
    crop: str = "auto"
    diagnostics: bool = False
    pareto_metric: str | None = None
    progress: bool = True
    resume: bool = False  # keep images already generated (same items, same method folder)
    npz: bool = False  # also pack each method's images as an ADM-style .npz (arr_0: [N, H, W, 3] uint8)
    report_metrics: list[str] | None = None  # keep only these metric keys in the results (None: all)
    command: list[str] = field(default_factory=lambda: list(sys.argv))


@dataclass
class Row:
    """One method's measurements."""

    spec: MethodSpec
    prepared: Prepared | None = None
    folder: Path | None = None
    predicted_block_forwards: int | None = None
    batch_size: int | None = None  # images per pipeline call (the family may cap it: `max_batch`)
    block_forwards_per_call: list[int] = field(default_factory=list)
    peak_memory: dict = field(default_factory=dict)
    peer_stats: dict = field(default_factory=dict)
    times: list[float] = field(default_factory=list)  # seconds per image of each timed call, in round order
    metrics: dict = field(default_factory=dict)

    @property
    def block_forwards(self) -> float | None:
        """Mean block forwards per pipeline call (= per image at batch size 1)."""
        calls = self.block_forwards_per_call
        return sum(calls) / len(calls) if calls else None

    @property
    def seconds_per_image(self) -> float | None:
        return median(self.times) if self.times else None


def select_methods(
    specs: list[MethodSpec], num_blocks: int, feedback: str | None
) -> tuple[list[MethodSpec], list[dict]]:
    """The runnable methods, and the skipped ones with the reason (an optional package missing, or an ILF row
    with no feedback to run)."""
    keep, skipped = [], []
    for spec in specs:
        fam = get_family(spec.family)
        reason = fam.unavailable()
        if reason is None and spec.family == "ilf" and spec.get("feedback") is None and feedback is None:
            reason = "no feedback: pass --feedback PATH (a folder from `ilf train`), or --feedback untrained"
        if reason:
            skipped.append({"method": spec.name, "reason": reason})
        else:
            keep.append(spec)
    if not keep:
        raise BenchError("every method was skipped: " + "; ".join(f"{s['method']}: {s['reason']}" for s in skipped))
    return keep, skipped


def capped_batch(spec: MethodSpec, batch_size: int) -> int:
    """`batch_size`, or fewer where the method's family takes its decisions over a whole batch (`max_batch`)."""
    cap = get_family(spec.family).max_batch(spec)
    return batch_size if cap is None else max(1, min(batch_size, cap))


def _log(msg: str, state) -> None:
    if state.is_main_process:
        print(msg, file=sys.stderr, flush=True)


class Bench:
    """One benchmark run over `source` and `items`; `run()` does every phase and writes the outputs."""

    def __init__(self, source: Source, items: list[Item], specs: list[MethodSpec],
                 scorer: Scorer | Callable[[], Scorer], options: BenchOptions, state=None):
        """`scorer` may be a factory: it is then called on the main process only, after generation (so metric
        networks and reference statistics are loaded once, not by every process while the others wait)."""
        self.source, self.items, self.scorer, self.options = source, items, scorer, options
        self.state = state or get_state()
        specs, self.skipped = select_methods(specs, source.num_blocks, options.feedback)
        for s in self.skipped:
            _log(f"ilf bench: skipping {s['method']}: {s['reason']}", self.state)
        self.rows = [Row(spec) for spec in specs]
        unknown = set(options.report_metrics or ()) - set(METRICS)
        if unknown:
            raise BenchError(f"--report-metrics: unknown keys {sorted(unknown)}; keys: {', '.join(METRICS)}")
        self.out = Path(options.out_dir)
        self.stock: dict | None = None

    # ---- generation ----
    def _context(self) -> MethodContext:
        first = self.items[:1]
        return MethodContext(self.source.pipe, self.source.num_blocks, run_once=lambda steps: self.source(first, steps),
                             feedback=self.options.feedback, cfg_batch=self.source.cfg_batch)

    def take_stock(self) -> None:
        """Warm the stock pipeline up once, then fingerprint it (lazily created state is part of 'stock')."""
        self.source(self.items[:1], 2)
        self.stock = fingerprint(self.source.pipe)

    def generate_row(self, row: Row) -> None:
        """Prepare, attach, generate every item into `row.folder` (default images/<slug>/) counting block forwards
        and peak memory, detach and check the pipeline is stock again. Needs `take_stock()` first."""
        fam = get_family(row.spec.family)
        predicted = fam.predicted_block_forwards(row.spec, self.source.num_blocks, self.options.feedback)
        try:
            row.prepared = fam.prepare(row.spec, self._context())
        finally:
            check_stock(self.source.pipe, self.stock, row.spec.name)  # preparation (calibration) left nothing behind
        predicted = row.prepared.info.get("predicted_block_forwards", predicted)  # a family that knows the model
        # Flux's true CFG calls the transformer twice per step, each call with the step's blocks
        per_step = 2 if self.source.cfg_batch == TWO_CALLS else 1
        row.predicted_block_forwards = None if predicted is None else predicted * per_step
        row.folder = row.folder or self.out / "images" / row.spec.slug  # `ilf eval` sets its own
        batch_size = row.batch_size = capped_batch(row.spec, self.options.batch_size)
        peak = PeakMemory(self.source.device)
        calls: list[int] = []
        peak.reset()
        attachment = row.prepared.attach(self.source.pipe)
        try:
            with count_block_forwards(self.source.pipe) as counter:
                seen = [0]

                def after_call(batch):
                    calls.append(counter.total - seen[0])
                    seen[0] = counter.total

                generate(self.source, self.items, row.spec.steps, row.folder, batch_size=batch_size,
                         progress=self.options.progress, desc=row.spec.display, before_call=attachment.before_call,
                         after_call=after_call, state=self.state, skip_existing=self.options.resume)
                if not calls:  # --resume with every image present: count one call so the row has its cost
                    attachment.before_call()
                    self.source(self.items[:batch_size], row.spec.steps)
                    after_call(None)
            row.peer_stats = attachment.stats()
        finally:
            attachment.detach()
        row.peak_memory = peak.read()
        check_stock(self.source.pipe, self.stock, row.spec.name)
        from accelerate.utils import gather_object

        row.block_forwards_per_call = [int(c) for c in gather_object(calls)] if self.state.num_processes > 1 else calls

    # ---- timing ----
    def time_rows(self) -> None:
        opts, device = self.options, self.source.device

        def one_call(row: Row) -> float:
            batch = self.items[: capped_batch(row.spec, opts.time_batch)]  # as it generated: its decisions per image
            att = row.prepared.attach(self.source.pipe)
            try:
                att.before_call()
                return time_call(lambda: self.source(batch, row.spec.steps), device) / len(batch)
            finally:
                att.detach()
                check_stock(self.source.pipe, self.stock, row.spec.name)

        from tqdm.auto import tqdm

        total = len(self.rows) * (opts.warmup + opts.repeats)
        with tqdm(total=total, desc="timing", unit="call", disable=not opts.progress, leave=False) as bar:
            for row in self.rows:
                for _ in range(opts.warmup):
                    one_call(row)
                    bar.update()
            for _ in range(opts.repeats):
                for row in self.rows:
                    row.times.append(one_call(row))
                    bar.update()

    # ---- scoring ----
    def score_rows(self) -> None:
        from tqdm.auto import tqdm

        if not isinstance(self.scorer, Scorer):
            self.scorer = self.scorer()
        ref = self.rows[0].folder
        keep = self.options.report_metrics
        for row in tqdm(self.rows, desc="scoring", unit="method", disable=not self.options.progress, leave=False):
            metrics = self.scorer.score(row.folder, self.items, reference=ref if row is not self.rows[0] else None)
            row.metrics = {k: v for k, v in metrics.items() if keep is None or k in keep}

    # ---- everything ----
    def run(self) -> dict | None:
        """Every phase; returns the results dict on the main process (None on the others)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.take_stock()
        rows = list(self.rows)
        for i, row in enumerate(rows):
            _log(f"ilf bench: [{i + 1}/{len(rows)}] {row.spec.name}", self.state)
            try:
                self.generate_row(row)
            except MethodRefused as err:  # this pipeline cannot run the method: a skipped row with the reason
                _log(f"ilf bench: skipping {row.spec.name}: {err}", self.state)
                self.skipped.append({"method": row.spec.name, "reason": str(err)})
                self.rows.remove(row)
        if not self.rows:
            raise BenchError("every method was refused: "
                             + "; ".join(f"{s['method']}: {s['reason']}" for s in self.skipped))
        if not self.state.is_main_process:
            return None
        if self.options.repeats > 0:
            self.time_rows()
        self.score_rows()
        results = self.results()
        from .report import write_outputs

        write_outputs(self, results)
        return results

    def results(self) -> dict:
        ref = self.rows[0]
        rows = []
        for row in self.rows:
            sec, ref_sec = row.seconds_per_image, ref.seconds_per_image
            rows.append({
                "method": row.spec.to_dict(), "display": row.spec.display, "family": row.spec.family,
                "steps": row.spec.steps, "reference": row is ref,
                "predicted_block_forwards": row.predicted_block_forwards, "block_forwards": row.block_forwards,
                "block_forwards_per_call": row.block_forwards_per_call, "batch_size": row.batch_size,
                "block_speedup": ref.block_forwards / row.block_forwards if row.block_forwards else None,
                "seconds_per_image": sec, "times": row.times,
                "speedup": ref_sec / sec if sec and ref_sec else None,
                "peak_memory": row.peak_memory, "peer_stats": row.peer_stats,
                "info": row.prepared.info if row.prepared else {},
                "images": str(row.folder.relative_to(self.out)) if row.folder else None,
                "metrics": row.metrics,
            })
        opts = self.options
        return to_jsonable({
            "ilf_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": portable_argv(opts.command, self.out),
            "source": self.source.describe(),
            "settings": {
                "num_images": len(self.items), "batch_size": opts.batch_size, "repeats": opts.repeats,
                "warmup": opts.warmup, "time_batch": opts.time_batch, "num_processes": self.state.num_processes,
                "seeds": "item i uses torch.Generator('cpu').manual_seed(items[i].seed)",
                "block_forwards": "per pipeline call of batch_size images (CFG branches batched in one call; Flux's "
                                  "true CFG: both of a step's transformer calls)",
                "torch": torch.__version__, "diffusers": _version("diffusers"), "feedback": opts.feedback,
                "untrained_feedback": any(r.spec.get("feedback", opts.feedback) == UNTRAINED
                                          for r in self.rows if r.spec.family == "ilf"),
            },
            "items": [it.to_dict() for it in self.items],
            "reference": ref.spec.name,
            "metrics": [k for k in METRICS if any(k in r.metrics for r in self.rows)],
            "rows": rows,
            "skipped": self.skipped,
        })


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())

