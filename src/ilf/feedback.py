"""The feedback block, its per-loop-block scales, and the adapter file that carries them.

An adapter file is a folder holding `ilf_feedback.safetensors` (only the feedback's tensors: `block.*` and
`scales`) and `ilf_config.json` (the backbone class and its structural fingerprint, the loop, the default
inference settings, and the weights' sha256). Loading checks all of it before anything is attached.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .version import __version__
from .adapters import BackboneAdapter, get_adapter
from .adapters.blocks import IMAGE_STREAM, cast_floats
from .config import ILFConfig
from .corrector_config import CorrectorConfig
from .errors import CorruptFeedbackError, FeedbackMismatchError, LoopRangeError
from .folders import CONFIG_NAME, WEIGHTS_NAME, check_feedback_folder
from .hub import base_model_of, resolve_feedback_folder
from .io import atomic_dir, sha256_file

FORMAT = "ilf-feedback"
FORMAT_VERSION = 1
DIGEST_ATOL = 5e-2  # digest tolerance: survives fp16/bf16 casts, not another checkpoint


class FeedbackModule(nn.Module):
    """F and the scales s_b … s_e of eq. 2–3.

    `block` is a new block of the class and settings of the loop's last block e; `scales` has one learnable
    scalar per loop block, zero-initialised so an untrained feedback adds nothing to the loop's input. (The
    output is the stock model's only with `t_post="none"`: any other t_post conditions everything after the
    feedback on it.)
    """

    def __init__(self, block: nn.Module, loop: tuple[int, int]):
        super().__init__()
        self.block = block
        self.loop = tuple(loop)
        self.scales = nn.Parameter(torch.zeros(loop[1] - loop[0] + 1))

    def forward(self, **block_call):
        """F called as block e is called: its streams ({"hidden_states": f_e [B, L, D], ...}) and t's
        conditioning by name; returns what the block returns. A feedback trained in fp32 beside a bf16/fp16
        backbone computes in its own dtype."""
        dtype = self.scales.dtype
        if block_call.get(IMAGE_STREAM) is not None and block_call[IMAGE_STREAM].dtype != dtype:
            like = block_call[IMAGE_STREAM].dtype
            return cast_floats(self.block(**cast_floats(block_call, dtype)), like)
        return self.block(**block_call)


class CorrectorModule(FeedbackModule):
    """The corrector mode's trained parts (`corrector.py`): F and its scale, as `FeedbackModule` with loop (e, e),
    plus `mix` [num_steps, 4]: per denoising step, learned weights added to the cache's Taylor forecast over the
    last full steps' features (h₁, h₁ − h₀, h₀ − h₋₁) and this step's innovation x_a − x̂_a, zero-initialised so
    an untrained corrector forecasts exactly as TaylorSeer does (the per-step linear weights of L2P, trained on
    the sampler's path)."""

    def __init__(self, block: nn.Module, loop: tuple[int, int], mix_shape: tuple[int, ...]):
        super().__init__(block, loop)
        self.mix = nn.Parameter(torch.zeros(mix_shape))  # [steps, 4] or [steps, 4, D]


def model_width(model: nn.Module) -> int:
    """D, the width of the blocks' image stream, as the model's adapter reads it off its config."""
    return get_adapter(model).width(model)


def build_feedback(model: nn.Module, config: ILFConfig, adapter: BackboneAdapter | None = None) -> FeedbackModule:
    """A new feedback for `model`, initialised as `config.init` says, on the model's device and dtype."""
    adapter = adapter or get_adapter(model)
    blocks = adapter.blocks(model)
    config.check_model(len(blocks))
    adapter.check_loop(model, config.loop)
    block = adapter.build_block(model, config.loop[1])
    if config.init == "copy":
        src = config.init_block if config.init_block is not None else config.loop[1]
        want = {k: v.shape for k, v in block.state_dict().items()}
        if {k: v.shape for k, v in blocks[src].state_dict().items()} != want:
            fits = [i for i, b in enumerate(blocks) if {k: v.shape for k, v in b.state_dict().items()} == want]
            raise LoopRangeError(
                f"init_block={src} is a {type(blocks[src]).__name__} whose weights do not fit the feedback, a new "
                f"{type(block).__name__} built like the loop's last block {config.loop[1]}; copy one of blocks "
                f"{fits}, or pass init='fresh'"
            )
        block.load_state_dict(blocks[src].state_dict())
    return _like_model(FeedbackModule(block, config.loop), model)


def _like_model(feedback: FeedbackModule, model: nn.Module) -> FeedbackModule:
    # Same device, dtype and train/eval mode as the backbone: a new block starts in training mode, where
    # DiT's label embedding would randomly drop class labels that the backbone's own blocks keep.
    ref = next(model.parameters())
    return feedback.to(device=ref.device, dtype=ref.dtype).train(model.training)


def feedback_metadata(
    model: nn.Module, feedback: FeedbackModule, config: ILFConfig, base_model: tuple[str | None, str | None] | None = None
) -> dict:
    """The adapter description. `base_model`: (name or path, revision) of the backbone's checkpoint, as peft
    records it; by default read from what diffusers recorded when the model was loaded."""
    adapter = get_adapter(model)
    name, revision = base_model if base_model is not None else base_model_of(model)
    return {
        "base_model_name_or_path": name,
        "revision": revision,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ilf_version": __version__,
        "backbone": {
            "fingerprint": adapter.fingerprint(model),
            "digest": adapter.digest(model),
            "sample_size": model.config.get("sample_size"),
        },
        **location(feedback, config),
        "mode": getattr(config, "mode", "ilf"),  # "ilf" (the paper's inner loop) or "corrector" (on a cache)
        "config": config.to_dict(),
    }


def location(feedback: FeedbackModule, config) -> dict:
    """Where the feedback sits, as the adapter file records it: an inner loop's `"loop": [b, e]`, a corrector's
    `"block": e` (the block whose forecast it corrects; it has no loop)."""
    if getattr(config, "mode", "ilf") == CorrectorConfig.mode:
        return {"block": feedback.loop[1]}
    return {"loop": list(feedback.loop)}


def feedback_loop(meta: dict) -> tuple[int, int]:
    """The (b, e) a saved feedback's module is built for: its loop, or (e, e) for a corrector at block e. Folders
    written before correctors recorded "block" stored it as "loop": [e, e]; both read the same."""
    if "block" in meta:
        return (int(meta["block"]), int(meta["block"]))
    return tuple(int(v) for v in meta["loop"])


def write_feedback(
    path: str | os.PathLike, model: nn.Module, feedback: FeedbackModule, config: ILFConfig, extra: dict | None = None,
    *, base_model: tuple[str | None, str | None] | None = None,
) -> Path:
    """Write the adapter folder atomically: only the feedback's tensors, plus the JSON description."""
    meta = feedback_metadata(model, feedback, config, base_model)
    if extra:
        meta["extra"] = extra
    tensors = {k: v.detach().contiguous().cpu() for k, v in feedback.state_dict().items()
               if getattr(config, "uses_feedback_block", True) or not k.startswith("block.")}  # only what runs
    with atomic_dir(path) as tmp:
        where = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v)
                 for k, v in location(feedback, config).items()}  # "loop": "b,e" or "block": "e"
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT, **where})
        meta["weights"] = {"file": WEIGHTS_NAME, "sha256": sha256_file(tmp / WEIGHTS_NAME)}
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_feedback_config(path: str | os.PathLike) -> dict:
    """Read and verify an adapter folder's ilf_config.json alone (no tensors loaded): its metadata, with "loop"
    (an inner loop) or "block" (a corrector; `feedback_loop` reads either) and "config" (the config it was saved
    with). Raises `FeedbackNotFoundError` for a missing folder,
    `CorruptFeedbackError` for anything else."""
    path = check_feedback_folder(path)
    cfg_file = path / CONFIG_NAME
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFeedbackError(f"{cfg_file} is corrupted ({err}); re-save or re-download the feedback") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CorruptFeedbackError(f"{cfg_file} is not an ilf feedback description (format != {FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CorruptFeedbackError(
            f"{path} uses feedback format {meta.get('format_version')}, newer than this ilf reads "
            f"({FORMAT_VERSION}); upgrade ilf"
        )
    corrector = meta.get("mode") == CorrectorConfig.mode
    if "loop" not in meta and not (corrector and "block" in meta):
        raise CorruptFeedbackError(f"{cfg_file} has no \"{'block' if corrector else 'loop'}\"; re-save the feedback "
                                   "with save_feedback")
    return meta


