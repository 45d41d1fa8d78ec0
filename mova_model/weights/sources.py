"""Where a component's weights come from: safetensors (a file, a component folder, a shard index, a release
folder) or a single .gguf file; ``open_weights`` opens either as a ``Checkpoint``."""

from __future__ import annotations

import os
from pathlib import Path

from ..gguf.files import SUFFIX as GGUF_SUFFIX
from ..gguf.files import GGUFCheckpoint, open_gguf
from .checkpoint import Checkpoint, open_checkpoint

WEIGHT_SUFFIXES = (".safetensors", GGUF_SUFFIX)


def is_gguf(ckpt: Checkpoint) -> bool:
    return isinstance(ckpt, GGUFCheckpoint)


def open_weights(path: str | os.PathLike, component: str | None = None) -> Checkpoint:
    """A component's weights from a .gguf file, or whatever ``open_checkpoint`` opens."""
    if Path(path).suffix.lower() == GGUF_SUFFIX and not Path(path).is_dir():
        return open_gguf(path)
    return open_checkpoint(path, component)
