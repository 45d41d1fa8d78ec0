"""What a MOVA node spec is made of, as plain data (no ComfyUI import): sockets, widgets, the node spec, and the
custom socket types.

Each wing declares its nodes in its ``spec.py`` beside its ``node.py`` (``nodes/catalog.py`` lists them all); the
ComfyUI schemas are built from the specs (``comfy_io.schema``), and the tests read them to check the shipped
workflows. Saved workflows store widget values by position: append new inputs at the end, never reorder or rename
(that breaks users' saved graphs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CATEGORY = "MOVA"

# Custom socket types (ComfyUI matches sockets by these strings).
VIDEO_EXPERT = "MOVA_VIDEO_EXPERT"
AUDIO_TOWER = "MOVA_AUDIO_TOWER"
AUDIO_VAE = "MOVA_AUDIO_VAE"
MOVA_CONDITIONING = "MOVA_CONDITIONING"
AUDIO_LATENT = "MOVA_AUDIO_LATENT"
SAMPLER_OPTIONS = "MOVA_SAMPLER_OPTIONS"
LORA = "MOVA_LORA"
DATASET = "MOVA_DATASET"
EXTENSION = "MOVA_EXTENSION"

# Types ComfyUI shows as widgets; a Socket of one of them is an input that only takes a connection.
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_MAX = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Socket:
    """A connection-only input or an output."""

    name: str
    type: str
    tooltip: str
    optional: bool = False


@dataclass(frozen=True)
class Widget:
    """A widget input: ``kind`` is INT, FLOAT, STRING, BOOLEAN or COMBO. A COMBO lists ``options``, or the
    model files of ComfyUI's ``model_folder`` (known only at run time) that hold one of ``model_kinds`` (MOVA
    component kinds; files whose contents cannot be told are listed too); a STRING may be ``multiline``."""

    name: str
    kind: str
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | None = None
    options: tuple[str, ...] | None = None
    model_folder: str | None = None
    control_after_generate: bool = False
    multiline: bool = False
    model_kinds: tuple[str, ...] | None = None

    @property
    def stored_values(self) -> int:
        """How many entries this widget takes in a UI workflow's ``widgets_values``."""
        return 2 if self.control_after_generate else 1

    def problem(self, value) -> str | None:
        """Why ``value`` is not valid for this widget, or None when it is."""
        if self.kind == "BOOLEAN":
            return None if isinstance(value, bool) else f"{self.name} must be true or false, got {value!r}"
        if self.kind in ("INT", "FLOAT"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{self.name} must be a number, got {value!r}"
            if isinstance(value, float) and not math.isfinite(value):
                return f"{self.name} is {value}, not a finite number"
            if self.kind == "INT" and value != int(value):
                return f"{self.name} must be a whole number, got {value!r}"
            if self.min is not None and value < self.min:
                return f"{self.name} {value} is below the minimum {self.min}"
            if self.max is not None and value > self.max:
                return f"{self.name} {value} is above the maximum {self.max}"
            return None
        if not isinstance(value, str):
            return f"{self.name} must be text, got {value!r}"
        if self.options is not None and value not in self.options:
            return f"{self.name} {value!r} is not one of {', '.join(self.options)}"
        return None

    def fix(self) -> str:
        """What to set instead of a bad value: the widget's range and default."""
        if self.kind == "BOOLEAN":
            return "set it to true or false"
        if self.kind == "COMBO":
            return "pick one of the widget's choices"
        if self.kind not in ("INT", "FLOAT"):
            return "give it text"
        low = "" if self.min is None else f" from {self.min:g}"
        high = "" if self.max is None else f" to {self.max:g}"
        whole = "a whole number" if self.kind == "INT" else "a number"
        default = "" if self.default is None else f" (default {self.default:g})"
        return f"set it to {whole}{low}{high}{default}"


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    description: str
    inputs: tuple[Socket | Widget, ...]
    outputs: tuple[Socket, ...]
    output_node: bool = False  # runs even when nothing uses its outputs (savers)

    @property
    def widgets(self) -> tuple[Widget, ...]:
        return tuple(i for i in self.inputs if isinstance(i, Widget))

    @property
    def sockets(self) -> tuple[Socket, ...]:
        return tuple(i for i in self.inputs if isinstance(i, Socket))
