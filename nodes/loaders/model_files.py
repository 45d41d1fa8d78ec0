"""Finding MOVA weights in ComfyUI's model folders and loading them (plain torch; no ComfyUI import).

A model folder may hold single ``.safetensors`` or ``.gguf`` files or Hugging Face component folders (a folder
with ``config.json`` and its weights, possibly sharded). Component folders are offered as one choice
(``MOVA-360p/video_dit``); the files inside them are not offered on their own. ComfyUI's own file lists leave
``.gguf`` out (its model folders know no such extension): ``gguf_files`` finds them.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

import torch

from ...mova_model.networks.ops import torch_ops
from ...mova_model.gguf.files import SUFFIX as GGUF_SUFFIX
from ...mova_model.weights.checkpoint import INDEX_NAME, CheckpointError
from ...mova_model.weights.detect import METADATA_EXPERT
from ...mova_model.weights.loading import load_component, stored_dtype
from ...mova_model.weights.sources import WEIGHT_SUFFIXES
from ...mova_model.weights.sources import open_weights
from ..handles import HIGH_NOISE, LOW_NOISE, AudioTower, LoadedPart

WEIGHT_DTYPES = {
    "default": None,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
}
# Folder names of the release (and the converter's file metadata), and which expert each one is.
EXPERT_ROLES = {"video_dit": HIGH_NOISE, "video_dit_2": LOW_NOISE}
METADATA_ROLES = {"high": HIGH_NOISE, "low": LOW_NOISE}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def weight_dtype(choice: str) -> torch.dtype | None:
    """The storage dtype for a weight_dtype widget value (None: as stored)."""
    if choice not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype {choice!r} is not one of {', '.join(WEIGHT_DTYPES)}")
    return WEIGHT_DTYPES[choice]


def compute_dtype_for(stored: torch.dtype) -> torch.dtype:
    """The dtype to compute in for weights stored as ``stored``: fp8 weights compute in bf16."""
    return torch.bfloat16 if stored in FP8_DTYPES else stored


def needs_fp8_layers(paths: Iterable[Path], dtype: torch.dtype | None) -> bool:
    """True when the networks will hold fp8 Linear weights: fp8 asked for, or a file that stores fp8
    (converted or ComfyUI scaled-fp8 files) loaded as stored."""
    if dtype in FP8_DTYPES:
        return True
    if dtype is not None:
        return False  # a float dtype dequantises stored fp8 weights
    return any(name.startswith("F8_") for path in paths for name in open_weights(path).dtypes().values())


def float_dtype(paths: Iterable[Path], dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the weights that do not become fp8 are loaded in: bf16 next to fp8, ``dtype`` when given,
    else as the first file stores them."""
    if dtype in FP8_DTYPES:
        return torch.bfloat16
    return dtype or stored_dtype(open_weights(next(iter(paths))))


def _is_component_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / INDEX_NAME).is_file()


def list_choices(filenames: Iterable[str], roots: Iterable[str | os.PathLike]) -> list[str]:
    """Widget choices from a model folder's file list (paths relative to one of ``roots``, '/'-separated):
    safetensors and gguf files, with the files of a component folder replaced by the folder itself."""
    roots = [Path(r) for r in roots]
    choices, seen_dirs = set(), {}
    for name in filenames:
        rel = PurePosixPath(name.replace("\\", "/"))
        if rel.suffix.lower() not in WEIGHT_SUFFIXES:
            continue
        parent = rel.parent
        if str(parent) != ".":
            key = str(parent)
            if key not in seen_dirs:
                seen_dirs[key] = any(_is_component_dir(root / parent) for root in roots)
            if seen_dirs[key]:
                choices.add(key)
                continue
        choices.add(str(rel))
    return sorted(choices)


