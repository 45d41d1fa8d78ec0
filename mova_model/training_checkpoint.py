"""Checkpoints of a LoRA training run: ``step_NNNNNN.safetensors`` files in the run's folder.

One file holds the LoRA (official key layout, float32, readable by the MOVA LoRA Loader; the optimizer
keys are then listed as skipped), the AdamW state (``optimizer.<param>.<name>``) and, in the metadata,
the step, the settings a continuation must share, the dataset fingerprint and the loss history.
Files are written through ``atomic_write`` (a unique temporary file, fsync, rename), so a crash, a full disk
or Cancel while saving leaves the previous checkpoint intact. Only finite checkpoints are written, each is
read back before older ones are removed, and the newest ``keep`` are kept. Resuming checks every field of the
newest checkpoint; a damaged one (cut short, unreadable, a field missing or wrong) is renamed
``<name>.damaged`` and the run continues from the newest intact one, saying so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint import CheckpointError, read_header
from .saving import save_safetensors
from .training_guard import nonfinite_values

FORMAT = "mova-lora-checkpoint/1"
NAME = re.compile(r"^step_(\d+)\.safetensors$")
OPTIMIZER_PREFIX = "optimizer."
DAMAGED_SUFFIX = ".damaged"
RECORD_FIELDS = ("step", "expert", "loss", "video_loss", "audio_loss", "timestep")  # training.StepRecord


class CheckpointDamaged(ValueError):
    """A checkpoint that cannot be continued from: cut short, unreadable, or a metadata field missing or wrong.
    ``reason`` says what, without the path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"the training checkpoint {path} is damaged: {reason}")
        self.path, self.reason = Path(path), reason


