"""Stopping a LoRA training run before a NaN or an infinity can do harm.

The dataset is checked clip by clip before the first step; each micro-batch's loss before its backward pass;
the gradient norm before the optimizer step; the LoRA and its optimizer state before a checkpoint is written
and before the result is handed on. A failed check raises ``TrainingStopped`` naming the step, the expert, the
clips and the fix: nothing of that step is saved, and no checkpoint is written or rotated away, so the newest
checkpoint on disk is the last finite one and a resumed run starts from it.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

TENSOR_LABELS = (("video", "video latents"), ("condition", "first-frame condition"), ("audio", "audio latents"),
                 ("text", "caption states"))
SHOWN = 8  # clips named in one message


class TrainingStopped(ValueError):
    """A run stopped because a value is not finite; the message names the step, the clips and the fix."""


def clip_name(dataset, index: int) -> str:
    """The file name a dataset's clip came from (``clip <index>`` for datasets built without names)."""
    clips = getattr(dataset, "clips", None) or []
    entry = clips[index] if index < len(clips) else None
    return str(entry.get("name")) if isinstance(entry, dict) and entry.get("name") else f"clip {index}"


def nonfinite_values(tensors: dict[str, torch.Tensor]) -> list[str]:
    """'<label> (k of n values)' for each tensor holding NaN or infinite values."""
    out = []
    for label, tensor in tensors.items():
        bad = int((~torch.isfinite(tensor)).sum()) if tensor.is_floating_point() else 0
        if bad:
            out.append(f"{label} ({bad} of {tensor.numel()} values)")
    return out


def nonfinite_clips(dataset) -> list[str]:
    """'<clip>: <what> (k of n values)' for every clip of a ``LatentDataset`` holding NaN or infinite values."""
    out = []
    for i in range(len(dataset)):
        bad = nonfinite_values({label: getattr(dataset, name)[i] for name, label in TENSOR_LABELS})
        if bad:
            out.append(f"{clip_name(dataset, i)}: {', '.join(bad)}")
    return out


def listed(lines: list[str]) -> str:
    more = f"\n(and {len(lines) - SHOWN} more)" if len(lines) > SHOWN else ""
    return "\n".join(f"- {line}" for line in lines[:SHOWN]) + more


def check_dataset_finite(dataset) -> None:
    """Raise a TrainingStopped naming the clips of ``dataset`` that hold NaN or infinite values."""
    bad = nonfinite_clips(dataset)
    if bad:
        raise TrainingStopped(
            f"the dataset holds NaN or infinite values in {len(bad)} clip(s); nothing was trained:\n{listed(bad)}\n"
            "Build the dataset again with MOVA Dataset, which refuses such clips and names them (re-encode or "
            "remove those clips).")


class StepGuard:
    """The checks of one run. ``checkpoints`` (a TrainingCheckpoints or None) tells which checkpoint a stopped
    run continues from."""

    def __init__(self, dataset, settings, checkpoints=None):
        self.dataset, self.settings, self.checkpoints = dataset, settings, checkpoints

    def _stop(self, step: int, context: str, problem: str):
        last = getattr(self.checkpoints, "latest_good", None)
        rate = f"lower learning_rate (now {self.settings.learning_rate:g})"
        if last is not None:
            keep = (f"the newest checkpoint, {Path(last).name} in {Path(last).parent}, holds finite weights: {rate} "
                    "and queue the run again to continue from it")
        elif self.checkpoints is not None:
            keep = (f"no checkpoint was written yet (checkpoint_every {self.settings.checkpoint_every}): {rate} and "
                    "start again")
        else:
            keep = f"{rate} and start again"
        raise TrainingStopped(
            f"training stopped at step {step} of {self.settings.steps} ({context}): {problem}. Nothing of this step "
            f"was saved; {keep}. If it stops at the same clip again, that clip is the cause: check it (re-encode "
            "it) or leave it out of the folder.")

    def _context(self, expert_name: str, indices) -> str:
        clips = ", ".join(dict.fromkeys(clip_name(self.dataset, i) for i in indices))
        return f"{expert_name} expert, clip(s) {clips}"

    def loss(self, step: int, expert_name: str, indices, video_loss: torch.Tensor, audio_loss: torch.Tensor,
             timestep: float) -> None:
        """Stop when a micro-batch's loss is not finite (before its backward pass)."""
        video, audio = float(video_loss.detach()), float(audio_loss.detach())
        if not (math.isfinite(video) and math.isfinite(audio)):
            self._stop(step, self._context(expert_name, indices),
                       f"the loss is not finite at timestep {timestep:g} (video {video:g}, audio {audio:g})")

    def gradients(self, step: int, expert_name: str, indices, norm: torch.Tensor) -> None:
        """Stop when the LoRA's gradient norm is not finite (before the optimizer step)."""
        value = float(norm.detach() if isinstance(norm, torch.Tensor) else norm)
        if not math.isfinite(value):
            self._stop(step, self._context(expert_name, indices),
                       f"the LoRA's gradients are not finite (norm {value:g}) although the loss is")

    def weights(self, step: int, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Stop when the LoRA or its optimizer state holds a NaN or infinity (before ``where``)."""
        bad = [key for key, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            self._stop(step, "after the optimizer step", f"{len(bad)} LoRA or optimizer tensors hold NaN or "
                       f"infinite values (first: {bad[0]}) before {where}")
