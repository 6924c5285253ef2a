"""The FID Inception-v3 network in plain torch (no torchvision), with clean-fid's preprocessing.

Architecture: TensorFlow's "inception-2015-12-05" graph as ported by pytorch-fid (`FIDInceptionA`,
`FIDInceptionC`, `FIDInceptionE_1`, `FIDInceptionE_2`): torchvision's Inception-v3 layout, except
that the average pools inside the mixed blocks ignore padded zeros (TF semantics) and the last
block (`Mixed_7c`) max-pools its pool branch. Features are the 2048-d global average pool.
Parameter/buffer names equal those of pytorch-fid's weight file, so its state dict loads as is.

Weights are not shipped and cannot be downloaded here: get pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (URL below) and pass its path, or a safetensors copy of it
(`convert_weights_to_safetensors`). The `.pth` is read with `torch.load(weights_only=True)`.

Preprocessing ("clean" mode of clean-fid, Parmar et al. 2022): each image is quantised to uint8,
each channel is resized separately as a float32 PIL image ("F" mode) with bicubic filtering to
299 x 299 (no re-quantisation), and the network input is `(x - 128) / 128` on that [0, 255] scale,
as clean-fid feeds its Inception.

Caveat: clean-fid runs NVIDIA's TorchScript port of the TF graph (`inception-2015-12-05.pt`);
this module runs pytorch-fid's port of the same graph and weights. Both ports aim at the TF
numbers, but their agreement was not measured here (no weights offline): before quoting FIDs next
to clean-fid's, compare the two once on a machine that has both; within ilf, compare FIDs only
when computed by this module, with statistics tagged `CLEAN_FID_TAG`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import MissingWeightsError
from .images import to_uint8

PYTORCH_FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
WEIGHTS_HINT = (
    f"download pytorch-fid's FID Inception weights from {PYTORCH_FID_WEIGHTS_URL} "
    "(a plain state dict; optionally convert it with ilf.eval.metrics.convert_weights_to_safetensors)"
)
INPUT_SIZE = 299
FEATURE_DIM = 2048
CLEAN_FID_TAG = "clean-fid inception-2015-12-05 pool3 (PIL bicubic 299, float)"


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3, as TF) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3/1 'SAME' average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: out channels 64 + 64 + 96 + pool_features (Mixed_5b/5c/5d)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): out 384 + 96 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs (Mixed_6b..6e): out 4 x 192 = 768."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(bd)))
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): out 320 + 192 + cin."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 convs: out 320 + 768 + 768 + 192 = 2048.

    `pool="avg"` is pytorch-fid's FIDInceptionE_1 (Mixed_7b); `pool="max"` is FIDInceptionE_2
    (Mixed_7c), where the TF graph max-pools the pool branch.
    """

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to the 2048-d pool features; input [B, 3, 299, 299] in [-1, 1].

    `fc` (2048 -> 1008 TF classes) is kept so pytorch-fid's state dict loads strictly; `forward`
    does not use it (`logits` does).
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_1a_3x3(x)  # [B, 32, 149, 149]
        x = self.Conv2d_2a_3x3(x)  # [B, 32, 147, 147]
        x = self.Conv2d_2b_3x3(x)  # [B, 64, 147, 147]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [B, 64, 73, 73]
        x = self.Conv2d_3b_1x1(x)  # [B, 80, 73, 73]
        x = self.Conv2d_4a_3x3(x)  # [B, 192, 71, 71]
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # [B, 192, 35, 35]
        x = self.Mixed_5b(x)  # [B, 256, 35, 35]
        x = self.Mixed_5c(x)  # [B, 288, 35, 35]
        x = self.Mixed_5d(x)  # [B, 288, 35, 35]
        x = self.Mixed_6a(x)  # [B, 768, 17, 17]
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # [B, 768, 17, 17]
        x = self.Mixed_7a(x)  # [B, 1280, 8, 8]
        x = self.Mixed_7b(x)  # [B, 2048, 8, 8]
        x = self.Mixed_7c(x)  # [B, 2048, 8, 8]
        return x.mean(dim=(2, 3))  # [B, 2048] global average pool

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """TF's 1008-way logits of the input (class 0 is TF's 'background')."""
        return self.fc(self.forward(x))  # [B, 1008]


