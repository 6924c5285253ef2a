"""Fast Approximate Distillation on a trained (shipped) world backbone: the distillation term itself falls.

On a random backbone (tests/train) the t/2 teacher is nearly unpredictable, so only the total loss is checked
there; a real denoiser's t/2 prediction is learnable, which is the premise of FAD (paper §3.2).
"""

import torch
from diffusers import DDPMScheduler

from ilf import ILFConfig, apply_ilf, remove_ilf
from ilf.train.config import TrainConfig
from ilf.train.objective import ilf_loss
from ilf.train.trainer import train
from ilf.worlds import batches, registry

LOOP = (3, 8)


def _distill_on_heldout(model, feedback) -> float:
    """Mean FAD distillation term over held-out digits with fixed noise and timesteps spread over [50, 950]."""
    apply_ilf(model, feedback)
    b = batches.make_batch("digits", range(64), split="heldout")
    x0 = b["latents"]  # [64, 4, 8, 8]
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.linspace(50, 950, len(x0)).long()
    with torch.no_grad():
        terms = ilf_loss(model, {"class_labels": b["class_labels"]}, x0, noise, t, DDPMScheduler())
    remove_ilf(model)
    return float(terms.distill)


def test_fad_lowers_the_distillation_loss_on_the_digits_backbone(tmp_path):
    model = registry.load_transformer("digits").float().eval()
    before = _distill_on_heldout(model, ILFConfig(loop=LOOP))  # zero scales: the stock model vs its t/2 self
    result = train(TrainConfig(output_dir=tmp_path / "run", world="digits", loop=LOOP, lr=1e-3, batch_size=16,
                               max_steps=100, checkpoint_every=0, log_every=10, seed=0, progress=False))
    after = _distill_on_heldout(model, result.feedback_dir)
    assert after < 0.9 * before, (before, after)
