"""Turn raw samples into model inputs with the pipeline's own frozen VAE and text encoder, and apply
caption / class dropout for classifier-free guidance the way PixArt and DiT train."""

from __future__ import annotations

import torch

from ..errors import ILFError


class Encoder:
    """Frozen VAE + text encoder of a diffusers pipeline (PixArt: T5 via `encode_prompt`; DiT: labels)."""

    def __init__(self, pipe, kind: str, max_sequence_length: int | None = None):
        self.pipe, self.kind = pipe, kind
        self.max_len = max_sequence_length or (300 if type(pipe).__name__ == "PixArtSigmaPipeline" else 120)
        self._null = None

    @property
    def device(self):
        return self.pipe.transformer.device

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → scaled VAE latents (posterior mean, deterministic)."""
        vae = self.pipe.vae
        if vae is None:
            raise ILFError("raw images need the pipeline's VAE; precompute shards with `ilf precompute` instead")
        x = images.to(self.device, vae.dtype)
        return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

    @torch.no_grad()
    def text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self.pipe, "text_encoder", None) is None:
            raise ILFError("captions need the pipeline's text encoder; precompute shards with `ilf precompute`")
        embeds, mask, _, _ = self.pipe.encode_prompt(
            captions, do_classifier_free_guidance=False, device=self.device,
            max_sequence_length=self.max_len, clean_caption=False,
        )
        return embeds, mask

    def null_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty caption's embedding: PixArt's unconditional input (its pipelines' negative prompt "")."""
        if self._null is None:
            self._null = self.text([""])
        return self._null

    def encode(self, samples: list[dict]) -> dict:
        """Raw samples → {"latents", "encoder_hidden_states", "encoder_attention_mask"} or {"latents", "class_labels"}."""
        batch = {"latents": self.latents(torch.stack([s["image"] for s in samples]))}
        if self.kind == "text":
            states, mask = self.text([s["caption"] for s in samples])
            batch.update(encoder_hidden_states=states, encoder_attention_mask=mask)
        else:
            batch["class_labels"] = torch.tensor([s["label"] for s in samples], device=self.device)
        return batch


def vae_scale(pipe) -> int:
    """Pixels per latent pixel (DiTPipeline has no `vae_scale_factor`)."""
    vae = getattr(pipe, "vae", None)
    return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8


def default_resolution(source, pipe) -> None:
    """Raw image folders without --resolution are read at the backbone's native size (latent size × VAE scale)."""
    if getattr(source, "resolution", 0) is None:
        source.resolution = pipe.transformer.config.sample_size * vae_scale(pipe)


def stack_encoded(samples: list[dict], device) -> dict:
    """Rows of precomputed shards → a batch on `device`."""
    out = {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}
    if "latents" in out:
        out["latents"] = out["latents"].float()
    if "encoder_hidden_states" in out:
        out["encoder_hidden_states"] = out["encoder_hidden_states"].float()
    return out


def drop_conditions(batch: dict, p: float, generator: torch.Generator, null_text=None, null_class: int = 1000) -> dict:
    """Replace each sample's condition with the unconditional one with probability p (CFG training).

    Text: the empty caption's embedding and mask; class: the null class id (DiT: num_embeds_ada_norm = 1000).
    """
    if p <= 0:
        return batch
    n = batch["latents"].shape[0]
    drop = torch.rand(n, generator=generator) < p  # [B] on CPU: the draw does not depend on the device
    if not drop.any():
        return batch
    out = dict(batch)
    dev = batch["latents"].device
    drop = drop.to(dev)
    if "class_labels" in batch:
        out["class_labels"] = torch.where(drop, torch.full_like(batch["class_labels"], null_class), batch["class_labels"])
        return out
    states, mask = null_text
    L = batch["encoder_hidden_states"].shape[1]
    states, mask = _fit(states, L).to(dev, batch["encoder_hidden_states"].dtype), _fit(mask, L).to(dev)
    out["encoder_hidden_states"] = torch.where(drop[:, None, None], states.expand_as(batch["encoder_hidden_states"]),
                                               batch["encoder_hidden_states"])
    out["encoder_attention_mask"] = torch.where(drop[:, None], mask.expand_as(batch["encoder_attention_mask"]),
                                                batch["encoder_attention_mask"])
    return out


def _fit(t: torch.Tensor, length: int) -> torch.Tensor:
    """Pad (zeros) or cut the token axis (dim 1) of a [1, L, …] tensor to `length`."""
    if t.shape[1] >= length:
        return t[:, :length]
    pad = torch.zeros(t.shape[0], length - t.shape[1], *t.shape[2:], dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], dim=1)


def model_kwargs(model, batch: dict) -> dict:
    """The transformer's conditioning keyword arguments for a batch."""
    if "class_labels" in batch:
        return {"class_labels": batch["class_labels"]}
    kw = {"encoder_hidden_states": batch["encoder_hidden_states"],
          "encoder_attention_mask": batch["encoder_attention_mask"]}
    if getattr(model, "use_additional_conditions", False):  # PixArt-α 1024: image size and aspect ratio
        n, _, h, w = batch["latents"].shape
        size = torch.tensor([[h * 8.0, w * 8.0]], device=batch["latents"].device).expand(n, 2)
        kw["added_cond_kwargs"] = {"resolution": size, "aspect_ratio": (size[:, :1] / size[:, 1:])}
    else:
        kw["added_cond_kwargs"] = {"resolution": None, "aspect_ratio": None}
    return kw


def unconditional_inputs(pipe, source, max_sequence_length: int | None = None):
    """(encoder or None, null text or None, null class) for a data source: what CFG dropout and guided paths need.

    The encoder is the pipeline's frozen VAE + text encoder (none for precomputed data); the null text is the empty
    caption's embedding and mask (from the shards when precomputed); the null class is DiT's `num_embeds_ada_norm`.
    """
    encoder = None if source.encoded else Encoder(pipe, source.kind, max_sequence_length)
    null_text = None
    if source.kind == "text":
        null_text = source.null_text() if source.encoded else encoder.null_text()
    return encoder, null_text, pipe.transformer.config.get("num_embeds_ada_norm") or 1000