def _is_counter(key: str) -> bool:
    # BatchNorm's batch counter: absent from old state dicts, irrelevant in eval mode.
    return key.endswith("num_batches_tracked")


def load_inception_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a torch `.pth`/`.pt` (weights_only=True, never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"FID Inception weights {str(path)!r} not found: {WEIGHTS_HINT}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code in it, a TorchScript archive, a truncated file ...
        raise MissingWeightsError(
            f"{str(path)!r} is not a plain state dict loadable with weights_only=True ({type(exc).__name__}: {exc}); "
            f"{WEIGHTS_HINT}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MissingWeightsError(f"{str(path)!r} does not hold a state dict of tensors; {WEIGHTS_HINT}")
    return dict(state)


def load_fid_inception(path: str | os.PathLike, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """FIDInceptionV3 with the weights at `path` (pytorch-fid `.pth` or safetensors), in eval mode.

    Every parameter and buffer must be present with the right shape (only BatchNorm's
    `num_batches_tracked` counters may be missing), so a wrong file fails here, not in the FID.
    """
    state = load_inception_state_dict(path)
    model = FIDInceptionV3()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if k not in state and not _is_counter(k))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        raise MissingWeightsError(
            f"{str(path)!r} is not the FID Inception state dict: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of wrong shape {wrong[:3]}; {WEIGHTS_HINT}"
        )
    model.load_state_dict(state, strict=False)  # only counters can be absent (checked above)
    return model.eval().requires_grad_(False).to(device)


def convert_weights_to_safetensors(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Check and re-save FID Inception weights (e.g. pytorch-fid's `.pth`) as safetensors."""
    from safetensors.torch import save_file

    model = load_fid_inception(src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dst))
    return dst


def clean_resize(image: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """clean-fid's "clean" resize of one image: [3, H, W] float in [0, 1] (or uint8) ->
    [3, size, size] float32 on the [0, 255] scale (not clipped: bicubic may overshoot slightly).

    Quantise to uint8 (as the PNGs clean-fid reads), then resize each channel as a float32 PIL
    image with PIL's bicubic filter, i.e. `make_resizer("PIL", False, "bicubic", (299, 299))`.
    """
    from PIL import Image

    u8 = to_uint8(image).cpu().numpy()  # [3, H, W] uint8
    # A 2-D float32 array becomes a mode "F" (32-bit float) PIL image, which PIL resizes without quantising.
    channels = [
        np.asarray(Image.fromarray(c.astype(np.float32)).resize((size, size), resample=Image.BICUBIC)) for c in u8
    ]  # 3 x [size, size] float32
    return torch.from_numpy(np.stack(channels))  # [3, size, size]


def clean_preprocess(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Images [B, 3, H, W] in [0, 1] (or a list of [3, H, W] of any sizes) -> network input
    [B, 3, 299, 299] = (clean_resize(x) - 128) / 128, as clean-fid normalises."""
    resized = torch.stack([clean_resize(im) for im in images])  # [B, 3, 299, 299] in [0, 255]
    return (resized - 128.0) / 128.0


class CleanFIDInception:
    """Feature function for `compute_statistics`: images in [0, 1] -> [B, 2048] clean-fid features.

        fid_net = CleanFIDInception.from_weights("pt_inception-2015-12-05-6726825d.pth", device="cuda")
        ref = compute_statistics("mjhq30k/", fid_net, cache="mjhq30k_clean.npz", tag=fid_net.tag)
        fid = compute_statistics("generated/", fid_net, tag=fid_net.tag).frechet_distance(ref)
    """

    tag = CLEAN_FID_TAG

    def __init__(self, model: FIDInceptionV3, device: str | torch.device | None = None):
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)

    @classmethod
    def from_weights(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "CleanFIDInception":
        return cls(load_fid_inception(path), device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        x = clean_preprocess(images).to(self.device)  # [B, 3, 299, 299] in ~[-1, 1]
        return self.model(x).float().cpu()  # [B, 2048]
