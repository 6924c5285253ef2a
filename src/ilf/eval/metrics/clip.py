"""CLIP score and CLIP-IQA over a `transformers` CLIP model, without torchmetrics.

(torchmetrics' CLIPScore does not run with transformers 5, and its CLIP-IQA rescales images
twice; both are replaced by the few lines below.)

- CLIP score (Hessel et al. 2021, as torchmetrics and the ILF paper report it):
  `100 * max(cos(image_emb, text_emb), 0)` per image/prompt pair; the reported number is the mean.
- CLIP-IQA (Wang et al. 2023) with the paper's four attributes, each an antonym prompt pair:
  `softmax(100 * [cos(img, pos), cos(img, neg)])[pos]`, reported x 100 ("Good" is the standard
  CLIP-IQA score). The original CLIP-IQA uses OpenAI's ResNet-50 CLIP, which transformers cannot
  load; with a ViT CLIP the attribute scores follow the same recipe but are not the same numbers.

Images are [B, 3, H, W] float in [0, 1] and are preprocessed once, in torch: resize the shorter
side to the model's image size (bicubic, antialiased), centre-crop to a square, normalise with
the checkpoint's `image_mean`/`image_std` (read from its preprocessor_config.json; OpenAI's CLIP
values when absent). This mirrors CLIPImageProcessor up to interpolation round-off.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import MissingExtraError, MissingWeightsError, MetricError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The ILF paper's CLIP-IQA attributes: name -> (positive prompt, negative prompt).
CLIP_IQA_PROMPTS: dict[str, tuple[str, str]] = {
    "good": ("Good photo.", "Bad photo."),
    "noisy": ("Noisy photo.", "Clear photo."),
    "colorful": ("Colorful photo.", "Dull photo."),
    "natural": ("Natural photo.", "Synthetic photo."),
}
# Both scores use CLIP's fixed logit scale of 100 (as torchmetrics and CLIP-IQA do), not the checkpoint's.
LOGIT_SCALE = 100.0
CLIP_HINT = (
    "pass a local folder holding a transformers CLIP checkpoint (config.json, model weights, tokenizer files), "
    "e.g. fetched once elsewhere with `huggingface-cli download openai/clip-vit-large-patch14 --local-dir DIR`"
)


def _preprocessor_config(name_or_path: str | os.PathLike) -> dict:
    """The checkpoint's preprocessor_config.json as a dict ({} when there is none)."""
    local = Path(name_or_path) / "preprocessor_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(name_or_path).is_dir():
        return {}
    try:  # a hub id: only the local cache is consulted when HF_HUB_OFFLINE=1
        from transformers.utils import cached_file

        found = cached_file(str(name_or_path), "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
        return json.loads(Path(found).read_text()) if found else {}
    except Exception:  # noqa: BLE001 - no processor config is not an error; defaults apply
        return {}


def _pooled(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPMetrics:
    """CLIP score and CLIP-IQA with one CLIP model; build with `CLIPMetrics.from_pretrained(dir_or_id)`."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        device: str | torch.device | None = None,
        batch_size: int = 32,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.dtype = next(model.parameters()).dtype
        self.batch_size = batch_size
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)  # 77 for OpenAI CLIP
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
    ) -> "CLIPMetrics":
        """Load `CLIPModel` + tokenizer (+ image mean/std) from a local folder or a cached hub id."""
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as exc:  # pragma: no cover - transformers is a core dependency
            raise MissingExtraError(f"CLIP metrics need transformers: pip install 'transformers>=5' ({exc})") from exc
        try:
            model = CLIPModel.from_pretrained(str(name_or_path), dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        except OSError as exc:
            raise MissingWeightsError(f"cannot load CLIP from {str(name_or_path)!r}: {exc}\n{CLIP_HINT}") from exc
        cfg = _preprocessor_config(name_or_path)
        return cls(
            model,
            tokenizer,
            image_mean=cfg.get("image_mean", OPENAI_CLIP_MEAN),
            image_std=cfg.get("image_std", OPENAI_CLIP_STD),
            device=device,
            batch_size=batch_size,
        )

    def preprocess(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] (or a list of [3, H, W]) -> normalised pixel values [B, 3, S, S]."""
        if not isinstance(images, torch.Tensor):
            return torch.cat([self.preprocess(im[None]) for im in images])
        if images.ndim != 4 or images.shape[1] != 3:
            raise MetricError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        s = self.image_size
        x = images.float()  # [B, 3, H, W]
        h, w = x.shape[-2:]
        # shorter side -> s, longer side scaled alike (floored, as CLIPImageProcessor does)
        nh, nw = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top : top + s, left : left + s].clamp(0.0, 1.0)  # [B, 3, s, s]
        return (x - self.image_mean) / self.image_std

    @torch.inference_mode()
    def embed_images(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Unit-norm image embeddings [B, D] (float32, CPU), in batches of `batch_size`."""
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.preprocess(images[start : start + self.batch_size])  # [b, 3, S, S]
            feats = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype)))
            out.append(F.normalize(feats.float(), dim=-1).cpu())  # [b, D]
        return torch.cat(out)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [T, D] (float32, CPU); prompts truncated to the model's context."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            feats = _pooled(
                self.model.get_text_features(
                    input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
                )
            )
            out.append(F.normalize(feats.float(), dim=-1).cpu())  # [t, D]
        return torch.cat(out)

    def clip_score(self, images: torch.Tensor | Sequence[torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
        """Per-pair CLIP score [B] = 100 * max(cos(image_b, prompt_b), 0); report its mean."""
        if isinstance(prompts, str) or len(prompts) != len(images):
            raise MetricError(f"need one prompt per image: {len(images)} images, prompts={prompts!r:.80}")
        cos = (self.embed_images(images) * self.embed_texts(prompts)).sum(-1)  # [B]
        return LOGIT_SCALE * cos.clamp(min=0.0)

    def clip_iqa(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        attributes: Mapping[str, tuple[str, str]] = CLIP_IQA_PROMPTS,
    ) -> dict[str, torch.Tensor]:
        """Per-image CLIP-IQA x 100 for each attribute: name -> [B] in [0, 100] (higher = more like the
        positive prompt, e.g. "Good photo."; for "noisy" higher means noisier)."""
        names = list(attributes)
        texts = [p for name in names for p in attributes[name]]  # [pos_0, neg_0, pos_1, neg_1, ...]
        anchors = self.embed_texts(texts)  # [2A, D]
        logits = LOGIT_SCALE * self.embed_images(images) @ anchors.T  # [B, 2A]
        probs = logits.view(logits.shape[0], len(names), 2).softmax(-1)[..., 0]  # [B, A] P(positive)
        return {name: 100.0 * probs[:, i] for i, name in enumerate(names)}
