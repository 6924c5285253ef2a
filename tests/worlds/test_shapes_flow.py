"""The shapes-flow world: a stock SD3 pipeline around our rectified-flow backbone; small, trained, prompt-following."""

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors import safe_open

from ilf.worlds import batches, evaluators, paths, registry, shapes, text_encoder
from ilf.worlds import train_flow_backbone as flow

WORLD = "shapes-flow"


@pytest.fixture(scope="module")
def pipe():
    return registry.load_pipeline(WORLD)


def _images(pipe, prompts, seed=0, **call):
    kw = {**registry.CALL_KWARGS[WORLD], **call}
    return pipe(**registry.prompt_kwargs(WORLD, prompts), generator=torch.Generator().manual_seed(seed), **kw).images


def test_shipped_backbone_is_a_small_fp16_sd3_model_of_the_trainers_config():
    folder = paths.transformer(WORLD)
    weights = folder / "diffusion_pytorch_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert weights.stat().st_size <= 15e6
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["_class_name"] == "SD3Transformer2DModel"
    assert (cfg["joint_attention_dim"], cfg["pooled_projection_dim"]) == (text_encoder.WIDTH, text_encoder.WIDTH)
    assert cfg["in_channels"] == cfg["out_channels"] == 4 and cfg["num_layers"] >= 8
    assert cfg["sample_size"] == 8 and cfg["pos_embed_max_size"] * cfg["patch_size"] >= 8  # covers the latent grid
    model = registry.load_transformer(WORLD)
    assert type(model) is SD3Transformer2DModel
    fresh = flow.make_transformer()
    trainer_cfg = json.loads(fresh.to_json_string())  # what train_flow_backbone builds and exports
    assert {k: v for k, v in cfg.items() if not k.startswith("_")} == {
        k: v for k, v in trainer_cfg.items() if not k.startswith("_")}


def test_pipeline_is_stock_sd3_without_text_encoders_and_generates_from_strings(pipe):
    # the stock class (a same-named subclass that fills in the world's call defaults, tests/worlds/test_bare_call.py)
    assert isinstance(pipe, StableDiffusion3Pipeline) and type(pipe).__name__ == "StableDiffusion3Pipeline"
    assert type(pipe.scheduler) is FlowMatchEulerDiscreteScheduler
    assert pipe.scheduler.config.shift == registry.FLOW_SHIFT
    assert pipe.text_encoder is pipe.text_encoder_2 is pipe.text_encoder_3 is pipe.tokenizer is None
    prompts = ["a large red circle in the center", "two small blue squares"]
    out = _images(pipe, prompts, num_inference_steps=2, output_type="pt")
    assert out.shape == (2, 3, 32, 32) and out.std() > 0.05
    pil = pipe(**registry.prompt_kwargs(WORLD, prompts, num_images_per_prompt=2), num_inference_steps=2).images
    assert len(pil) == 4 and pil[0].size == (32, 32)
    with pytest.raises(ValueError, match="prompt strings itself"):
        registry.prompt_kwargs("shapes", prompts)


def test_prompt_kwargs_are_the_training_context():
    """Token states with padding zeroed and the masked mean, as the trainer's batches; the negative is ""."""
    prompts = ["a small green cross to the right of a large yellow circle", "two small red squares"]
    kw = registry.prompt_kwargs(WORLD, prompts)
    states, mask = text_encoder.encode(prompts)
    assert torch.equal(kw["prompt_embeds"][1, mask[1] == 0], torch.zeros(int((mask[1] == 0).sum()), 384))
    assert torch.allclose(kw["pooled_prompt_embeds"][0], states[0, mask[0].bool()].mean(0), atol=1e-5)
    null_states, null_mask = text_encoder.encode([""])
    assert torch.allclose(kw["negative_pooled_prompt_embeds"], null_states[0, :2].mean(0).expand(2, -1), atol=1e-5)
    assert int(null_mask.sum()) == 2  # [CLS] [SEP]
    b = batches.make_batch(WORLD, [0, 1])  # what a feedback trainer would consume: the same context
    assert b["encoder_hidden_states"].shape == (2, 16, 384) and b["pooled_projections"].shape == (2, 384)
    again = registry.prompt_kwargs(WORLD, b["captions"])
    assert torch.equal(b["encoder_hidden_states"], again["prompt_embeds"])
    assert torch.equal(b["pooled_projections"], again["pooled_prompt_embeds"])


