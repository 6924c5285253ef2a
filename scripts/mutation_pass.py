"""A small mutation pass over the core: plant one bug at a time, run the core tests, count the bugs caught.

    python scripts/mutation_pass.py --out docs/mutation-pass.json      # ~15-30 min on one CPU thread

Each mutant is one exact text replacement in one core file (ILF's loop, schedule, clock, the paper cache, the corrector,
feedback, the time hooks, the adapters' unit conversion, what is attached). The file is restored after every run, also on
Ctrl-C. A mutant is *caught* when the core tests fail with it; `-x` stops each run at the first failure, so caught mutants cost little.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "ilf"
CORE_TESTS = [
    "tests/test_adapter_pixart.py", "tests/test_adapter_dit.py", "tests/test_adapter_sd3.py",
    "tests/test_adapter_flux.py", "tests/test_adapter_sana.py", "tests/test_pipelines_e2e.py",
    "tests/test_pipelines_mmdit_e2e.py", "tests/test_schedule.py", "tests/test_counts.py",
    "tests/test_feedback_file.py", "tests/test_no_loop_control.py", "tests/test_schedulers.py",
    "tests/test_wrappers.py", "tests/test_corrector.py", "tests/test_corrector_reference.py",
]

# (file, what the bug does, exact text, replacement)
MUTANTS = [
    ("runtime/ilf_loop.py", "feedback subtracted in the loop",
     "h[k] = x + fb.scales[j].to(x.dtype) * feed.to(x.dtype)", "h[k] = x - fb.scales[j].to(x.dtype) * feed.to(x.dtype)"),
    ("runtime/ilf_loop.py", "loop input saved at block e instead of b",
     "        if hook.first:\n            self.loop_input = streams", "        if hook.last:\n            self.loop_input = streams"),
    ("runtime/ilf_loop.py", "block e+1 keeps t's conditioning", "site.index == e, site.index > e", "site.index == e, site.index > e + 1"),
    ("runtime/ilf_loop.py", "feedback plan inverted", "on = step.index in self.feedback_plan(step.num_steps)",
     "on = step.index not in self.feedback_plan(step.num_steps)"),
    ("runtime/ilf_loop.py", "no-loop control uses the last scale", "f_e + fb.scales[0].to(f_e.dtype)", "f_e + fb.scales[-1].to(f_e.dtype)"),
    ("adapters/base.py", "model units converted the wrong way", "torch.as_tensor(t).double() / u",
     "torch.as_tensor(t).double() * u"),
    ("adapters/base.py", "post-feedback timestep left in scheduler units", "return t if u == 1.0 else t * u", "return t"),
    ("runtime/attached.py", "the paper cache looked up under the runtime's name", "return getattr(model, CACHE_ATTR, None)",
     "return getattr(model, RUNTIME_ATTR, None)"),
    ("runtime/ilf_loop.py", "F always gets block e's input streams",
     "fb_in = {k: (v if v is not None else call_e[k]) for k, v in streams_e.items()}",
     "fb_in = {k: call_e[k] for k in streams_e}"),
    ("schedule.py", "rescale ignores k", "    elif strategy == \"rescale\" or (strategy == \"anneal\" and first_step):\n        shift = gap * k",
     "    elif strategy == \"rescale\" or (strategy == \"anneal\" and first_step):\n        shift = gap"),
    ("schedule.py", "outer plan one step too many", "on = set(range(k)) | set(range(n - k, n))",
     "on = set(range(k)) | set(range(n - k - 1, n))"),
    ("schedule.py", "t_post not clamped at 0", "return torch.clamp(t - shift, min=0.0)", "return t - shift"),
    ("schedule.py", "feedback steps cost m instead of m + 1", "total += len(feedback_steps(feedback_plan, num_steps)) * (m + 1)",
     "total += len(feedback_steps(feedback_plan, num_steps)) * m"),
    ("runtime/clock.py", "last step's next timestep is the last timestep",
     "t_next = ts[lay.first_call[step + 1]] if step + 1 < num_steps else 0.0",
     "t_next = ts[lay.first_call[step + 1]] if step + 1 < num_steps else ts[-1]"),
    ("runtime/clock.py", "second-order calls mapped off by one", "return [i // 2 for i in range(num_calls)]",
     "return [(i + 1) // 2 for i in range(num_calls)]"),
    ("runtime/clock.py", "mixed timesteps accepted", "if any(v != values[0] for v in values[1:]):", "if False:"),
    ("runtime/paper_cache.py", "cache refresh plan inverted",
     "self.refresh = self.step.index in cache_refresh_steps", "self.refresh = self.step.index not in cache_refresh_steps"),
    ("runtime/paper_cache.py", "cache stores outputs, not residuals", "(v - x[k]).detach()", "v.detach()"),
    ("feedback.py", "scales start non-zero", "self.scales = nn.Parameter(torch.zeros(loop[1] - loop[0] + 1))",
     "self.scales = nn.Parameter(torch.full((loop[1] - loop[0] + 1,), 1e-3))"),
    ("feedback.py", "digest check disabled", "if want_d and any(abs(a - b) > DIGEST_ATOL", "if False and any(abs(a - b) > DIGEST_ATOL"),
    ("feedback.py", "copy init from block 0", "src = config.init_block if config.init_block is not None else config.loop[1]",
     "src = config.init_block if config.init_block is not None else 0"),
    ("adapters/time_hooks.py", "output norm keeps t's temb", "return self.binder.replace(args, kwargs, name, loop.post_block_kwargs[\"temb\"])",
     "return args, kwargs"),
    ("adapters/time_hooks.py", "adaLN-single output keeps t's embedding", "return cond, embedded_post", "return cond, embedded"),
    # the corrector (tests/test_corrector*.py)
    ("runtime/corrector.py", "learned forecast drops the first difference", "+ w[1] * fc[f\"b1.{stream}\"]", "+ 0 * fc[f\"b1.{stream}\"]"),
    ("runtime/corrector.py", "forecast steps run the cache's full step", "full = step in self.compute or", "full = True or"),
    ("runtime/corrector.py", "F's correction added without its scale", "base[img] + self.feedback.scales[0].to(z.dtype) * (fed",
     "base[img] + (fed"),
]


def run_tests() -> tuple[bool, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *CORE_TESTS],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    return proc.returncode != 0, time.time() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "mutation-pass.json", help="results file (JSON)")
    p.add_argument("--only", type=int, nargs="*", help="run only these mutant numbers (0-based)")
    args = p.parse_args()
    results = []
    for i, (name, what, old, new) in enumerate(MUTANTS):
        if args.only and i not in args.only:
            continue
        path = SRC / name
        original = path.read_text()
        if original.count(old) != 1:
            raise SystemExit(f"mutant {i} ({what}): the text to replace occurs {original.count(old)} times in {name}")
        try:
            path.write_text(original.replace(old, new))
            caught, seconds = run_tests()
        finally:
            path.write_text(original)
        results.append({"mutant": i, "file": name, "bug": what, "caught": caught, "seconds": round(seconds, 1)})
        print(f"[{i:2d}] {'caught' if caught else 'MISSED'}  {name}: {what} ({seconds:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"caught": sum(r["caught"] for r in results), "total": len(results),
                                        "mutants": results}, indent=2) + "\n")
    print(f"caught {sum(r['caught'] for r in results)} of {len(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
