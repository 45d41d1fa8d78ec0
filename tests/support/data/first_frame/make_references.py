"""Writes references.safetensors: first frames fitted by the official MOVA code, for test_first_frame.py.

Run it with a checkout of OpenMOSS/MOVA (only its mova/datasets/transforms/custom.py is used; it needs numpy
and Pillow, nothing else of MOVA):

    python tests/support/data/first_frame/make_references.py /path/to/MOVA

The pictures are made here from a seed (smooth gradients, hard edges and noise, so that the crop offsets
and the resampling filter both show); each case stores the picture, the target size and the official
result, all uint8.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
# (picture width, height) -> (target width, height): down- and up-scaling, wide and tall pictures and targets,
# odd sizes (the crop size truncates), the same aspect ratio, a crop with no resize, and no change at all.
CASES = [
    ((150, 100), (64, 64)),
    ((80, 120), (64, 64)),
    ((120, 80), (32, 48)),
    ((37, 23), (64, 48)),
    ((20, 50), (48, 32)),
    ((97, 61), (48, 32)),
    ((61, 97), (32, 48)),
    ((96, 64), (48, 32)),
    ((60, 32), (48, 32)),
    ((48, 32), (48, 32)),
    ((33, 77), (80, 16)),
    ((130, 73), (112, 64)),
]


def picture(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic RGB test picture [height, width, 3] uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), ((x + y) % 7) / 6.0], axis=-1) * 200.0
    base[(x // 5 + y // 5) % 2 == 0] += 40.0
    noise = rng.integers(-15, 16, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def load_official(mova_root: Path):
    path = mova_root / "mova" / "datasets" / "transforms" / "custom.py"
    spec = importlib.util.spec_from_file_location("mova_official_custom", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.crop_and_resize


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mova", type=Path, help="a checkout of OpenMOSS/MOVA")
    args = parser.parse_args(argv)
    from PIL import Image
    crop_and_resize = load_official(args.mova)
    tensors = {}
    for i, ((w, h), (tw, th)) in enumerate(CASES):
        src = picture(w, h, seed=i)
        out = np.asarray(crop_and_resize(Image.fromarray(src), height=th, width=tw).convert("RGB"))
        assert out.shape == (th, tw, 3), out.shape
        tensors[f"case{i}_picture"] = torch.from_numpy(src.copy())
        tensors[f"case{i}_target"] = torch.tensor([tw, th], dtype=torch.int32)
        tensors[f"case{i}_official"] = torch.from_numpy(out.copy())
    import PIL
    save_file(tensors, str(HERE / "references.safetensors"),
              metadata={"cases": str(len(CASES)), "pillow": PIL.__version__})
    print(f"wrote {len(CASES)} cases with Pillow {PIL.__version__}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