class TrainingCheckpoints:
    """The checkpoints of one run in ``folder``. ``allow_resume`` False refuses a folder that has some
    (so an earlier run is never overwritten by accident). ``notes`` collects what resuming had to skip."""

    def __init__(self, folder: str | os.PathLike, allow_resume: bool = True, keep: int = 2):
        self.folder = Path(folder)
        self.allow_resume = allow_resume
        self.keep = max(1, keep)
        self.last_saved: Path | None = None
        self.latest_good: Path | None = None   # the newest checkpoint known intact and finite (saved or resumed)
        self.notes: list[str] = []

    def files(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := NAME.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        files = self.files()
        return files[-1][1] if files else None

    def save(self, step: int, settings, fingerprint: str, lora, optimizer, history, guard=None) -> Path:
        """Write the checkpoint of ``step`` and drop all but the newest ``keep``. ``guard`` (a StepGuard) stops
        the run instead when a tensor is not finite: nothing is written or removed then."""
        tensors = lora.state_dict()
        state = optimizer.state_dict()
        for index, entries in state["state"].items():
            for name, value in entries.items():
                tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        path = self.folder / f"step_{step:06d}.safetensors"
        if guard is not None:
            guard.weights(step, tensors, f"writing {path.name}")
        elif nonfinite_values(tensors):
            raise ValueError(f"not writing {path}: the LoRA or its optimizer state holds NaN or infinite values")
        groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
        metadata = {
            "format": FORMAT, "step": str(step), "rank": str(lora.rank), "alpha": str(lora.alpha),
            "settings": json.dumps(dataclasses.asdict(settings)), "dataset": fingerprint,
            "history": json.dumps([dataclasses.asdict(r) for r in history]),
            "param_keys": json.dumps([k for k, _ in lora.named_parameters()]),
            "param_groups": json.dumps(groups),
        }
        save_safetensors(tensors, path, metadata, what="the training checkpoint")
        read_header(path)  # read back before anything older goes
        self.last_saved = self.latest_good = path
        older = [p for s, p in self.files() if s < step]
        for old in older[: max(0, len(older) - (self.keep - 1))]:
            old.unlink(missing_ok=True)
        return path

    def resume(self, settings, fingerprint: str, lora, optimizer):
        """Load the newest intact checkpoint into ``lora`` and ``optimizer``: (step, history, path), or None
        when the folder has none. Damaged newer ones are renamed ``.damaged`` (listed in ``notes``). Refuses
        (with the fix) a checkpoint made with other settings or data, and a folder whose checkpoints are all
        damaged."""
        files = self.files()
        if not files:
            return None
        if not self.allow_resume:
            raise FileExistsError(
                f"{self.folder} already holds a training run (up to {files[-1][1].name}): choose another run name to "
                "start a new LoRA, or switch resume on to continue that one.")
        damaged: list[CheckpointDamaged] = []
        for _, path in reversed(files):
            try:
                meta, tensors = read_checkpoint(path)
                _check_optimizer(path, meta, tensors, optimizer)
                break
            except CheckpointDamaged as exc:
                damaged.append(exc)
        else:
            listing = "; ".join(f"{d.path.name}: {d.reason}" for d in damaged)
            raise CheckpointDamaged(self.folder, f"every checkpoint there is damaged ({listing}). Choose another run "
                                                 "name to start a new LoRA, or move that folder away.")
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
        for exc in damaged:
            self.notes.append(_set_aside(exc, path))
        self.latest_good = path
        return int(meta["step"]), history, path


def _check_optimizer(path: Path, meta: dict, tensors: dict, optimizer) -> None:
    """The optimizer state fits: every setting the optimizer has, and per parameter state of that parameter's shape."""
    needed = set(optimizer.param_groups[0]) - {"params"} if optimizer.param_groups else set()
    for group in meta["param_groups"]:
        if needed - set(group):
            raise CheckpointDamaged(path, f"its metadata field 'param_groups' lacks {sorted(needed - set(group))}")
    keys = meta["param_keys"]
    for key, value in tensors.items():
        if key.startswith(OPTIMIZER_PREFIX):
            index, name = key[len(OPTIMIZER_PREFIX):].split(".", 1)
            shape = tuple(tensors[keys[int(index)]].shape)
            if value.dim() and tuple(value.shape) != shape:
                raise CheckpointDamaged(path, f"its optimizer state {key} is {tuple(value.shape)}, its parameter "
                                              f"{keys[int(index)]} {shape}")


def _set_aside(exc: CheckpointDamaged, used: Path) -> str:
    """Rename a damaged checkpoint out of the run (kept for a look, never loaded or rotated); the note says so."""
    aside = exc.path.with_name(exc.path.name + DAMAGED_SUFFIX)
    try:
        os.replace(exc.path, aside)
        moved = f"renamed {aside.name}"
    except OSError as err:
        moved = f"could not be renamed ({err.strerror}): delete it"
    return f"{exc.path.name} is damaged ({exc.reason}); it was {moved}, and the run continued from {used.name}"


def _reason(exc: Exception, path: Path) -> str:
    """An error's message without the path and without advice meant for downloaded files."""
    text = str(exc).replace(f"{path}: ", "").replace(str(path), "the file")
    for cut in (" The download was interrupted", ": download it again", "; download it again", ". Download"):
        text = text.split(cut)[0]
    return text.rstrip(". ")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata with JSON fields decoded, tensors) of a checkpoint file, every field checked; a
    CheckpointDamaged saying what is wrong otherwise (cut short, unreadable, a field missing or invalid,
    a value not finite)."""
    path = Path(path)
    try:
        _, raw = read_header(path)
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError as exc:
        raise CheckpointDamaged(path, _reason(exc, path)) from exc
    except OSError as exc:
        raise CheckpointDamaged(path, f"it cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # the safetensors library's own errors
        raise CheckpointDamaged(path, f"it cannot be read ({type(exc).__name__}: {exc})") from exc
    if raw.get("format") != FORMAT:
        raise CheckpointDamaged(path, f"its format is {raw.get('format')!r}, not a MOVA LoRA training checkpoint "
                                      f"({FORMAT})")
    return _checked_metadata(path, raw, tensors), tensors


def _checked_metadata(path: Path, raw: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The metadata decoded, each field checked against the others and the tensors."""
    def bad(field: str, what: str):
        raise CheckpointDamaged(path, f"its metadata field {field!r} {what}")

    meta = dict(raw)
    for key in ("step", "rank", "alpha", "settings", "dataset", "history", "param_keys", "param_groups"):
        if key not in raw:
            bad(key, "is missing")
    for key in ("settings", "history", "param_keys", "param_groups"):
        try:
            meta[key] = json.loads(raw[key])
        except json.JSONDecodeError:
            bad(key, "is not valid JSON")
    if not raw["step"].isdigit() or int(raw["step"]) < 1:
        bad("step", f"is {raw['step']!r}, not a step number")
    step = int(raw["step"])
    if not raw["rank"].isdigit() or int(raw["rank"]) < 1:
        bad("rank", f"is {raw['rank']!r}, not a rank")
    try:
        alpha = float(raw["alpha"])
    except ValueError:
        alpha = math.nan
    if not (math.isfinite(alpha) and alpha > 0):
        bad("alpha", f"is {raw['alpha']!r}, not a positive number")
    if not isinstance(meta["settings"], dict):
        bad("settings", "is not a table of settings")
    if not raw["dataset"]:
        bad("dataset", "is empty")
    keys = meta["param_keys"]
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)):
        bad("param_keys", "is not a list of LoRA keys")
    missing = [k for k in keys if k not in tensors]
    if missing:
        bad("param_keys", f"names {len(missing)} tensors the file does not hold (first: {missing[0]})")
    groups = meta["param_groups"]
    if not (isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups)):
        bad("param_groups", "is not a list of optimizer settings")
    history = meta["history"]
    if not isinstance(history, list) or len(history) != step:
        bad("history", f"does not hold one record per step (step {step}, "
                       f"{len(history) if isinstance(history, list) else type(history).__name__} records)")
    for i, record in enumerate(history, 1):
        if not isinstance(record, dict) or set(record) != set(RECORD_FIELDS):
            bad("history", f"record {i} is not {{{', '.join(RECORD_FIELDS)}}}")
        values = [record[k] for k in RECORD_FIELDS]
        if record["step"] != i or record["expert"] not in (0, 1) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            bad("history", f"record {i} holds {record} (a step out of order, an unknown expert or a value that is "
                           "not a finite number)")
    for key in tensors:
        if key.startswith(OPTIMIZER_PREFIX):
            index, _, name = key[len(OPTIMIZER_PREFIX):].partition(".")
            if not (index.isdigit() and name) or int(index) >= len(keys):
                bad("param_keys", f"has {len(keys)} entries but the file holds optimizer state {key}")
        elif key not in keys:
            raise CheckpointDamaged(path, f"it holds a tensor {key} that its param_keys do not list")
    nonfinite = nonfinite_values(tensors)
    if nonfinite:
        raise CheckpointDamaged(path, f"it holds NaN or infinite values ({nonfinite[0]}; {len(nonfinite)} tensors): "
                                      "it comes from a run that diverged")
    return meta


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
