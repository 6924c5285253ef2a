"""The `ilf` command: one function per subcommand; the larger ones live beside the code they drive."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_inspect(args) -> int:
    """Print and verify a feedback folder (checksum, readable tensors, config)."""
    from .folders import check_feedback_folder

    check_feedback_folder(args.path)  # a wrong path is said before torch is imported (seconds under load)
    from .feedback import feedback_loop, read_feedback

    meta, tensors = read_feedback(args.path)
    n_params = sum(t.numel() for t in tensors.values())
    fp = meta["backbone"]["fingerprint"]
    where = f"loop {feedback_loop(meta)}" if meta.get("mode", "ilf") == "ilf" else \
        f"{meta['mode']} at block {feedback_loop(meta)[1]}"
    print(f"feedback for {fp['class']} ({fp['num_blocks']} blocks), {where}")
    print(f"  {len(tensors)} tensors, {n_params:,} parameters, checksum ok")
    print(f"  scales: {[round(float(v), 4) for v in tensors['scales'].flatten()]}")
    print(f"  default schedule: {json.dumps(meta['config'])}")
    return 0


# Modules that contribute subcommands: each defines `register(subparsers)`, adding parsers whose
# `func(args) -> int` runs the command. Heavy imports stay inside the command functions.
COMMAND_MODULES = ["ilf.train.cli", "ilf.generate", "ilf.bench.cli", "ilf.demo"]


def build_parser() -> argparse.ArgumentParser:
    import importlib

    p = argparse.ArgumentParser(
        prog="ilf",
        description="Faster sampling for diffusion transformers in diffusers: train a corrector of diffusers' "
        "TaylorSeer cache (the shipped, measured-best mode and `ilf train`'s default objective, `--distill "
        "corrector`: docs/corrector.md) or the paper's Inner Loop Feedback (`ilf train --distill trajectory`), "
        "generate with it, and measure it against plain fewer steps and caches. "
        "`ilf demo` runs the whole job offline on an embedded world (~90 s on one CPU thread).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    s = sub.add_parser("inspect", help="print and verify a saved feedback folder",
                       description=cmd_inspect.__doc__)
    s.add_argument("path", help="a feedback folder (ilf_config.json + ilf_feedback.safetensors)")
    s.set_defaults(func=cmd_inspect)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv=None) -> int:
    from .errors import ILFError
    from .quiet import silence_torchvision_advice

    silence_torchvision_advice()  # ilf never installs torchvision; transformers' advice to would mislead

    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ILFError as err:
        print(f"ilf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
