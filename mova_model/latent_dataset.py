"""A latent training dataset: clips already encoded the way MOVA's towers see them, in one .safetensors file.

Tensors (N clips, all the same size): ``video`` [N,16,T,h,w] normalised Wan 2.1 latents, ``condition``
[N,20,T,h,w] the image-to-video condition of each clip's first frame (mask + latents, as in sampling),
``audio`` [N,C,L] DAC latents, ``text`` [N,Lt,D] text-encoder states. The metadata holds the sizes it was
made for, the clips (name, caption, source fps, whether frames were resampled) and a fingerprint of
everything it was made from (the cache key).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .saving import save_safetensors

FORMAT = "mova-latent-dataset/1"
TENSORS = ("video", "condition", "audio", "text")


@dataclass
class LatentDataset:
    """N encoded clips (float32, CPU) and what they were made for."""

    video: torch.Tensor
    condition: torch.Tensor
    audio: torch.Tensor
    text: torch.Tensor
    width: int
    height: int
    frames: int
    fps: float
    sample_rate: int
    hop_length: int
    clips: list[dict] = field(default_factory=list)
    fingerprint: str = ""

    def __post_init__(self):
        n = self.video.shape[0]
        if any(getattr(self, name).shape[0] != n for name in TENSORS):
            raise ValueError("the dataset's tensors hold different numbers of clips: " + ", ".join(
                f"{name} {tuple(getattr(self, name).shape)}" for name in TENSORS))
        if n == 0:
            raise ValueError("the dataset holds no clips")

    def __len__(self) -> int:
        return self.video.shape[0]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        """(video, condition, audio, text) of these clips, stacked into fresh float32 tensors."""
        return tuple(torch.stack([getattr(self, name)[i] for i in indices]).float() for name in TENSORS)

    @property
    def latent_rate(self) -> float:
        """Audio latents per second."""
        return self.sample_rate / self.hop_length


def save_latent_dataset(dataset: LatentDataset, path: str | os.PathLike) -> Path:
    """Write ``dataset`` to ``path`` through ``atomic_write``: a crash or a full disk never leaves half a dataset
    (a WriteError names the file and the fix)."""
    path = Path(path)
    meta = {
        "format": FORMAT, "width": dataset.width, "height": dataset.height, "frames": dataset.frames,
        "fps": dataset.fps, "sample_rate": dataset.sample_rate, "hop_length": dataset.hop_length,
        "clips": dataset.clips, "fingerprint": dataset.fingerprint,
    }
    tensors = {name: getattr(dataset, name).float().contiguous() for name in TENSORS}
    return save_safetensors(tensors, path, {"mova_dataset": json.dumps(meta)}, what="the dataset cache")


def read_dataset_metadata(path: str | os.PathLike) -> dict | None:
    """The metadata of a dataset file, or None when it is not one (or cannot be read)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get("mova_dataset", "null"))
    except Exception:
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def load_latent_dataset(path: str | os.PathLike) -> LatentDataset:
    """Read a dataset written by ``save_latent_dataset``."""
    meta = read_dataset_metadata(path)
    if meta is None:
        raise ValueError(f"{path} is not a MOVA latent dataset ({FORMAT}); build it again with the MOVA Dataset node")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        tensors = {name: f.get_tensor(name) for name in TENSORS}
    sizes = {k: meta[k] for k in ("width", "height", "frames", "fps", "sample_rate", "hop_length")}
    return LatentDataset(**tensors, **sizes, clips=meta.get("clips", []), fingerprint=meta.get("fingerprint", ""))
