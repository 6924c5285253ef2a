"""Turn raw samples into model inputs with the pipeline's own frozen VAE and text encoder, and apply
caption / class dropout for classifier-free guidance the way PixArt and DiT train.

Text conditioning is a dict named as the transformer's keyword arguments, as the family's adapter encodes
it: PixArt / Sana `{"encoder_hidden_states": [B, L, D], "encoder_attention_mask": [B, L]}`, SD3
`{"encoder_hidden_states": [B, L, D], "pooled_projections": [B, P]}`."""

from __future__ import annotations

import torch

from ..errors import ILFError


class Encoder:
    """Frozen VAE + text encoder of a diffusers pipeline (text through the adapter's `encode_text`, i.e. the
    pipeline's own `encode_prompt`; DiT: labels). `text_fn` replaces the pipeline's text encoding (a world
    whose pipeline is called with precomputed prompt embeddings)."""

    def __init__(self, pipe, kind: str, max_sequence_length: int | None = None, text_fn=None):
        self.pipe, self.kind, self.text_fn = pipe, kind, text_fn
        self.max_len = max_sequence_length or (300 if type(pipe).__name__ == "PixArtSigmaPipeline" else 120)
        self._null = None

    @property
    def device(self):
        return self.pipe.transformer.device

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] → scaled (and shifted, for SD3-style VAEs) latents, posterior mean."""
        vae = self.pipe.vae
        if vae is None:
            raise ILFError("raw images need the pipeline's VAE; precompute shards with `ilf precompute` instead")
        x = images.to(self.device, vae.dtype)
        shift = vae.config.get("shift_factor") or 0.0  # SD3 / Flux pipelines decode latents / scale + shift
        return (vae.encode(x).latent_dist.mode() - shift) * vae.config.scaling_factor

    @torch.no_grad()
    def text(self, captions: list[str]) -> dict:
        if self.text_fn is not None:
            return {k: v.to(self.device) for k, v in self.text_fn(captions).items()}
        from ..adapters import get_adapter

        return get_adapter(self.pipe.transformer).encode_text(self.pipe, captions, self.device, self.max_len)

    def null_text(self) -> dict:
        """The empty caption's conditioning: the unconditional input (the pipelines' negative prompt "")."""
        if self._null is None:
            self._null = self.text([""])
        return self._null

    def encode(self, samples: list[dict]) -> dict:
        """Raw samples → {"latents", <text conditioning>} or {"latents", "class_labels"}."""
        batch = {"latents": self.latents(torch.stack([s["image"] for s in samples]))}
        if self.kind == "text":
            batch.update(self.text([s["caption"] for s in samples]))
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
    return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}  # fp16 on disk


def drop_conditions(batch: dict, p: float, generator: torch.Generator, null_text=None, null_class: int = 1000) -> dict:
    """Replace each sample's condition with the unconditional one with probability p (CFG training).

    Text: the empty caption's conditioning (every key of `null_text`); class: the null class id (DiT:
    num_embeds_ada_norm = 1000).
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
    for k, null in null_text.items():
        v = batch[k]
        if v.ndim >= 2 and null.shape[1:] != v.shape[1:]:
            null = _fit(null, v.shape[1])  # the token axis: captions padded to another length
        out[k] = torch.where(drop.view(-1, *[1] * (v.ndim - 1)), null.to(dev, v.dtype).expand_as(v), v)
    return out


def _fit(t: torch.Tensor, length: int) -> torch.Tensor:
    """Pad (zeros) or cut the token axis (dim 1) of a [1, L, …] tensor to `length`."""
    if t.shape[1] >= length:
        return t[:, :length]
    pad = torch.zeros(t.shape[0], length - t.shape[1], *t.shape[2:], dtype=t.dtype, device=t.device)
    return torch.cat([t, pad], dim=1)


def model_kwargs(model, batch: dict) -> dict:
    """The transformer's conditioning keyword arguments for a batch (its conditioning, plus what the family
    derives from the latents, e.g. PixArt-α 1024's size conditioning)."""
    if "class_labels" in batch:
        return {"class_labels": batch["class_labels"]}
    from ..adapters import get_adapter

    model = getattr(model, "module", model)  # DDP
    kw = {k: v for k, v in batch.items() if k != "latents"}
    kw.update(get_adapter(model).extra_call_kwargs(model, batch["latents"]))
    return kw


def unconditional_inputs(pipe, source, max_sequence_length: int | None = None, text_fn=None):
    """(encoder or None, null text or None, null class) for a data source: what CFG dropout and guided paths need.

    The encoder is the pipeline's frozen VAE + text encoder (none for precomputed data); the null text is the empty
    caption's conditioning dict (from the shards when precomputed); the null class is DiT's `num_embeds_ada_norm`.
    """
    encoder = None if source.encoded else Encoder(pipe, source.kind, max_sequence_length, text_fn)
    null_text = None
    if source.kind == "text":
        null_text = source.null_text() if source.encoded else encoder.null_text()
    return encoder, null_text, pipe.transformer.config.get("num_embeds_ada_norm") or 1000
