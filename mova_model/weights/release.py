"""The sampling settings a MOVA release ships: ``scheduler/scheduler_config.json`` (shift, sigma_min,
sigma_max, extra_one_step, num_train_timesteps) and ``model_index.json`` (boundary_ratio)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..configs import SchedulerConfig
from .checkpoint import CheckpointError

MODEL_INDEX = "model_index.json"
SCHEDULER_CONFIG = Path("scheduler") / "scheduler_config.json"
DEFAULT_BOUNDARY_RATIO = 0.9


@dataclass(frozen=True)
class ReleaseSettings:
    """What a release folder says about sampling; ``found`` lists the files it came from (empty: defaults)."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    boundary_ratio: float = DEFAULT_BOUNDARY_RATIO
    root: str | None = None
    found: tuple[str, ...] = ()


def release_root(component: str | os.PathLike) -> Path | None:
    """The release folder (with model_index.json) a component folder such as ``MOVA-360p/video_dit`` belongs to;
    None for single files and folders outside a release."""
    path = Path(component)
    if path.is_dir() and (path.parent / MODEL_INDEX).is_file():
        return path.parent
    return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable JSON file ({exc}): download it again from the release.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object: download it again.")
    return data


def _number(path: Path, data: dict, key: str, default: float, low: float, high: float, open_low=False) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            not (low < value if open_low else low <= value) or value > high:
        bound = f"above {low:g}" if open_low else f"in {low:g}..{high:g}"
        raise CheckpointError(f"{path}: {key} is {value!r}, expected a number {bound}: download the file again.")
    return float(value)


def read_release_settings(root: str | os.PathLike) -> ReleaseSettings:
    """The settings of the release folder ``root``; files that are missing leave MOVA's defaults in place,
    files that are broken raise a CheckpointError naming them."""
    root = Path(root)
    found = []
    scheduler = SchedulerConfig()
    path = root / SCHEDULER_CONFIG
    if path.is_file():
        data = _read_json(path)
        steps = data.get("num_train_timesteps", scheduler.num_train_timesteps)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise CheckpointError(f"{path}: num_train_timesteps is {steps!r}, expected a positive whole number.")
        extra = data.get("extra_one_step", scheduler.extra_one_step)
        if not isinstance(extra, bool):
            raise CheckpointError(f"{path}: extra_one_step is {extra!r}, expected true or false.")
        sigma_max = _number(path, data, "sigma_max", scheduler.sigma_max, 0.0, 1.0, open_low=True)
        sigma_min = _number(path, data, "sigma_min", scheduler.sigma_min, 0.0, sigma_max)
        if sigma_min >= sigma_max:
            raise CheckpointError(f"{path}: sigma_min {sigma_min:g} is not below sigma_max {sigma_max:g}.")
        scheduler = SchedulerConfig(
            num_train_timesteps=steps, extra_one_step=extra, sigma_max=sigma_max,
            shift=_number(path, data, "shift", scheduler.shift, 0.0, 1e6, open_low=True),
            sigma_min=sigma_min,
        )
        found.append(str(SCHEDULER_CONFIG))
    boundary = DEFAULT_BOUNDARY_RATIO
    path = root / MODEL_INDEX
    if path.is_file():
        boundary = _number(path, _read_json(path), "boundary_ratio", DEFAULT_BOUNDARY_RATIO, 0.0, 1.0)
        found.append(MODEL_INDEX)
    return ReleaseSettings(scheduler=scheduler, boundary_ratio=boundary, root=str(root), found=tuple(found))
