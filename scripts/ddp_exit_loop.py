"""Run the two-process `ilf train` of tests/train/test_train_processes.py again and again; count runs that never exit.

    python scripts/ddp_exit_loop.py --runs 70 --objective trajectory     # ~8 s a run on 2 CPU cores

Why: a rare deadlock at the end of gloo runs (torch joins gloo's worker threads in the process group's destructor
with the GIL held, while a worker waits for the GIL to free a finished collective's tensors). `ilf train` ends
with a barrier and a GIL-free pause (`trainer.end_processes`); before it, 2 of 37 runs hung, after it 0 of 70.
A run still alive after --timeout seconds is dumped with gdb (every thread's native stack, when gdb is installed)
and killed; its stderr and the stacks are written to --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "train"))


def make_world(root: Path) -> None:
    """The tests' tiny world: a 6-block PixArt pipeline and 16 captioned images (tests/train/conftest.py)."""
    import numpy as np
    from PIL import Image

    from ilf.tiny import tiny_pipeline

    tiny_pipeline("pixart-alpha", num_layers=6).save_pretrained(root / "pixart-alpha")
    rng, cap = np.random.default_rng(0), root / "captions"
    cap.mkdir()
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).resize((16, 16)).save(cap / f"img{i:02d}.png")
        (cap / f"img{i:02d}.txt").write_text(f"a picture {i % 4}")


def dump_and_kill(proc: subprocess.Popen, out: Path, run: int) -> None:
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in workers:
        if shutil.which("gdb"):
            stacks = subprocess.run(["gdb", "-p", pid, "-batch", "-ex", "thread apply all bt 30"],
                                    capture_output=True, text=True).stdout
            (out / f"run{run}_pid{pid}_gdb.txt").write_text(stacks)
        os.kill(int(pid), signal.SIGABRT)  # PYTHONFAULTHANDLER=1: the Python stacks go to stderr
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGKILL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=40, help="how many two-process runs (default: 40)")
    p.add_argument("--objective", default="trajectory", choices=("fad", "trajectory", "corrector"),
                   help="the --distill objective, as the test's parameter (default: trajectory)")
    p.add_argument("--timeout", type=float, default=120, help="seconds before a run counts as hung (default: 120)")
    p.add_argument("--out", type=Path, default=Path("runs/ddp-exit-loop"), help="where hung runs' stacks go")
    args = p.parse_args()
    import test_train_processes as t  # the test's own command line and environment

    args.out.mkdir(parents=True, exist_ok=True)
    world = Path(tempfile.mkdtemp(prefix="ilf-ddp-world-"))
    make_world(world)
    env, hung = {**t._env(), "PYTHONFAULTHANDLER": "1"}, 0
    for run in range(args.runs):
        dest = world / f"out{run}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ilf", "train",
               *t._args(world, dest, 4, 0, args.objective), "--dump-rank-weights"]
        start = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            _, err = proc.communicate(timeout=args.timeout)
            print(f"run {run}: exit {proc.returncode} in {time.time() - start:.1f} s", flush=True)
        except subprocess.TimeoutExpired:
            hung += 1
            dump_and_kill(proc, args.out, run)
            (args.out / f"run{run}_stderr.txt").write_text(proc.communicate()[1])
            print(f"run {run}: HUNG (stacks in {args.out})", flush=True)
        shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(world, ignore_errors=True)
    print(f"{hung} of {args.runs} runs hung")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
