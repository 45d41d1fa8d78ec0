"""Classifier-free guidance over the joint model: text CFG per modality and bridge ("dual") CFG.

With T the positive prompt, ∅T the negative one, B the bridge on and ∅B the bridge off (condition
scale 0), each modality's velocity is

    v = v(∅B,∅T) + s_B · [v(B,∅T) − v(∅B,∅T)] + s_T · [v(B,T) − v(B,∅T)]

which is plain text CFG, v(B,∅T) + s_T · [v(B,T) − v(B,∅T)], when s_B = 1 (the official pipeline).
Only the passes a setting needs are run: 1 (no guidance), 2 (text CFG) or 3 (dual CFG).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .joint import JointOutput
from ..parallel.context import current_cfg_parallel

# run(video_in, audio_in, context, bridge_scale) -> JointOutput
JointRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], JointOutput]


@dataclass(frozen=True)
class Guidance:
    """Guidance scales for one step: text CFG for video and audio, bridge CFG for both."""

    video_text: float = 5.0
    audio_text: float = 5.0
    bridge: float = 1.0

    @property
    def text_on(self) -> bool:
        return self.video_text != 1.0 or self.audio_text != 1.0

    def passes(self, has_negative: bool) -> int:
        """How many joint forwards one step takes."""
        if self.bridge != 1.0:
            return 3
        return 2 if self.text_on and has_negative else 1


NO_GUIDANCE = Guidance(1.0, 1.0, 1.0)


def _split(out: JointOutput, n: int) -> list[JointOutput]:
    return [JointOutput(v, a) for v, a in zip(out.video.chunk(n), out.audio.chunk(n))]


def _combine(base, bridged, cond, s_bridge, s_text):
    return base + s_bridge * (bridged - base) + s_text * (cond - bridged)


def guided_velocity(run: JointRun, video_in, audio_in, pos, neg, guidance: Guidance,
                    batch: bool = False, parts: dict | None = None) -> JointOutput:
    """The guided velocity for one step; ``batch`` runs the bridge-on passes as one batched forward. ``parts`` (a
    dict) receives the prompt's pass as "cond" and the negative prompt's (bridge on) as "uncond" (both the prompt's
    pass when one pass runs), for samplers that read them (ComfyUI's CFG++ samplers)."""
    passes = guidance.passes(neg is not None)
    if passes == 1:
        out = run(video_in, audio_in, pos, 1.0)
        if parts is not None:
            parts.update(cond=out, uncond=out)
        return out
    uncond_ctx = neg if neg is not None else pos
    split = current_cfg_parallel()
    if split is not None:  # the passes run on different processes (parallel/cfg.py)
        calls = [(video_in, audio_in, pos, 1.0), (video_in, audio_in, uncond_ctx, 1.0),
                 (video_in, audio_in, uncond_ctx, 0.0)][:passes]
        cond, bridged, *rest = split.run(run, calls)
        base = rest[0] if rest else bridged
    elif batch:
        cond, bridged = _split(run(torch.cat([video_in, video_in]), torch.cat([audio_in, audio_in]),
                                   torch.cat([pos, uncond_ctx]), 1.0), 2)
    else:
        cond, bridged = run(video_in, audio_in, pos, 1.0), run(video_in, audio_in, uncond_ctx, 1.0)
    if split is None:
        base = run(video_in, audio_in, uncond_ctx, 0.0) if passes == 3 else bridged
    if parts is not None:
        parts.update(cond=cond, uncond=bridged)
    g = guidance
    return JointOutput(
        video=_combine(base.video, bridged.video, cond.video, g.bridge, g.video_text),
        audio=_combine(base.audio, bridged.audio, cond.audio, g.bridge, g.audio_text),
    )
