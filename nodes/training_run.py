"""MOVA Train LoRA's logic: the loaded parts and the dataset to a training run, its checkpoints folder and
report, and the trained LoRA as the MOVA LoRA Loader reads it (plain Python; no ComfyUI import)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..mova_model.latent_dataset import LatentDataset
from ..mova_model.lora import OFFICIAL_CONFIG, OFFICIAL_WEIGHTS, LoraFile, lora_from_tensors
from ..mova_model.names import NameProblem, make_folder, path_inside
from ..mova_model.sampler import MovaTowers
from ..mova_model.training import EXPERT_NAMES, StepRecord, TrainResult, TrainSettings, train_lora
from ..mova_model.training_checkpoint import TrainingCheckpoints
from .handles import LoadedPart
from .sampling import activation_bytes, check_roles

PART_SWITCHES = (("train_high_noise", "video_dit"), ("train_low_noise", "video_dit_2"),
                 ("train_audio", "audio_dit"), ("train_bridge", "dual_tower_bridge"))
RUN_NAME, LORA_NAME = "MOVA Train LoRA's run_name", "MOVA Save LoRA's filename"


def run_folder(base: str | Path, run_name: str, what: str = RUN_NAME) -> Path:
    """The run's checkpoint folder ``base/run_name`` (sub/folders allowed, any characters the file system
    stores); a message naming ``what``, the problem and the fix for names that would leave ``base`` or that
    the file system refuses (checked before anything is written)."""
    return path_inside(base, run_name, what)


def parts_from_switches(**switches: bool) -> tuple[str, ...]:
    """LoRA components switched on (train_high_noise, train_low_noise, train_audio, train_bridge)."""
    return tuple(component for switch, component in PART_SWITCHES if switches.get(switch))


def training_memory(dataset: LatentDataset, high: LoadedPart, tower: LoadedPart, settings: TrainSettings) -> int:
    """Rough peak activation memory of one training micro-step (what ComfyUI should keep free besides the
    weights): one block's forward, plus the block inputs kept for the backward pass (all activations
    without gradient checkpointing)."""
    video_cfg, audio_cfg = high.model.config, tower.model.audio_dit.config
    batch = settings.batch_size
    video_shape = (batch, *dataset.video.shape[1:])
    audio_shape = (batch, *dataset.audio.shape[1:])
    one_block = activation_bytes(video_shape, audio_shape, video_cfg, audio_cfg, high.compute_dtype)
    if not settings.gradient_checkpointing:
        return one_block * (video_cfg.num_layers + 1)
    if settings.offload_activations:  # the block inputs kept for the backward pass wait in system RAM
        return 2 * one_block
    size = torch.empty((), dtype=high.compute_dtype).element_size()
    _, _, t, h, w = video_shape
    tokens = t * (h // video_cfg.patch_size[1]) * (w // video_cfg.patch_size[2])
    kept = batch * (tokens * video_cfg.dim + audio_shape[-1] * audio_cfg.dim) * size * 2 * (video_cfg.num_layers + 1)
    return 2 * one_block + kept


def train_parts(high: LoadedPart, low: LoadedPart, tower: LoadedPart, dataset, settings: TrainSettings,
                folder: Path, resume: bool, run_name: str, device=None,
                before_step: Callable[[int], None] | None = None,
                on_step: Callable[[StepRecord, int], None] | None = None) -> tuple[LoraFile, TrainResult]:
    """Train and return (the LoRA for the MOVA LoRA Loader, the run's result)."""
    check_roles(high, low)
    if not isinstance(dataset, LatentDataset):
        raise ValueError("dataset: expected the output of the MOVA Dataset node")
    towers = MovaTowers([high.model, low.model], tower.model.audio_dit, tower.model.bridge)
    make_folder(folder, f"{RUN_NAME} {run_name!r}")  # a file in the way, or a refused name: before any step
    checkpoints = TrainingCheckpoints(folder, allow_resume=resume)
    result = train_lora(towers, dataset, settings, checkpoints, device=device, dtype=high.compute_dtype,
                        before_step=before_step, on_step=on_step)
    steps = result.history[-1].step if result.history else 0
    lora = lora_from_tensors(result.state, {"rank": result.rank, "alpha": result.alpha},
                             f"{run_name} (trained, {steps} steps)")
    return lora, result


def report(result: TrainResult, settings: TrainSettings) -> str:
    """What the run did, for the node and the log."""
    history = result.history
    if not history:
        return "no steps trained"
    last = history[-1].step
    trained = last - result.resumed_from
    head = (f"trained steps {result.resumed_from + 1}-{last}" if trained > 0
            else f"nothing to train: the run already has {last} steps (raise steps to continue)")
    if result.resumed_from and trained > 0:
        head += f" (continued from the checkpoint at step {result.resumed_from})"
    latest = []
    for expert, name in EXPERT_NAMES.items():
        record = next((r for r in reversed(history) if r.expert == expert), None)
        if record is not None:
            latest.append(f"{name} loss {record.loss:.4g} "
                          f"(video {record.video_loss:.4g}, audio {record.audio_loss:.4g})")
    lines = [head, "; ".join(latest),
             f"rank {settings.rank}, alpha {settings.alpha:g}, parts: {', '.join(settings.parts)}"]
    if result.checkpoint:
        lines.append(f"checkpoint: {result.checkpoint}")
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def lora_save_paths(loras: Path, filename: str, overwrite: bool, official: bool) -> tuple[Path, Path | None]:
    """(the .safetensors path inside ``loras``, the official folder or None); refuses names that leave the
    folder and, unless ``overwrite``, existing files (checked before anything is written)."""
    name = filename.strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    target = path_inside(loras, name, LORA_NAME, suffixes=(".safetensors", "_official"))
    path = target.with_name(target.name + ".safetensors")
    folder = target.with_name(target.name + "_official") if official else None
    if path.is_dir():
        raise NameProblem(f"{LORA_NAME} {filename!r}: {path} is a folder: choose another filename.")
    make_folder(path.parent, f"{LORA_NAME} {filename!r}", base=loras)
    if folder is not None and folder.exists() and not folder.is_dir():
        raise NameProblem(f"{LORA_NAME} {filename!r}: {folder} is a file, not a folder: choose another filename, "
                          "or switch official_folder off.")
    if not overwrite:  # every file of the save, before any is written
        for existing in (path, *((folder / OFFICIAL_WEIGHTS, folder / OFFICIAL_CONFIG) if folder else ())):
            if existing.exists():
                raise FileExistsError(f"{existing} already exists: switch overwrite on to replace it, or choose "
                                      "another filename.")
    return path, folder
