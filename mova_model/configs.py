"""Typed configs for every MOVA component, with presets for the released models.

Field names follow the constructor arguments stored in each component's ``config.json``
in the Hugging Face release, so a config can be built straight from that file.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

# Wan text states (UMT5-XXL) and the sinusoid width used by every Wan-style DiT.
TEXT_DIM = 4096
FREQ_DIM = 256
DEFAULT_HEAD_DIM = 128


@dataclass(frozen=True)
class DiTConfig:
    """A Wan-style DiT tower. ``patch_size`` has 3 entries for video, 1 for audio."""

    dim: int
    num_heads: int
    num_layers: int
    ffn_dim: int
    in_dim: int
    out_dim: int
    patch_size: tuple[int, ...]
    text_dim: int = TEXT_DIM
    freq_dim: int = FREQ_DIM
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def is_video(self) -> bool:
        return len(self.patch_size) == 3

    @property
    def kind(self) -> str:
        return "video_dit" if self.is_video else "audio_dit"

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.dim % self.num_heads:
            raise ValueError(f"DiT dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if len(self.patch_size) not in (1, 3):
            raise ValueError(f"DiT patch_size {self.patch_size} must have 1 (audio) or 3 (video) entries")


@dataclass(frozen=True)
class BridgeConfig:
    """The dual-tower conditional bridge (bidirectional cross-attention between towers)."""

    visual_layers: int
    audio_layers: int
    visual_hidden_dim: int
    audio_hidden_dim: int
    head_dim: int = DEFAULT_HEAD_DIM
    audio_fps: float = 50.0
    interaction_strategy: str = "full"
    apply_cross_rope: bool = True
    apply_first_frame_bias_in_rope: bool = False
    trainable_condition_scale: bool = False
    pooled_adaln: bool = False
    eps: float = 1e-6

    @property
    def interaction_layers(self) -> tuple[int, ...]:
        """Indices of the layers where the towers exchange information."""
        if self.interaction_strategy == "full":
            return tuple(range(min(self.visual_layers, self.audio_layers)))
        raise ValueError(
            f"bridge interaction_strategy {self.interaction_strategy!r} is not supported (only 'full' is)"
        )

    def __post_init__(self):
        for name in ("visual_hidden_dim", "audio_hidden_dim"):
            if getattr(self, name) % self.head_dim:
                raise ValueError(f"bridge {name} {getattr(self, name)} is not divisible by head_dim {self.head_dim}")
        if self.pooled_adaln or self.trainable_condition_scale or self.apply_first_frame_bias_in_rope:
            raise ValueError(
                "bridge options pooled_adaln / trainable_condition_scale / apply_first_frame_bias_in_rope "
                "are not used by any released MOVA checkpoint and are not supported"
            )


@dataclass(frozen=True)
class DACConfig:
    """The continuous DAC audio codec (MOVA's audio VAE)."""

    encoder_dim: int = 128
    encoder_rates: tuple[int, ...] = (2, 3, 4, 5, 8)
    latent_dim: int = 128
    decoder_dim: int = 2048
    decoder_rates: tuple[int, ...] = (8, 5, 4, 3, 2)
    sample_rate: int = 48000
    continuous: bool = True

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.encoder_rates:
            hop *= r
        return hop

    @property
    def latent_rate(self) -> float:
        """Latent frames per second of audio."""
        return self.sample_rate / self.hop_length

    def __post_init__(self):
        object.__setattr__(self, "encoder_rates", tuple(int(r) for r in self.encoder_rates))
        object.__setattr__(self, "decoder_rates", tuple(int(r) for r in self.decoder_rates))
        if not self.continuous:
            raise ValueError("only the continuous DAC (continuous=true) is used by MOVA")


@dataclass(frozen=True)
class SchedulerConfig:
    """Flow-matching schedule (MOVA's FlowMatchPairScheduler settings)."""

    num_train_timesteps: int = 1000
    shift: float = 5.0
    sigma_max: float = 1.0
    sigma_min: float = 0.0
    extra_one_step: bool = True


@dataclass(frozen=True)
class MovaConfig:
    """A whole MOVA release: both video experts share ``video``."""

    video: DiTConfig
    audio: DiTConfig
    bridge: BridgeConfig
    dac: DACConfig = field(default_factory=DACConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    boundary_ratio: float = 0.9


def _field_problem(name: str, hint, value) -> str | None:
    """Why ``value`` does not fit a config field annotated ``hint`` (None when it fits)."""
    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v > 0
    if hint is int:
        return None if count(value) else f"{name} is {value!r}, expected a positive whole number"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return f"{name} is {value!r}, expected a finite number, 0 or more"
        return None
    if hint is bool:
        return None if isinstance(value, bool) else f"{name} is {value!r}, expected true or false"
    if hint is str:
        return None if isinstance(value, str) else f"{name} is {value!r}, expected a text"
    if isinstance(value, (list, tuple)) and value and all(count(v) for v in value):
        return None
    return f"{name} is {value!r}, expected a list of positive whole numbers"


def config_from_dict(cls, values: Mapping[str, Any]):
    """Build ``cls`` from a config.json-like mapping, ignoring keys the class does not have. A ValueError says
    which field is missing or of the wrong type."""
    if not isinstance(values, Mapping):
        raise ValueError(f"expected a mapping of settings, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    missing = [f.name for f in fields if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and f.name not in values]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    problems = [p for f in fields if f.name in values
                if (p := _field_problem(f.name, hints[f.name], values[f.name])) is not None]
    if problems:
        raise ValueError("; ".join(problems))
    kwargs = {f.name: (tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name])
              for f in fields if f.name in values}
    return cls(**kwargs)


def config_to_dict(config) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


VIDEO_DIT_A14B = DiTConfig(
    dim=5120, num_heads=40, num_layers=40, ffn_dim=13824, in_dim=36, out_dim=16, patch_size=(1, 2, 2)
)
AUDIO_DIT_1B = DiTConfig(
    dim=1536, num_heads=12, num_layers=30, ffn_dim=8960, in_dim=128, out_dim=128, patch_size=(1,)
)
BRIDGE_FULL = BridgeConfig(visual_layers=40, audio_layers=30, visual_hidden_dim=5120, audio_hidden_dim=1536)
DAC_48K = DACConfig()

# The two releases share the architecture; they differ in the video experts' weights.
MOVA_360P = MovaConfig(video=VIDEO_DIT_A14B, audio=AUDIO_DIT_1B, bridge=BRIDGE_FULL, dac=DAC_48K)
MOVA_720P = MovaConfig(video=VIDEO_DIT_A14B, audio=AUDIO_DIT_1B, bridge=BRIDGE_FULL, dac=DAC_48K)

PRESETS = {"MOVA-360p": MOVA_360P, "MOVA-720p": MOVA_720P}
