"""Checkpoints of a LoRA training run: ``step_NNNNNN.safetensors`` files in the run's folder.

One file holds the LoRA (official key layout, float32, readable by the MOVA LoRA Loader; the optimizer
keys are then listed as skipped), the AdamW state (``optimizer.<param>.<name>``) and, in the metadata,
the step, the settings a continuation must share, the dataset fingerprint and the loss history.
Files are written through a temporary name and renamed, so a crash or Cancel while saving leaves the
previous checkpoint intact; the newest ``keep`` files are kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "mova-lora-checkpoint/1"
NAME = re.compile(r"^step_(\d+)\.safetensors$")
OPTIMIZER_PREFIX = "optimizer."


class TrainingCheckpoints:
    """The checkpoints of one run in ``folder``. ``allow_resume`` False refuses a folder that has some
    (so an earlier run is never overwritten by accident)."""

    def __init__(self, folder: str | os.PathLike, allow_resume: bool = True, keep: int = 2):
        self.folder = Path(folder)
        self.allow_resume = allow_resume
        self.keep = max(1, keep)
        self.last_saved: Path | None = None

    def files(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := NAME.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        files = self.files()
        return files[-1][1] if files else None

    def save(self, step: int, settings, fingerprint: str, lora, optimizer, history) -> Path:
        """Write the checkpoint of ``step`` and drop all but the newest ``keep``."""
        tensors = lora.state_dict()
        state = optimizer.state_dict()
        for index, entries in state["state"].items():
            for name, value in entries.items():
                tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        metadata = {
            "format": FORMAT, "step": str(step), "rank": str(lora.rank), "alpha": str(lora.alpha),
            "settings": json.dumps(dataclasses.asdict(settings)), "dataset": fingerprint,
            "history": json.dumps([dataclasses.asdict(r) for r in history]),
            "param_keys": json.dumps([k for k, _ in lora.named_parameters()]),
            "param_groups": json.dumps(groups),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"step_{step:06d}.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
        self.last_saved = path
        for _, old in self.files()[:-self.keep]:
            old.unlink(missing_ok=True)
        return path

    def resume(self, settings, fingerprint: str, lora, optimizer):
        """Load the latest checkpoint into ``lora`` and ``optimizer``: (step, history, path), or None when
        the folder has none. Refuses (with the fix) a checkpoint made with other settings or data."""
        path = self.latest()
        if path is None:
            return None
        if not self.allow_resume:
            raise FileExistsError(
                f"{self.folder} already holds a training run (up to {path.name}): choose another run name to start "
                "a new LoRA, or switch resume on to continue that one.")
        meta, tensors = read_checkpoint(path)
        saved = meta["settings"]
        wanted = settings.resume_values()
        differ = [f"{k} {saved.get(k)!r} (now {v!r})" for k, v in wanted.items() if _norm(saved.get(k)) != _norm(v)]
        if meta["dataset"] != fingerprint:
            differ.append("another dataset (other clips, captions, sizes or encoders)")
        if differ:
            raise ValueError(
                f"cannot continue {path}: it was made with " + "; ".join(differ)
                + ". Restore those settings to continue it, or choose another run name to start a new LoRA.")
        if meta["param_keys"] != [k for k, _ in lora.named_parameters()]:
            raise ValueError(f"cannot continue {path}: its LoRA covers other layers (another model size?). Choose "
                             "another run name to start a new LoRA.")
        lora.load_state_dict(tensors)
        optimizer.load_state_dict(_optimizer_state(tensors, meta["param_groups"], len(meta["param_keys"])))
        from .training import StepRecord  # circular at import time
        history = [StepRecord(**r) for r in meta["history"]]
        return int(meta["step"]), history, path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata with JSON fields decoded, tensors) of a checkpoint file."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a MOVA LoRA training checkpoint ({FORMAT})")
    for key in ("settings", "history", "param_keys", "param_groups"):
        meta[key] = json.loads(meta[key])
    return meta, tensors


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _optimizer_state(tensors: dict, groups: list[dict], count: int) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            index, name = key[len(OPTIMIZER_PREFIX):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    param_groups = []
    for group in groups:
        group = dict(group, params=list(range(count)))
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        param_groups.append(group)
    return {"state": state, "param_groups": param_groups}
