"""Sample batches in the format of ADM's reference evaluator (guided-diffusion `evaluations/evaluator.py`).

The evaluator reads `np.load(path)["arr_0"]`: uint8 images [N, H, W, 3]. DiT's Table 2 numbers (and the
paper's) come from 50,000 such samples. `write_adm_npz` streams PNGs into that file one at a time (the .npz is
a zip holding `arr_0.npy`), so 50k samples at 256 px (9.8 GB) never sit in memory at once.

    python evaluator.py VIRTUAL_imagenet256_labeled.npz out/npz/ilf-10.npz
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ilf.errors import ILFError


def write_adm_npz(files: Sequence[str | Path], path: str | Path) -> Path:
    """Pack equally sized RGB images (in the given order) into `path` as `arr_0` [N, H, W, 3] uint8."""
    from PIL import Image

    files = [Path(f) for f in files]
    if not files:
        raise ILFError("no images to pack into an .npz")
    with Image.open(files[0]) as im:
        w, h = im.size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(files), h, w, 3)}
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            for file in files:
                with Image.open(file) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
                if arr.shape != (h, w, 3):
                    raise ILFError(f"{file} is {arr.shape[1]}x{arr.shape[0]}, the others {w}x{h}; ADM batches need "
                                   "one size")
                f.write(np.ascontiguousarray(arr).tobytes())
    tmp.replace(path)
    return path
