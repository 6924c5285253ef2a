"""Shipped VAE and backbones: load offline through the real pipelines, fp16 on disk, and they generate well."""

import json

import numpy as np
import pytest
import torch
from diffusers import DiTPipeline, PixArtAlphaPipeline
from safetensors import safe_open

from ilf.worlds import batches, digits, evaluators, paths, registry, shapes
from ilf.worlds.train_vae import psnr


def _weights(folder):
    with safe_open(str(folder / "diffusion_pytorch_model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("folder", [paths.VAE, paths.transformer("shapes"), paths.transformer("digits")])
def test_assets_are_small_fp16_safetensors(folder):
    w = _weights(folder)
    assert {t.dtype for t in w.values()} == {torch.float16}
    assert (folder / "diffusion_pytorch_model.safetensors").stat().st_size < 20e6


def test_backbones_have_the_specified_architecture():
    pix = json.loads((paths.transformer("shapes") / "config.json").read_text())
    dit = json.loads((paths.transformer("digits") / "config.json").read_text())
    assert pix["_class_name"] == "PixArtTransformer2DModel" and dit["_class_name"] == "DiTTransformer2DModel"
    assert pix["num_layers"] >= 12 and dit["num_layers"] >= 12
    assert pix["caption_channels"] == 384 and pix["norm_type"] == "ada_norm_single"
    assert dit["num_embeds_ada_norm"] == 1000  # DiTPipeline's null class id is 1000
    t = registry.load_transformer("digits")
    assert t.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings == 1001


def test_vae_reconstructs_heldout_images_and_latents_have_unit_scale():
    vae = registry.load_vae()
    x, _, _ = shapes.batch(range(32), "heldout")
    xd, _ = digits.batch(range(32), "heldout")
    for imgs in (x, xd):
        with torch.no_grad():
            z = batches.encode_images(vae, imgs)  # [B, 4, 8, 8], scaled
            rec = vae.decode(z / vae.config.scaling_factor).sample
        assert z.shape == (32, 4, 8, 8)
        assert psnr(rec.clamp(-1, 1), imgs) > 30  # visually faithful
    assert 0.6 < float(z.std()) < 1.6


def test_make_batch_gives_what_the_backbones_consume():
    b = batches.make_batch("shapes", [0, 1, 2])
    _, caps, _ = shapes.batch([0, 1, 2])
    assert b["captions"] == caps
    assert b["latents"].shape == (3, 4, 8, 8)
    assert b["encoder_hidden_states"].shape == (3, 16, 384) and b["encoder_attention_mask"].shape == (3, 16)
    d = batches.make_batch("digits", [0, 1, 2], split="heldout")
    assert torch.equal(d["class_labels"], digits.batch([0, 1, 2], "heldout")[1])
    t = registry.load_transformer("shapes")
    out = t(b["latents"], encoder_hidden_states=b["encoder_hidden_states"], timestep=torch.tensor([500] * 3),
            encoder_attention_mask=b["encoder_attention_mask"],
            added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
    assert out.shape == b["latents"].shape


def test_shapes_pipeline_builds_offline_and_makes_32px_images():
    pipe = registry.load_pipeline("shapes")
    assert isinstance(pipe, PixArtAlphaPipeline)
    kw = {**registry.CALL_KWARGS["shapes"], "num_inference_steps": 2}
    out = pipe(["a large red circle in the center"], generator=torch.Generator().manual_seed(0), **kw).images
    assert out[0].size == (32, 32)
    pt = pipe(["two small blue squares"] * 2, output_type="pt", generator=torch.Generator().manual_seed(0), **kw)
    assert pt.images.shape == (2, 3, 32, 32)


def test_digits_pipeline_builds_offline_and_makes_32px_images():
    pipe = registry.load_pipeline("digits")
    assert isinstance(pipe, DiTPipeline)
    assert pipe.get_label_ids(["0", "9"]) == [0, 9]
    kw = {**registry.CALL_KWARGS["digits"], "num_inference_steps": 2}
    out = pipe(class_labels=[3, 4], output_type="np", generator=torch.Generator().manual_seed(0), **kw).images
    assert out.shape == (2, 32, 32, 3)


def test_shapes_backbone_follows_heldout_prompts():
    """20-step DPM-Solver++ samples of unseen prompts, read by the shapes evaluator."""
    pipe = registry.load_pipeline("shapes")
    prompts = shapes.eval_prompts(32)
    images = pipe(prompts, generator=torch.Generator().manual_seed(0), **registry.CALL_KWARGS["shapes"]).images
    score = evaluators.load_evaluator("shapes").score(images, prompts)
    assert float(score.mean()) > 0.7


def test_digits_backbone_draws_the_requested_digits():
    pipe = registry.load_pipeline("digits")
    labels = [d for d in range(10) for _ in range(3)]
    images = pipe(class_labels=labels, output_type="np", generator=torch.Generator().manual_seed(0),
                  **registry.CALL_KWARGS["digits"]).images
    acc = evaluators.load_evaluator("digits").score(images, labels)
    assert float(acc.mean()) > 0.8
    assert np.std(images) > 0.1  # not blank
