"""Finding and validating safetensors weights: a single file, a sharded component folder, or a release.

Nothing here reads tensor data eagerly: ``Checkpoint`` memory-maps the files and hands out one
tensor at a time, so loading never holds two full copies of a component.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
# Prefixes that other tools put in front of a component's keys.
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and the fix."""


def read_header(path: Path) -> tuple[dict, dict]:
    """(tensor entries, metadata) of a safetensors file; raises CheckpointError if it is cut short."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is empty or truncated ({size} bytes): download it again.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file (header of {header_len} bytes, file of {size}): "
                "download it again."
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not a valid safetensors file ({exc}): download it again.") from exc
    metadata = header.pop("__metadata__", None) or {}
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"{path} is truncated: its header promises {8 + header_len + end} bytes but the file has {size}. "
            "The download was interrupted: download this file again."
        )
    return header, metadata


def strip_prefix(key: str) -> str:
    for prefix in KEY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


@dataclass
class Checkpoint:
    """The weights of one component, possibly spread over shards, opened lazily."""

    files: list[Path]
    config: dict | None = None          # the component's config.json, when there is one
    metadata: dict = field(default_factory=dict)
    _where: dict[str, tuple[Path, str]] = field(default_factory=dict)  # key -> (file, stored key)
    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    _dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.files[0].parent if len(self.files) > 1 else self.files[0])

    def keys(self) -> list[str]:
        return list(self._where)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def stored_dtypes(self) -> set[str]:
        return set(self._dtypes.values())

    def dtypes(self) -> dict[str, str]:
        """Key -> safetensors dtype name as stored ('BF16', 'F8_E4M3', ...)."""
        return dict(self._dtypes)

    def locate(self, key: str) -> tuple[Path, str]:
        """(file, key as stored in that file) of a tensor."""
        return self._where[key]

    def tensors(self, keys=None):
        """Yield (key, tensor) one at a time, shard by shard, memory-mapped."""
        wanted = set(self._where if keys is None else keys)
        by_file: dict[Path, list[str]] = {}
        for key in self._where:
            if key in wanted:
                by_file.setdefault(self._where[key][0], []).append(key)
        for path, keys_in_file in by_file.items():
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for key in keys_in_file:
                    yield key, f.get_tensor(self._where[key][1])

    def get(self, key: str) -> torch.Tensor:
        path, stored = self._where[key]
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.get_tensor(stored)


def _add_file(ckpt: Checkpoint, path: Path, expected_keys: set[str] | None = None) -> None:
    header, metadata = read_header(path)
    if expected_keys is not None:
        missing = sorted(expected_keys - set(header))
        if missing:
            raise CheckpointError(
                f"shard {path} lacks {len(missing)} tensors its index lists (first: {missing[:3]}): "
                "the shard is from another download; download the whole folder again."
            )
    for stored, entry in header.items():
        key = strip_prefix(stored)
        ckpt._where[key] = (path, stored)
        ckpt._shapes[key] = tuple(entry["shape"])
        ckpt._dtypes[key] = entry["dtype"]
    ckpt.metadata.update(metadata)


def _open_index(index_path: Path, config: dict | None) -> Checkpoint:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{index_path} is not a valid shard index ({exc}): download it again.") from exc
    shards: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        shards.setdefault(shard, set()).add(key)
    missing = [s for s in sorted(shards) if not (index_path.parent / s).exists()]
    if missing:
        raise CheckpointError(
            f"{index_path.parent} is missing shard(s) {', '.join(missing)} listed in {index_path.name}: "
            "download the missing files into that folder."
        )
    ckpt = Checkpoint(files=[index_path.parent / s for s in sorted(shards)], config=config)
    for shard in sorted(shards):
        _add_file(ckpt, index_path.parent / shard, shards[shard])
    return ckpt


def _read_config(folder: Path) -> dict | None:
    cfg = folder / "config.json"
    return json.loads(cfg.read_text()) if cfg.exists() else None


def open_checkpoint(path: str | os.PathLike, component: str | None = None) -> Checkpoint:
    """Open a component from a ``.safetensors`` file, a component folder, a shard index, or a
    release folder (with ``model_index.json``; then ``component`` names the sub-folder)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: check the path or download the file.")
    if path.is_dir() and (path / "model_index.json").exists():
        if component is None:
            raise CheckpointError(
                f"{path} is a whole MOVA release: say which component to load ({', '.join(COMPONENTS)})."
            )
        if not (path / component).is_dir():
            raise CheckpointError(f"{path} has no '{component}' folder: download that component of the release.")
        path = path / component
    if path.is_dir():
        config = _read_config(path)
        if (path / INDEX_NAME).exists():
            return _open_index(path / INDEX_NAME, config)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{path} holds no .safetensors weights: download the component's weights.")
        if len(files) > 1 and any("-of-" in f.name for f in files):
            raise CheckpointError(
                f"{path} holds shards but no {INDEX_NAME}: download the index file too."
            )
        if len(files) > 1:
            raise CheckpointError(
                f"{path} holds several .safetensors files ({', '.join(f.name for f in files)}): "
                "keep one component per folder, or pick the file itself."
            )
        ckpt = Checkpoint(files=files, config=config)
        _add_file(ckpt, files[0])
        return ckpt
    if path.name.endswith(".index.json"):
        return _open_index(path, _read_config(path.parent))
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is not a .safetensors file: convert it, or pick the safetensors weights.")
    ckpt = Checkpoint(files=[path])
    _add_file(ckpt, path)
    return ckpt
