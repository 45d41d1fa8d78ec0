"""What a model file or component folder holds, read from its headers and cached: the loaders' lists keep only
what each loader can load, and the queue-time checks name a missing or wrong file before anything runs.

Plain Python (no ComfyUI import): the nodes pass ComfyUI's folder paths in.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from ...mova_model.weights.checkpoint import CheckpointError
from ...mova_model.weights.sources import open_weights
from ...mova_model.weights.detect import KIND_NAMES, describe, identify
from .model_files import find_choice, outside_folder

log = logging.getLogger(__name__)

RELEASE_REPO = "OpenMOSS-Team/MOVA-360p"
# What each loader input wants, in words, and the release folder that holds it.
WANTED = {
    "video_dit": "a MOVA video expert: the release's video_dit folder (high-noise expert) or video_dit_2 folder "
                 "(low-noise expert), or a converted single file",
    "audio_dit": "the MOVA audio DiT: the release's audio_dit folder, or a converted single file",
    "dual_tower_bridge": "the MOVA dual-tower bridge: the release's dual_tower_bridge folder, or a converted "
                         "single file",
    "audio_vae": "the MOVA audio VAE: the release's audio_vae folder (DAC, config.json + weights), or a "
                 "converted single file",
}
# The model folder each kind lives in (the release's own folder names).
FOLDERS = {"video_dit": "diffusion_models", "audio_dit": "diffusion_models", "dual_tower_bridge": "diffusion_models",
           "audio_vae": "vae"}


@dataclass(frozen=True)
class Found:
    """What a file or folder holds: a MOVA ``kind``, or ``other`` (what else it certainly is), or neither
    (unknown keys); ``problem`` when it could not be read at all."""

    kind: str | None = None
    other: str | None = None
    problem: str | None = None
    description: str = ""
    audio_width: int | None = None  # the audio DiT's width, or the width the bridge expects of it


_CACHE: dict[str, tuple[tuple, Found]] = {}
_NOTED: set[tuple[str, tuple]] = set()


def _signature(path: Path) -> tuple:
    """Changes when the file, or any weight/config file of the folder, changes (size and modification time)."""
    try:
        if path.is_dir():
            return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path)
                                if e.is_file() and e.name.endswith((".safetensors", ".json"))))
        stat = path.stat()
        return (stat.st_size, stat.st_mtime_ns)
    except OSError:
        return ()


def identify_path(path: str | os.PathLike) -> Found:
    """What ``path`` (a .safetensors or .gguf file, or a component folder) holds, from its headers only; cached until the
    files change."""
    path = Path(path)
    signature = _signature(path)
    cached = _CACHE.get(str(path))
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        shapes = open_weights(path).shapes()
    except (CheckpointError, OSError, ValueError) as exc:
        found = Found(problem=str(exc))
    else:
        kind, other = identify(shapes)
        found = Found(kind=kind, other=other, description=describe(shapes), audio_width=_audio_width(kind, shapes))
    _CACHE[str(path)] = (signature, found)
    return found


def _audio_width(kind: str | None, shapes) -> int | None:
    if kind == "audio_dit":
        return shapes["patch_embedding.weight"][0]
    key = "audio_to_video_conditioners.0.inner.k.weight"
    if kind == "dual_tower_bridge" and key in shapes:
        return shapes[key][1]
    return None


def filter_choices(choices: Iterable[str], roots: Iterable[str | os.PathLike], kinds: Iterable[str],
                   loader: str) -> list[str]:
    """The choices that hold one of ``kinds``, and those whose contents cannot be told (kept, with a note in the
    log once per file): a MOVA component of another kind and a known non-MOVA file are left out."""
    roots, kinds = list(roots), set(kinds)
    kept = []
    for name in choices:
        path = find_choice(name, roots)
        found = identify_path(path) if path is not None else Found()
        if found.kind in kinds:
            kept.append(name)
        elif found.kind is None and found.other is None:
            kept.append(name)
            note = (str(path), _signature(path) if path else ())
            if note not in _NOTED:
                _NOTED.add(note)
                why = found.problem or found.description or "it could not be found"
                log.info("%s lists %s although it cannot tell what it holds (%s)", loader, name, why)
    return kept


def _download_hint(name: str, kind: str, folder: str) -> str:
    """The one-line download command for the release folder ``name`` stands for."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    release = parts[0] if len(parts) > 1 and parts[0].upper().startswith("MOVA-") else "MOVA-360p"
    leaf = parts[-1] if parts else ""
    if kind == "video_dit":
        folders = [leaf] if leaf in ("video_dit", "video_dit_2") else ["video_dit", "video_dit_2"]
    else:
        folders = [kind]
    include = " ".join(f'"{f}/*"' for f in folders)
    repo = RELEASE_REPO.replace("MOVA-360p", release) if release.upper() in ("MOVA-360P", "MOVA-720P") else RELEASE_REPO
    return f"hf download {repo} --include {include} --local-dir models/{folder}/{release}"


def check_choice(name: str, roots: Iterable[str | os.PathLike], folder: str, kind: str) -> str | None:
    """Why the widget value ``name`` cannot be loaded as ``kind`` from ComfyUI's ``folder`` (``roots``: its paths),
    naming the file, the folder and what to put there; None when it can."""
    roots = list(roots)
    if name and outside_folder(name):
        return f"'{name}' {outside_folder(name)}: pick a file from the list of models/{folder}."
    path = find_choice(name, roots)
    if path is None:
        where = ", ".join(str(r) for r in roots) or "no folder configured"
        return (f"'{name}' is not in models/{folder} (looked in {where}). Put {WANTED[kind]} there, e.g. from the "
                f"ComfyUI folder: {_download_hint(name, kind, folder)}; then press r in ComfyUI to refresh the lists.")
    found = identify_path(path)
    if found.problem:
        return f"'{name}' in models/{folder} cannot be read: {found.problem}"
    if found.kind == kind:
        return None
    return (f"'{name}' in models/{folder} holds {found.description}, but this input takes {KIND_NAMES[kind]}. "
            f"Pick {WANTED[kind]}.")


def check_tower_fit(dit_name: str, bridge_name: str, roots: Iterable[str | os.PathLike]) -> str | None:
    """Why the bridge does not fit the audio DiT (their widths, from the headers), or None."""
    roots = list(roots)
    dit, bridge = find_choice(dit_name, roots), find_choice(bridge_name, roots)
    if dit is None or bridge is None:
        return None
    width, wanted = identify_path(dit).audio_width, identify_path(bridge).audio_width
    if width is None or wanted is None or width == wanted:
        return None
    return (f"the bridge '{bridge_name}' (made for an audio DiT {wanted} wide) does not fit the audio DiT "
            f"'{dit_name}' ({width} wide): pick the audio_dit and dual_tower_bridge folders of the same MOVA release.")


def check_lora(name: str, roots: Iterable[str | os.PathLike]) -> str | None:
    """Why the LoRA ``name`` cannot be read from models/loras, or None."""
    roots = list(roots)
    if find_choice(name, roots) is not None:
        return None
    where = ", ".join(str(r) for r in roots) or "no folder configured"
    return (f"'{name}' is not in models/loras (looked in {where}). Put the LoRA there: lora_weights.pt with its "
            "lora_config.pt in a folder of its own, a trainer's .pt or a .safetensors; or connect MOVA Train LoRA's "
            "lora output to this node's lora input. Then press r in ComfyUI to refresh the lists.")