def test_pipeline_decodes_our_latents_like_the_vae(pipe):
    """SD3 decodes `z / scaling_factor + shift_factor`: with our VAE that must be its plain decode of the latents."""
    x, caps, _ = shapes.batch(range(4), "heldout")
    z = batches.encode_images(pipe.vae, x)  # [4, 4, 8, 8] scaled clean latents, as trained

    def swap_in_clean_latents(p, i, t, tensors):  # after the last step the pipeline decodes exactly `z`
        return {"latents": z} if i == 1 else {}

    out = pipe(**registry.prompt_kwargs(WORLD, caps), num_inference_steps=2, output_type="pt",
               callback_on_step_end=swap_in_clean_latents).images  # [4, 3, 32, 32] in [0, 1]
    mse = float(((out * 2 - 1) - x).pow(2).mean())
    assert 10 * torch.log10(torch.tensor(4.0 / mse)) > 30  # PSNR in dB on [-1, 1] images: a faithful decode


def test_training_convention_is_the_schedulers():
    """flow_loss trains x_t = (1-σ)·x0 + σ·ε at timestep σ·1000 toward v = ε - x0; the pipeline's scheduler visits
    exactly those x_t at its timesteps when v is the true velocity, and lands on x0."""
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, xt, timestep, **cond):
            seen.update(xt=xt, t=timestep, cond=cond)
            return type("Out", (), {"sample": torch.zeros_like(xt)})()

    x0 = torch.randn(3, 4, 8, 8)
    loss = flow.flow_loss(Recorder(), x0, {"pooled_projections": None}, torch.Generator().manual_seed(5), "uniform")
    g = torch.Generator().manual_seed(5)
    eps, sigma = torch.randn(x0.shape, generator=g), torch.rand(3, generator=g)
    assert torch.allclose(seen["t"], sigma * 1000)
    assert torch.allclose(seen["xt"], (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * eps)
    assert torch.allclose(loss, (eps - x0).pow(2).mean())

    sched = FlowMatchEulerDiscreteScheduler(shift=registry.FLOW_SHIFT)
    sched.set_timesteps(20)
    x = eps
    for t in sched.timesteps:
        s = float(t) / 1000
        assert torch.allclose(x, (1 - s) * x0 + s * eps, atol=1e-4)
        x = sched.step(eps - x0, t, x).prev_sample
    assert torch.allclose(x, x0, atol=1e-4)


def test_backbone_follows_heldout_prompts_well_above_a_shuffled_control(pipe):
    """20-step samples of unseen prompts, read by the shipped shapes evaluator against their own prompts and
    against another test prompt (mostly of the same kind: the control only shares attributes by chance)."""
    prompts = shapes.eval_prompts(32)
    images = _images(pipe, prompts)
    ev = evaluators.load_evaluator(WORLD)
    score = float(ev.score(images, prompts).mean())
    control = float(ev.score(images, prompts[1:] + prompts[:1]).mean())
    assert score > 0.85 and score > control + 0.35, (score, control)  # measured: 0.975 against 0.447


def test_every_block_matters():
    """Skipping any one joint block (the stock `skip_layers`, what pruning a block does) changes the velocity."""
    model = registry.load_transformer(WORLD)
    b = batches.make_batch(WORLD, range(4), "heldout")
    g = torch.Generator().manual_seed(0)
    xt = 0.5 * b["latents"] + 0.5 * torch.randn(b["latents"].shape, generator=g)
    cond = {"encoder_hidden_states": b["encoder_hidden_states"], "pooled_projections": b["pooled_projections"],
            "timestep": torch.full((4,), 500.0)}
    with torch.no_grad():
        full = model(xt, **cond).sample
        for i in range(len(model.transformer_blocks)):
            pruned = model(xt, **cond, skip_layers=[i]).sample
            assert (pruned - full).norm() > 0.02 * full.norm(), i  # measured: 7% (block 9) to 73% (block 0)
