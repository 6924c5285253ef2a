"""Score images with ImageReward (THUDM) inside ImageReward's own Python environment.

Standalone on purpose: it imports only the standard library, torch and `ImageReward` (the
`image-reward` package, which needs transformers <= 4.55 and so cannot live beside ilf). ilf runs
it as `PYTHON imagereward_worker.py --manifest IN.json --output OUT.json`, where PYTHON is the
interpreter of a venv holding `pip install image-reward`.

IN.json:  {"model": "ImageReward-v1.0" or a checkpoint path, "download_root": str|null,
           "device": str|null, "items": [{"id": str, "prompt": str, "images": [path, ...]}, ...]}
OUT.json: {"model": ..., "device": ..., "results": [{"id": str, "rewards": [float, ...]}, ...]}

Exit codes: 0 ok, 2 bad arguments/manifest, 3 ImageReward not importable, 4 weights not loadable.
Progress and errors go to stderr.
"""

import argparse
import json
import sys

INSTALL_HINT = (
    "install ImageReward in a separate venv (it needs transformers<=4.55): "
    "python -m venv imagereward-venv && imagereward-venv/bin/pip install image-reward"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    try:
        with open(args.manifest, encoding="utf-8") as f:
            manifest = json.load(f)
        items = manifest["items"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"imagereward_worker: unreadable manifest {args.manifest}: {exc}", file=sys.stderr)
        return 2

    try:
        import ImageReward as RM
        import torch
    except ImportError as exc:
        print(
            f"imagereward_worker: ImageReward is not importable by {sys.executable} ({exc}); {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 3

    name = manifest.get("model") or "ImageReward-v1.0"
    device = manifest.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = RM.load(name, device=device, download_root=manifest.get("download_root"))
    except Exception as exc:  # noqa: BLE001 - every load failure gets the same hint
        print(
            f"imagereward_worker: cannot load ImageReward model {name!r} ({type(exc).__name__}: {exc}); it needs "
            "ImageReward.pt and med_config.json from https://huggingface.co/THUDM/ImageReward in download_root "
            "(default ~/.cache/ImageReward), or network access to fetch them",
            file=sys.stderr,
        )
        return 4

    results = []
    with torch.no_grad():
        for i, item in enumerate(items):
            rewards = model.score(item["prompt"], list(item["images"]))
            if not isinstance(rewards, list):  # one image: ImageReward squeezes the result to a float
                rewards = [rewards]
            results.append({"id": item["id"], "rewards": [float(r) for r in rewards]})
            print(f"imagereward_worker: [{i + 1}/{len(items)}] {item['id']}", file=sys.stderr, flush=True)

    with open(args.output, "w", encoding="utf-8") as f:
        json.dump({"model": name, "device": str(device), "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
