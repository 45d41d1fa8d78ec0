"""Finding and validating safetensors weights: a single file, a sharded component folder, or a release.

Nothing here reads tensor data eagerly: ``Checkpoint`` memory-maps the files and hands out one
tensor at a time, so loading never holds two full copies of a component.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch
from safetensors import safe_open

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae")
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = WEIGHTS_NAME + ".index.json"
# Prefixes that other tools put in front of a component's keys.
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as asked; the message names the file and the fix."""


# Bytes per element of the safetensors dtypes whose size is known here (others are refused later by name).
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entries(path: Path, header: dict, data_size: int) -> None:
    """Every tensor entry has a dtype, a shape and data offsets of the right types; the offsets tile the data
    in order (no gap, no overlap), each sized dtype x shape; raises CheckpointError naming the key."""
    def damaged(key: str, what: str):
        return CheckpointError(f"{path}: tensor {key!r} {what}: the file is damaged or not a safetensors file; "
                               "download it again.")

    spans = []
    for key, entry in header.items():
        if not isinstance(entry, dict):
            raise damaged(key, f"has a header entry of type {type(entry).__name__}, not {{dtype, shape, data_offsets}}")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise damaged(key, f"has dtype {dtype!r}, not a dtype name")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise damaged(key, f"has shape {shape!r}, not a list of sizes")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets) \
                or offsets[1] < offsets[0]:
            raise damaged(key, f"has data_offsets {offsets!r}, not [begin, end]")
        size = DTYPE_SIZES.get(dtype)
        if size is not None and offsets[1] - offsets[0] != math.prod(shape) * size:
            raise damaged(key, f"is {dtype} {shape} ({math.prod(shape) * size} bytes) but its offsets hold "
                               f"{offsets[1] - offsets[0]} bytes")
        spans.append((offsets[0], offsets[1], key))
    position = 0
    for begin, end, key in sorted(spans):
        if begin != position:
            raise damaged(key, f"starts at byte {begin} of the data where byte {position} was expected (offsets "
                               "overlap or leave a gap)")
        position = end
    if position > data_size:
        raise CheckpointError(
            f"{path} is truncated: its header promises {position} bytes of tensor data but the file holds "
            f"{data_size}. The download was interrupted: download this file again."
        )
    if position < data_size:
        raise CheckpointError(f"{path} has {data_size - position} bytes after its last tensor: the file is damaged "
                              "or not a safetensors file; download it again.")


def read_header(path: Path) -> tuple[dict, dict]:
    """(tensor entries, metadata) of a safetensors file, validated: a CheckpointError naming the file (and the
    tensor) when it is cut short or its header does not describe its data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is empty or truncated ({size} bytes): download it again.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8 or header_len > MAX_HEADER_BYTES:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file (header of {header_len} bytes, file of {size}): "
                "download it again."
            )
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not a valid safetensors file ({exc}): download it again.") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file (its header is a JSON "
                              f"{type(header).__name__}): download it again.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"{path}: its __metadata__ is not a table of texts: the file is damaged; download it again.")
    _check_entries(path, header, size - 8 - header_len)
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
    config_path: str | None = None      # where that config.json is
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


def _inside(name: str) -> bool:
    """Whether a shard name stays inside its index's folder: relative, no '..', no drive (on any OS)."""
    for path in (PurePosixPath(name), PureWindowsPath(name)):
        if path.is_absolute() or path.anchor or ".." in path.parts:
            return False
    return bool(name.strip())


def _open_index(index_path: Path, config: dict | None) -> Checkpoint:
    try:
        data = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{index_path} is not a valid shard index ({exc}): download it again.") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path} is not a valid shard index (no weight_map of tensor names to shard "
                              "files): download it again.")
    shards: dict[str, set[str]] = {}
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not _inside(shard):
            raise CheckpointError(
                f"{index_path} names shard {shard!r} for {key}, which is not a file inside {index_path.parent}: "
                "an index may only name shards beside it; download the index again from the release."
            )
        shards.setdefault(shard, set()).add(key)
    missing = [s for s in sorted(shards) if not (index_path.parent / s).is_file()]
    if missing:
        raise CheckpointError(
            f"{index_path.parent} is missing shard(s) {', '.join(missing)} listed in {index_path.name}: "
            "download the missing files into that folder."
        )
    ckpt = Checkpoint(files=[index_path.parent / s for s in sorted(shards)], config=config,
                      config_path=_config_path(index_path.parent, config))
    for shard in sorted(shards):
        _add_file(ckpt, index_path.parent / shard, shards[shard])
    return ckpt


def _config_path(folder: Path, config: dict | None) -> str | None:
    return str(folder / "config.json") if config is not None else None


def _read_config(folder: Path) -> dict | None:
    """A component folder's config.json (None when there is none); a CheckpointError naming it when it is not
    a JSON object."""
    cfg = folder / "config.json"
    if not cfg.exists():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cfg} is not valid JSON ({exc}): download the component's config.json again.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg} holds a JSON {type(data).__name__}, not a config object: download the "
                              "component's config.json again.")
    return data


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
        ckpt = Checkpoint(files=files, config=config, config_path=_config_path(path, config))
        _add_file(ckpt, files[0])
        return ckpt
    if path.name.endswith(".index.json"):
        return _open_index(path, _read_config(path.parent))
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path} is not a .safetensors or .gguf file: convert it, or pick the MOVA weights.")
    ckpt = Checkpoint(files=[path])
    _add_file(ckpt, path)
    return ckpt
