"""MOVA Dataset's logic: clips -> encoded latents, cached on disk (plain Python; the encoders come in as
functions, so this runs without ComfyUI).

Every clip is checked before anything is encoded, and all problems are reported at once. The cache file is
named after a fingerprint of everything the latents depend on (the clip files' names, sizes and times, the
captions, the sizes asked for, and fingerprints of the three encoders); the same inputs load the file
instead of encoding again.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..mova_model.latent_dataset import LatentDataset, load_latent_dataset, read_dataset_metadata, save_latent_dataset
from ..mova_model.latents import normalise_video_latents
from ..mova_model.names import make_folder
from ..mova_model.sizes import audio_num_samples, check_video_size
from ..mova_model.training_guard import TENSOR_LABELS, listed, nonfinite_clips, nonfinite_values
from .clips import ClipError, find_clips, inspect_clip, read_clip
from .condition import build_condition, condition_frames

FPS_MODES = ("refuse", "resample")
CACHE_VERSION = 1
SHOWN = 8  # problem clips named in the error (all of them go to the log)
STEM_CHARS = 64  # of the clip folder's name in the cache file's name
LABELS = dict(TENSOR_LABELS)  # encoded tensor -> its name in messages


@dataclass(frozen=True)
class DatasetRequest:
    """What to build: the clip folder and the size every clip is fitted to."""

    folder: Path
    width: int
    height: int
    frames: int
    fps: float
    fps_mode: str = "refuse"


@dataclass
class Encoders:
    """The three encoders: ``video`` frames [F,H,W,3] 0..1 -> raw Wan 2.1 latents [1,16,T,h,w]; ``audio``
    waveform [1,1,S] -> DAC latents [1,C,L]; ``text`` caption -> states [1,Lt,D]. ``fingerprint`` identifies
    them for the cache; ``sample_rate`` / ``hop_length`` describe the audio codec."""

    video: Callable[[torch.Tensor], torch.Tensor]
    audio: Callable[[torch.Tensor], torch.Tensor]
    text: Callable[[str], torch.Tensor]
    sample_rate: int
    hop_length: int
    fingerprint: str


def module_fingerprint(module: torch.nn.Module) -> str:
    """A cheap identity of a network's weights: every tensor's name, shape, dtype and a strided sample of
    its values (no full pass over billions of weights)."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        try:
            flat = tensor.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 32)][:32].float().cpu()
            digest.update(sample.numpy().tobytes())
        except Exception:  # tensors that cannot be read here (meta, exotic subclasses): shape only
            pass
    return digest.hexdigest()


def output_fingerprint(output: torch.Tensor) -> str:
    """An identity of an encoder from its output for a fixed probe: shape and rounded summary statistics
    (robust to the last-bit differences of GPU kernels)."""
    x = output.detach().float().cpu()
    stats = [x.mean(), x.std() if x.numel() > 1 else x.new_zeros(()), x.abs().mean()]
    return f"{tuple(x.shape)}:" + ",".join(f"{float(s):.4g}" for s in stats)


def request_problems(request: DatasetRequest) -> None:
    """Raise on sizes MOVA cannot use (before any clip is opened)."""
    check_video_size(request.height, request.width, request.frames)
    if request.fps <= 0:
        raise ValueError(f"fps must be positive, got {request.fps}")
    if request.fps_mode not in FPS_MODES:
        raise ValueError(f"fps_mode {request.fps_mode!r} is not one of {', '.join(FPS_MODES)}")


def check_clips(request: DatasetRequest, sample_rate: int):
    """(checks of the usable clips, notes) after inspecting every clip; raises one ClipError naming every
    problem clip when there are any."""
    clips, problems = find_clips(request.folder)
    checks, notes = [], []
    for clip in clips:
        check = inspect_clip(clip, request.frames, request.fps, sample_rate, request.fps_mode == "resample")
        problems += [f"{clip.name}: {p}" for p in check.problems]
        notes += [f"{clip.name}: {n}" for n in check.notes]
        checks.append(check)
    if problems:
        shown = "\n".join(f"- {p}" for p in problems[:SHOWN])
        more = f"\n(and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise ClipError(f"{len(problems)} problem(s) with the clips in {request.folder}; nothing was encoded:\n"
                        f"{shown}{more}")
    return checks, notes


