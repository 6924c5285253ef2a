"""The embedded offline default: tiny worlds with trained latent diffusion transformers and evaluators.

    from ilf import worlds

    pipe = worlds.load_pipeline("shapes")                     # PixArtAlphaPipeline, 12-block PixArt, MiniLM text
    img = pipe("a small red circle above a large blue square", **worlds.CALL_KWARGS["shapes"]).images[0]
    worlds.load_evaluator("shapes").score([img], ["a small red circle above a large blue square"])

    pipe = worlds.load_pipeline("digits")                     # DiTPipeline, 12-block DiT, classes "0".."9"
    worlds.make_batch("digits", range(64))                    # clean latents + labels for a training loop

    pipe = worlds.load_pipeline("shapes-flow")                # StableDiffusion3Pipeline, 12-block rectified flow
    img = pipe(**worlds.prompt_kwargs("shapes-flow", ["two small blue squares"]),
               **worlds.CALL_KWARGS["shapes-flow"]).images[0]  # no text encoder in the pipeline: MiniLM embeddings

Data: `shapes.sample(index, split, seed)`, `shapes.prompts(split)`, `shapes.eval_prompts()`,
`digits.sample(index, split)`. Retrain assets with `python -m ilf.worlds.train_vae | train_backbone |
train_flow_backbone | train_evaluators --help`.
"""

import os

# A missing weight must fail at once rather than retry a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ilf.worlds import digits, shapes  # noqa: E402
from ilf.worlds.batches import make_batch  # noqa: E402
from ilf.worlds.evaluators import load_evaluator  # noqa: E402
from ilf.worlds.registry import CALL_KWARGS, load_pipeline, load_transformer, load_vae, prompt_kwargs  # noqa: E402

__all__ = ["CALL_KWARGS", "digits", "load_evaluator", "load_pipeline", "load_transformer", "load_vae",
           "make_batch", "prompt_kwargs", "shapes"]
