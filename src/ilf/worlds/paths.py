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


def feedback(world: str) -> Path:
    """The world's shipped trained feedback (an `apply_ilf`-loadable folder), trained by `ilf train --world`."""
    folder = transformer(world).parent / "feedback"
    if not (folder / "ilf_config.json").is_file():
        from ..errors import ILFError

        raise ILFError(f"no shipped feedback for the {world!r} world in this install ({folder} is missing); "
                       f"train one with `ilf train --world {world} --output-dir DIR` and pass DIR/feedback instead")
    return folder