def dataset_fingerprint(request: DatasetRequest, checks, encoders: Encoders) -> str:
    """The cache key: clip files (name, size, modification time), captions, sizes and encoders."""
    items = []
    for check in checks:
        stat = check.clip.path.stat()
        items.append([check.clip.name, stat.st_size, stat.st_mtime_ns, check.clip.caption])
    key = {"version": CACHE_VERSION, "clips": items, "width": request.width, "height": request.height,
           "frames": request.frames, "fps": request.fps, "fps_mode": request.fps_mode,
           "encoders": encoders.fingerprint, "sample_rate": encoders.sample_rate}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, request: DatasetRequest, fingerprint: str) -> Path:
    """``<folder name>_<W>x<H>x<F>_<fps>fps_<fingerprint[:12]>.safetensors`` in ``cache_dir``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.folder.name)[:STEM_CHARS].strip("._") or "clips"
    size = f"{request.width}x{request.height}x{request.frames}_{request.fps:g}fps"
    return cache_dir / f"{stem}_{size}_{fingerprint[:12]}.safetensors"


def encode_clip(check, request: DatasetRequest, encoders: Encoders) -> dict[str, torch.Tensor]:
    """One clip -> video [16,T,h,w] (normalised), condition [20,T,h,w], audio [C,L], text [Lt,D]."""
    r = request
    frames, wave = read_clip(check.clip, r.width, r.height, r.frames, r.fps, encoders.sample_rate, check.source_fps)
    raw = encoders.video(frames)
    expected = (1, 16, (r.frames - 1) // 4 + 1, r.height // 8, r.width // 8)
    if tuple(raw.shape) != expected:
        raise ValueError(f"the VAE turned {r.frames} frames of {r.width}x{r.height} into latents {tuple(raw.shape)}, "
                         f"MOVA needs {expected}: connect the Wan 2.1 VAE (wan_2.1_vae.safetensors).")
    condition = build_condition(encoders.video(condition_frames(frames[0], r.width, r.height, r.frames)),
                                r.width, r.height, r.frames)
    audio = encoders.audio(wave.reshape(1, 1, -1))
    length = (audio_num_samples(r.frames, r.fps, encoders.sample_rate) - 1) // encoders.hop_length + 1
    if audio.dim() != 3 or audio.shape[-1] != length:
        raise ValueError(f"the audio VAE returned latents {tuple(audio.shape)} for {wave.numel()} samples, "
                         f"{length} steps were expected: connect MOVA's audio VAE.")
    text = encoders.text(check.clip.caption)
    return {"video": normalise_video_latents(raw.cpu())[0], "condition": condition[0].float(),
            "audio": audio[0].float().cpu(), "text": text[0].float().cpu()}


def build_dataset(request: DatasetRequest, encoders: Encoders, cache_dir: Path,
                  progress: Callable[[int, int], None] | None = None) -> tuple[LatentDataset, Path, list[str]]:
    """(dataset, its cache file, report lines). Loads the cache when the fingerprint matches, else checks and
    encodes every clip (``progress(done, total)`` after each) and writes the cache."""
    request_problems(request)
    checks, notes = check_clips(request, encoders.sample_rate)
    fingerprint = dataset_fingerprint(request, checks, encoders)
    path = cache_path(Path(cache_dir), request, fingerprint)
    meta = read_dataset_metadata(path) if path.exists() else None
    if meta is not None and meta.get("fingerprint") == fingerprint:
        dataset = load_latent_dataset(path)
        if not nonfinite_clips(dataset):  # a cache written before clips were checked is encoded again
            return dataset, path, [f"{len(dataset)} clips from the cache {path.name} (inputs unchanged)", *notes]
    make_folder(path.parent, "MOVA Dataset's cache folder")  # before any clip is encoded
    encoded, broken = [], []
    for i, check in enumerate(checks):
        try:
            encoded.append(encode_clip(check, request, encoders))
        except ClipError:
            raise
        except ValueError as exc:
            raise ValueError(f"{check.clip.name}: {exc}") from exc
        bad = nonfinite_values({LABELS[k]: v for k, v in encoded[-1].items()})
        if bad:
            broken.append(f"{check.clip.name}: {', '.join(bad)}")
        if progress is not None:
            progress(i + 1, len(checks))
    if broken:
        raise ClipError(
            f"{len(broken)} clip(s) in {request.folder} encode to NaN or infinite values; nothing was cached:\n"
            f"{listed(broken)}\nRe-encode those clips (e.g. ffmpeg -i clip.mp4 -c:v libx264 -c:a aac fixed.mp4) or "
            "take them out of the folder. When only caption states are broken, the text encoder overflowed (start "
            "ComfyUI with --fp32-text-enc); when every clip's video latents are, the VAE did (--fp32-vae).")
    longest = max(e["text"].shape[0] for e in encoded)
    for e in encoded:  # prompts of different token counts: zero rows after the last token, as the encoder pads
        e["text"] = F.pad(e["text"], (0, 0, 0, longest - e["text"].shape[0]))
    clips = [{"name": c.clip.name, "caption": c.clip.caption, "source_fps": c.source_fps, "resampled": c.resampled}
             for c in checks]
    dataset = LatentDataset(
        **{k: torch.stack([e[k] for e in encoded]) for k in ("video", "condition", "audio", "text")},
        width=request.width, height=request.height, frames=request.frames, fps=float(request.fps),
        sample_rate=encoders.sample_rate, hop_length=encoders.hop_length, clips=clips, fingerprint=fingerprint)
    save_latent_dataset(dataset, path)
    return dataset, path, [f"{len(dataset)} clips encoded to {path.name}", *notes]

