"""MOVA LoRA Loader's logic: which LoRA weights go to which ModelPatcher, at which strength, and the report.

Plain Python (no ComfyUI import): the node wraps each entry of ``LoraPlan.patches`` in ComfyUI's LoRA
weight adapter and adds it to a clone of the part's ModelPatcher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ...mova_model.lora.load import LoraFile, LoraPatch, match_patches

SLOTS = ("high_noise_expert", "low_noise_expert", "audio_tower")
# LoRA component -> (the loader input it patches, the key prefix of its weights inside that part's patcher)
TARGETS = {
    "video_dit": ("high_noise_expert", ""),
    "video_dit_2": ("low_noise_expert", ""),
    "audio_dit": ("audio_tower", "audio_dit."),
    "dual_tower_bridge": ("audio_tower", "bridge."),
}
NAMES = {"video_dit": "high-noise expert", "video_dit_2": "low-noise expert", "audio_dit": "audio DiT",
         "dual_tower_bridge": "bridge"}
SHOWN = 5  # problem keys listed in the node's report (all of them go to the log)


def lora_choices(filenames) -> list[str]:
    """The loras folder's files a MOVA LoRA can be: not the lora_config.pt read beside lora_weights.pt."""
    return sorted(n for n in filenames if PurePosixPath(n.replace("\\", "/")).name != "lora_config.pt")


def comfy_lora_weights(patch: LoraPatch) -> tuple:
    """The weights tuple of ComfyUI's LoRA adapter: (up, down, alpha, mid, dora_scale, reshape).
    ComfyUI adds strength · (alpha / rank) · up @ down with rank = down.shape[0], so alpha = scale · rank."""
    rank = patch.down.shape[0]
    return patch.up, patch.down, patch.scale * rank, None, None, None


@dataclass
class LoraPlan:
    """Per loader input: [(patches keyed by the patcher's state-dict keys, strength)]; what fitted and what not."""

    name: str
    patches: dict[str, list[tuple[dict[str, LoraPatch], float]]] = field(default_factory=dict)
    applied: dict[str, int] = field(default_factory=dict)      # component -> weights patched
    strengths: dict[str, float] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)            # LoRA weights that do not fit the model
    unknown: list[str] = field(default_factory=list)           # keys not read as MOVA LoRA weights

    def problems(self) -> list[str]:
        """Warnings about skipped keys, one line per kind, the first few keys named."""
        lines = []
        for items, what in ((self.misses, "LoRA weights do not fit this model and were skipped"),
                            (self.unknown, "keys are not MOVA LoRA weights and were skipped")):
            if items:
                more = f" (and {len(items) - SHOWN} more, see the log)" if len(items) > SHOWN else ""
                lines.append(f"{len(items)} {what}: {', '.join(items[:SHOWN])}{more}")
        return lines

    def report(self) -> str:
        parts = [f"{NAMES[c]} {n} weights at {self.strengths[c]:g}" for c, n in self.applied.items() if n]
        idle = [NAMES[c] for c, n in self.applied.items() if not n and self.strengths.get(c)]
        text = f"{self.name}: " + (", ".join(parts) if parts else "nothing applied (all strengths 0)")
        if idle:
            text += f"; nothing for the {', '.join(idle)}"
        return "\n".join([text, *self.problems()])


def plan_lora(lora: LoraFile, shapes: dict[str, dict[str, tuple[int, ...]]], strengths: dict[str, float],
              name: str | None = None) -> LoraPlan:
    """Match a LoRA file to the parts' weights. ``shapes``: loader input -> {state-dict key: shape} of its
    patcher; ``strengths``: LoRA component -> strength; ``name`` for messages (default: the file name).
    Raises when the file fits nothing at all."""
    name = name or PurePosixPath(lora.path.replace("\\", "/")).name
    plan = LoraPlan(name=name, unknown=list(lora.unknown_keys))
    total = sum(len(p) for p in lora.patches.values())
    if total == 0 and not lora.unknown_keys:
        raise ValueError(
            f"{plan.name} is empty: it holds no weights at all. MOVA's accelerate trainer writes such a "
            "lora_weights.pt when it runs without FSDP (its save_lora_weights keeps no layer); its FSDP runs (the "
            "8-GPU recipe) save the LoRA. Pick a checkpoint that holds the LoRA, or train it with MOVA Train LoRA."
        )
    if total == 0:
        keys = ", ".join(lora.unknown_keys[:SHOWN]) or "none"
        raise ValueError(
            f"{plan.name} holds no MOVA LoRA weights (keys: {keys}). MOVA LoRA keys look like "
            "video_dit.blocks.0.self_attn.q.lora_A.weight (from MOVA's official trainers): pick a LoRA made for MOVA."
        )
    fitted = 0
    for component, (slot, prefix) in TARGETS.items():
        patches = lora.patches.get(component, {})
        local = {k[len(prefix):]: s for k, s in shapes[slot].items() if k.startswith(prefix)}
        fits, misses = match_patches(patches, local)
        fitted += len(fits)
        plan.misses += [f"{component}.{m}" for m in misses]
        strength = float(strengths.get(component, 0.0))
        if not math.isfinite(strength):
            raise ValueError(f"the {NAMES[component]}'s LoRA strength is {strength}, not a finite number: set it to "
                             "a number from -10 to 10 (1.0 as trained, 0 leaves the part untouched)")
        plan.strengths[component] = strength
        plan.applied[component] = len(fits) if strength != 0.0 else 0
        if fits and strength != 0.0:
            plan.patches.setdefault(slot, []).append(({prefix + k: p for k, p in fits.items()}, strength))
    if fitted == 0:
        raise ValueError(
            f"{plan.name} fits none of the loaded MOVA weights ({total} LoRA weights, e.g. {plan.misses[0]}): it was "
            "trained for another model or model size (360p vs 720p). Pick a LoRA trained on this MOVA release."
        )
    return plan