def gguf_files(roots: Iterable[str | os.PathLike]) -> list[str]:
    """The .gguf files under ``roots`` (paths relative to their root, '/'-separated), links followed as ComfyUI's
    own lists follow them; hidden folders skipped."""
    found = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.lower().endswith(GGUF_SUFFIX):
                    found.add((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def outside_folder(name: str) -> str | None:
    """Why a widget value cannot name something inside a model folder (absolute, or going up with '..'), or None.
    The loaders check their own file inputs, so ComfyUI does not hold them to its list: a workflow could send any
    text."""
    for path in (PurePosixPath(name.replace("\\", "/")), PureWindowsPath(name)):
        if path.is_absolute() or path.drive or path.root:
            return "is an absolute path"
        if ".." in path.parts:
            return "goes up out of the folder ('..')"
    return None


def find_choice(name: str, roots: Iterable[str | os.PathLike]) -> Path | None:
    """The file or component folder ``name`` names inside one of ``roots``, or None (also for a name that is not
    a path inside them)."""
    if not name or outside_folder(name):
        return None
    for root in roots:
        path = Path(root) / name
        if path.exists():
            return path
    return None


def resolve_choice(name: str, roots: Iterable[str | os.PathLike], folder: str) -> Path:
    """The file or component folder a widget value names, searched in ``roots`` (ComfyUI's paths of
    ``folder``); a clear error when it is not there."""
    roots = list(roots)
    path = find_choice(name, roots)
    if path is not None:
        return path
    problem = outside_folder(name)
    if problem:
        raise FileNotFoundError(f"'{name}' {problem}: pick a file from the list of models/{folder}.")
    where = ", ".join(str(r) for r in roots) or f"(no models/{folder} folder configured)"
    raise FileNotFoundError(
        f"'{name}' is not in models/{folder} (looked in {where}): download it there, "
        "or pick another file and press 'r' in ComfyUI to refresh the lists."
    )


def expert_role(path: Path) -> str | None:
    """HIGH_NOISE for a release's video_dit folder or a converted "high" file, LOW_NOISE for video_dit_2 or
    "low", None when the file does not say."""
    if path.is_dir():
        return EXPERT_ROLES.get(path.name)
    return METADATA_ROLES.get(open_weights(path).metadata.get(METADATA_EXPERT))


def _load(path, kind, dtype, operations, device, fp8_layout=None):
    try:
        return load_component(path, kind, dtype=dtype, device=device, operations=operations, fp8_layout=fp8_layout)
    except CheckpointError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"could not load {path} as a MOVA {kind}: {exc}") from exc


def _part_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


def load_video_expert(path: Path, dtype: torch.dtype | None = None, operations=torch_ops,
                      device="cpu", fp8_layout: str | None = None) -> LoadedPart:
    """A MOVA video expert (WanDiT) from a file or component folder, with its role when the folder tells it.
    ``fp8_layout``: the fp8 keys ``operations`` take (see mova_model.weights.loading)."""
    model = _load(path, "video_dit", dtype, operations, device, fp8_layout)
    stored = _part_dtype(model)
    return LoadedPart(model, compute_dtype_for(stored), str(path), role=expert_role(Path(path)), files=(str(path),))


def load_audio_tower(dit_path: Path, bridge_path: Path, dtype: torch.dtype | None = None,
                     operations=torch_ops, device="cpu", fp8_layout: str | None = None) -> LoadedPart:
    """The audio DiT and the bridge as one AudioTower; checks that the bridge was made for this audio DiT."""
    audio_dit = _load(dit_path, "audio_dit", dtype, operations, device, fp8_layout)
    bridge = _load(bridge_path, "dual_tower_bridge", dtype, operations, device, fp8_layout)
    b, a = bridge.config, audio_dit.config
    if b.audio_hidden_dim != a.dim or b.audio_layers > a.num_layers:
        raise ValueError(
            f"the bridge {bridge_path} (audio dim {b.audio_hidden_dim}, {b.audio_layers} layers) does not fit the "
            f"audio DiT {dit_path} (dim {a.dim}, {a.num_layers} layers): load both from the same MOVA release."
        )
    stored = _part_dtype(audio_dit)
    return LoadedPart(AudioTower(audio_dit, bridge), compute_dtype_for(stored), f"{dit_path} + {bridge_path}",
                      files=(str(dit_path), str(bridge_path)))


def load_audio_vae(path: Path, dtype: torch.dtype | None = None, operations=torch_ops, device="cpu",
                   fp8_layout: str | None = None) -> LoadedPart:
    """MOVA's DAC audio codec from a file or component folder."""
    model = _load(path, "audio_vae", dtype, operations, device, fp8_layout)
    return LoadedPart(model, compute_dtype_for(_part_dtype(model)), str(path))
