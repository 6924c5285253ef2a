"""Where the shipped assets live (package data under `ilf/worlds/assets/`)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
VAE = ASSETS / "vae"  # AutoencoderKL shared by both worlds (save_pretrained folder)
EVALUATORS = ASSETS / "evaluators"  # <world>.safetensors + <world>.json
WORLDS = ("shapes", "digits")


def transformer(world: str) -> Path:
    """save_pretrained folder of the world's backbone (PixArt for shapes, DiT for digits)."""
    if world not in WORLDS:
        raise ValueError(f"world must be one of {WORLDS}, got {world!r}")
    return ASSETS / world / "transformer"


def feedback(world: str) -> Path:
    """The world's shipped trained feedback (an `apply_ilf`-loadable folder), trained by `ilf train --world`."""
    folder = transformer(world).parent / "feedback"
    if not (folder / "ilf_config.json").is_file():
        from ..errors import ILFError

        raise ILFError(f"no shipped feedback for the {world!r} world in this install ({folder} is missing); "
                       f"train one with `ilf train --world {world} --output-dir DIR` and pass DIR/feedback instead")
    return folder