def read_feedback(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read and verify an adapter folder: (metadata, tensors). Raises `CorruptFeedbackError`."""
    meta = read_feedback_config(path)
    weights_file = Path(path) / WEIGHTS_NAME
    if not weights_file.is_file():
        raise CorruptFeedbackError(f"{weights_file} is missing; the feedback folder is incomplete")
    expected = meta.get("weights", {}).get("sha256")
    if expected and sha256_file(weights_file) != expected:
        raise CorruptFeedbackError(
            f"{weights_file} does not match the checksum in {CONFIG_NAME} (truncated or altered); "
            "re-save or re-download the feedback"
        )
    try:
        with safe_open(str(weights_file), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFeedbackError(f"{weights_file} is not a readable safetensors file ({err})") from None
    return meta, tensors


def check_compatible(model: nn.Module, meta: dict, tensors: dict[str, torch.Tensor], strict: bool = True,
                     extra_shapes: dict[str, torch.Size] | None = None, with_block: bool = True) -> None:
    """Refuse a feedback trained for another backbone or loop, before anything changes."""
    adapter = get_adapter(model)
    want = meta.get("backbone", {}).get("fingerprint", {})
    have = adapter.fingerprint(model)
    diffs = {k: (want.get(k), have.get(k)) for k in set(want) | set(have) if want.get(k) != have.get(k)}
    if diffs:
        detail = ", ".join(f"{k}: feedback {a!r} vs model {b!r}" for k, (a, b) in sorted(diffs.items()))
        raise FeedbackMismatchError(
            f"this feedback was trained for another backbone ({detail}); load it onto the backbone it was "
            f"trained for, or train a feedback for this one with `ilf train`"
        )
    loop = feedback_loop(meta)
    ILFConfig(loop=loop).check_model(len(adapter.blocks(model)))
    adapter.check_loop(model, loop)
    if strict:
        want_d, have_d = meta.get("backbone", {}).get("digest"), adapter.digest(model)
        if want_d and any(abs(a - b) > DIGEST_ATOL for a, b in zip(want_d, have_d)):
            raise FeedbackMismatchError(
                "the backbone's weights differ from those the feedback was trained on (same architecture, "
                "another checkpoint); load it onto its own checkpoint, or pass strict=False to use it anyway"
            )
    expected = {f"block.{k}": v.shape for k, v in adapter.build_block(model, loop[1]).state_dict().items()
                if with_block}  # a corrector whose F never runs is saved without it
    expected["scales"] = torch.Size([loop[1] - loop[0] + 1])
    expected |= extra_shapes or {}
    got = {k: v.shape for k, v in tensors.items()}
    if got != expected:
        missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise FeedbackMismatchError(
            f"feedback tensors do not fit this backbone's block (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shape {wrong[:5]}); the file belongs to another architecture"
        )


def load_feedback(
    path: str | os.PathLike, model: nn.Module, strict: bool = True, *, revision: str | None = None,
    cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
) -> tuple[FeedbackModule, ILFConfig | CorrectorConfig]:
    """Build the feedback stored at `path` for `model` (not attached). Raises before touching `model`.

    Returns the module and the config it was saved with: an `ILFConfig` (the paper's inner loop) or a
    `CorrectorConfig` (a corrector of a training-free cache, whose F sits at block e: loop (e, e)).

    `path`: a feedback folder, or a Hub repo id (`"org/name"`, fetched through huggingface_hub with
    `revision`, `cache_dir` and `token`; `HF_HUB_OFFLINE=1` reads only the local cache). A local folder wins.
    """
    path = resolve_feedback_folder(path, [CONFIG_NAME, WEIGHTS_NAME], revision=revision, cache_dir=cache_dir,
                                   token=token)
    meta, tensors = read_feedback(path)
    adapter = get_adapter(model)
    if meta.get("mode", "ilf") == CorrectorConfig.mode:
        config = CorrectorConfig.from_dict(meta.get("config", {}))
        loop, shape = feedback_loop(meta), config.mix_shape(model_width(model))
        if not config.uses_feedback_block:  # F never runs: its weights, if a file has them, are not needed
            tensors = {k: v for k, v in tensors.items() if not k.startswith("block.")}
        check_compatible(model, meta, tensors, strict=strict, extra_shapes={"mix": torch.Size(shape)},
                         with_block=config.uses_feedback_block)
        feedback = CorrectorModule(adapter.build_block(model, loop[1]), loop, shape)
    else:
        check_compatible(model, meta, tensors, strict=strict)
        config = ILFConfig.from_dict(meta.get("config", {"loop": meta["loop"]}))
        feedback = FeedbackModule(adapter.build_block(model, config.loop[1]), config.loop)
    # strict: the key set was checked above; a corrector saved without F (it never runs) keeps a new block
    feedback.load_state_dict(tensors, strict=getattr(config, "uses_feedback_block", True))
    return _like_model(feedback, model), config
