"""Where the shipped assets live (package data under `ilf/worlds/assets/`)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
VAE = ASSETS / "vae"  # AutoencoderKL shared by all worlds (save_pretrained folder)
EVALUATORS = ASSETS / "evaluators"  # <world>.safetensors + <world>.json
# The embedded worlds, each with a shipped backbone and a shipped ILF feedback: what the CLI, evaluation
# sources and the feedback tests iterate over.
WORLDS = ("shapes", "digits", "shapes-flow")
# Worlds on a flow-matching backbone whose pipeline has no text encoder (shapes-flow: the shapes data and its
# evaluator on an SD3 backbone; prompts go in as MiniLM embeddings through `registry.prompt_kwargs`).
FLOW_WORLDS = ("shapes-flow",)
BACKBONE_WORLDS = WORLDS  # every world `transformer()` and `registry.load_pipeline` know
# The world whose data (sampler, captions, evaluator) each world uses: code that asks `world == "shapes"` for
# "text prompts, the shapes evaluator" should ask `DATA_OF[world] == "shapes"`.
DATA_OF = {"shapes": "shapes", "digits": "digits", "shapes-flow": "shapes"}


def transformer(world: str) -> Path:
    """save_pretrained folder of the world's backbone (PixArt for shapes, DiT for digits, SD3 for shapes-flow)."""
    if world not in BACKBONE_WORLDS:
        raise ValueError(f"world must be one of {BACKBONE_WORLDS}, got {world!r}")
    return ASSETS / world / "transformer"


# The shipped correctors per speed tier: its folder under the world's assets, and how it was trained.
TIERS = {
    "default": ("feedback", "--distill corrector"),  # ~1.8x: TaylorSeer's interval 2, corrected (20 steps)
    "fast": ("feedback-fast", "--distill corrector --student-steps N --cache-full-steps ..."),  # <= 85 block forwards
}


def feedback(world: str, tier: str = "default") -> Path:
    """The world's shipped trained feedback (an `apply_ilf`-loadable folder): a corrector of TaylorSeer.

    tier: "default", the method that measured best at ~1.8x (bench/corrector_study.py), or "fast", at most 85
    block forwards per image (>= 2.8x; a searched step mask on a shorter run, bench/fast_tier_study.py); it
    runs at the step count it records (docs/fast-tier.md)."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}, got {tier!r}")
    name, how = TIERS[tier]
    return _shipped(world, name, how)


def paper_feedback(world: str) -> Path:
    """The world's shipped feedback of the paper's mode (an inner loop, trained by trajectory distillation for
    10 steps with feedback on the last one): the paper-mode row of the studies and `ilf demo --mode ilf`."""
    return _shipped(world, "ilf-feedback", "--distill trajectory")


def _shipped(world: str, name: str, how: str) -> Path:
    folder = transformer(world).parent / name
    if not (folder / "ilf_config.json").is_file():
        from ..errors import ILFError

        raise ILFError(f"no shipped {name} for the {world!r} world in this install ({folder} is missing); train "
                       f"one with `ilf train --world {world} {how} --output-dir DIR` and pass DIR/feedback instead")
    return folder
