"""`ilf train` as a real command: two DDP processes over gloo, and a SIGKILL mid-run then --resume."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ilf.train import checkpoint as ckpt


TRAJECTORY = ["--distill", "trajectory", "--student-steps", "4", "--feedback-steps", "last:2", "--loop", "2", "4",
              "--rollout-every", "3", "--inference-t-post", "none"]
CORRECTOR = ["--distill", "corrector", "--student-steps", "6", "--cache-interval", "2", "--cache-warmup", "2",
             "--fresh-blocks", "1", "--correct-steps", "all", "--rollout-every", "3"]
OBJECTIVES = {"fad": ["--distill", "fad"], "trajectory": TRAJECTORY, "corrector": CORRECTOR}


def _args(tiny_world, out, steps, every, objective="fad"):
    # the corrector and trajectory record the pipeline's own sampling of prompts; FAD reads data
    data = ["--prompts", str(tiny_world / "prompts.txt")] if objective in ("corrector", "trajectory") else \
        ["--data", str(tiny_world / "captions"), "--loop", "2", "4"]
    return OBJECTIVES[objective] + ["--pipeline", str(tiny_world / "pixart-alpha"), *data,
            "--lr", "1e-3", "--batch-size", "4", "--max-steps", str(steps), "--checkpoint-every", str(every),
            "--max-sequence-length", "16", "--output-dir", str(out), "--no-progress"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}


@pytest.mark.parametrize("objective", ["fad", "trajectory", "corrector"])
def test_two_processes_end_with_identical_feedback(tiny_world, tmp_path, objective):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "ilf", "train", *_args(tiny_world, out, 4, 0, objective), "--dump-rank-weights"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(out / "rank0_feedback.safetensors"))
    r1 = load_file(str(out / "rank1_feedback.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert r0["scales"].abs().sum() > 0  # they trained, and stayed in sync
    final = load_file(str(out / "feedback" / "ilf_feedback.safetensors"))
    assert all(torch.equal(final[k], r0[k]) for k in final)


@pytest.mark.parametrize("objective", ["fad", "trajectory", "corrector"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_world, tmp_path, objective):
    steps, every = 24, 4
    ref_out = tmp_path / "full"
    full = subprocess.run([sys.executable, "-m", "ilf", "train", *_args(tiny_world, ref_out, steps, every, objective)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ilf", "train", *_args(tiny_world, out, steps, every, objective)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not any(s >= 8 for s, _ in ckpt.list_checkpoints(out)):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [s for s, _ in ckpt.list_checkpoints(out)]
    assert done and max(done) < steps and not (out / "feedback").exists()
    resumed = subprocess.run([sys.executable, "-m", "ilf", "train", *_args(tiny_world, out, steps, every, objective),
                              "--resume", "latest"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(str(ref_out / "feedback" / "ilf_feedback.safetensors"))
    b = load_file(str(out / "feedback" / "ilf_feedback.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("objective", ["fad", "trajectory", "corrector"])
def test_bf16_backbone_with_autocast_and_gradient_checkpointing(tiny_world, tmp_path, objective):
    out = tmp_path / "bf16"
    # the corrector trains only F (the backbone runs without gradients): nothing to checkpoint
    checkpointing = [] if objective == "corrector" else ["--gradient-checkpointing"]
    proc = subprocess.run([sys.executable, "-m", "ilf", "train", *_args(tiny_world, out, 3, 0, objective),
                           "--mixed-precision",
                           "bf16", "--backbone-dtype", "bf16", *checkpointing],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = load_file(str(out / "feedback" / "ilf_feedback.safetensors"))
    assert weights["scales"].dtype == torch.float32  # the feedback trains (and is saved) in fp32
    assert all(torch.isfinite(v).all() for v in weights.values()) and weights["scales"].abs().sum() > 0


def test_copies_without_a_process_group_stop_with_the_fix(tiny_world, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a machine without GPUs and without ACCELERATE_USE_CPU=1
    starts two processes that join no process group: each used to train alone, both writing one train_log.jsonl
    and each saying "feedback saved". Now each stops before reading or writing anything, naming the fix."""
    out = tmp_path / "copies"
    env = {k: v for k, v in _env().items() if k != "ACCELERATE_USE_CPU"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "ilf", "train", *_args(tiny_world, out, 2, 0)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2" in proc.stderr
    assert "feedback saved" not in proc.stdout
    assert not out.exists()


def test_the_process_group_check_reads_the_launchers_world_size(monkeypatch):
    from ilf.errors import ILFError
    from ilf.train.trainer import check_process_group

    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ILFError, match="WORLD_SIZE=4.*ACCELERATE_USE_CPU=1"):
        check_process_group(1)
    check_process_group(4)  # a real group of 4: fine
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_process_group(1)  # one process: fine
    monkeypatch.delenv("WORLD_SIZE")
    check_process_group(1)
