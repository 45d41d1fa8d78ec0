"""The loss curve of a MOVA LoRA training run as a ComfyUI IMAGE (plain Python with Pillow, no ComfyUI import).

One line per video expert (each step trains one), loss against step, with the value range, the step range
and each expert's latest loss written on the picture.
"""

from __future__ import annotations

import numpy as np
import torch

from ...mova_model.training.trainer import EXPERT_NAMES, StepRecord

COLOURS = {0: (214, 96, 28), 1: (38, 110, 196)}   # high-noise: orange, low-noise: blue
BACKGROUND, AXES, TEXT = (255, 255, 255), (60, 60, 60), (20, 20, 20)


def plot_losses(history: list[StepRecord], width: int = 768, height: int = 432) -> torch.Tensor:
    """IMAGE [1,height,width,3] float 0..1: loss per step, one colour per expert."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, width - 16, 40, height - 36
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXES, width=1)
    if not history:
        draw.text((left + 10, top + 10), "no training steps", fill=TEXT, font=font)
        return _to_image(image)
    losses = [r.loss for r in history]
    low, high = min(losses), max(losses)
    span = high - low or max(abs(high), 1e-6) * 0.1
    low, high = low - 0.05 * span, high + 0.05 * span
    first, last = history[0].step, history[-1].step

    def point(record: StepRecord) -> tuple[float, float]:
        x = left + (record.step - first) / max(1, last - first) * (right - left)
        y = bottom - (record.loss - low) / (high - low) * (bottom - top)
        return x, y

    legend_x = left + 8
    for expert, colour in COLOURS.items():
        points = [point(r) for r in history if r.expert == expert]
        if not points:
            continue
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points if len(points) <= 64 else points[-1:]:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        latest = next(r for r in reversed(history) if r.expert == expert)
        label = f"{EXPERT_NAMES[expert]} expert: loss {latest.loss:.4g} at step {latest.step}"
        draw.rectangle([legend_x, 14, legend_x + 10, 24], fill=colour)
        draw.text((legend_x + 14, 13), label, fill=TEXT, font=font)
        legend_x += 14 + int(draw.textlength(label, font=font)) + 24
    draw.text((4, top - 6), f"{high:.4g}", fill=TEXT, font=font)
    draw.text((4, bottom - 6), f"{low:.4g}", fill=TEXT, font=font)
    draw.text((left, bottom + 8), f"step {first}", fill=TEXT, font=font)
    end_label = f"step {last}"
    draw.text((right - draw.textlength(end_label, font=font), bottom + 8), end_label, fill=TEXT, font=font)
    draw.text(((left + right) // 2 - 40, bottom + 8), "loss per step", fill=TEXT, font=font)
    return _to_image(image)


def _to_image(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
