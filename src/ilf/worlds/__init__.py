"""The embedded offline default: tiny worlds with trained latent diffusion transformers and evaluators.

    from ilf import worlds

    pipe = worlds.load_pipeline("shapes")                     # PixArtAlphaPipeline, 12-block PixArt, MiniLM text
    img = pipe("a large red circle in the center").images[0]  # the world's CALL_KWARGS are the call's defaults
    worlds.load_evaluator("shapes").score([img], ["a large red circle in the center"])

    pipe = worlds.load_pipeline("digits")                     # DiTPipeline, 12-block DiT, classes "0".."9"
    worlds.make_batch("digits", range(64))                    # clean latents + labels for a training loop

    pipe = worlds.load_pipeline("shapes-flow")                # StableDiffusion3Pipeline, 12-block rectified flow
    img = pipe("two small blue squares").images[0]            # no text encoder: the strings become MiniLM
                                                              # embeddings (worlds.prompt_kwargs)

Data: `shapes.sample(index, split, seed)`, `shapes.prompts(split)`, `shapes.eval_prompts()`,
`digits.sample(index, split)`. Retrain assets with `python -m ilf.worlds.train_vae | train_backbone |
train_flow_backbone | train_evaluators --help`.
"""

import os

from ..lazy import lazy_exports

# A missing weight must fail at once rather than retry a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Loaded on first use (PEP 562): `ilf.worlds.paths` (world names for the CLI) must not import diffusers.
_EXPORTS = {
    "digits": None, "shapes": None, "make_batch": "batches", "load_evaluator": "evaluators",
    "CALL_KWARGS": "registry", "load_pipeline": "registry", "load_transformer": "registry", "load_vae": "registry",
    "prompt_kwargs": "registry",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
