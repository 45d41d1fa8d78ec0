"""One joint forward: the video expert and the audio tower run layer by layer, linked by the bridge."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..memory.offload import iter_blocks
from ..networks.bridge import DualTowerBridge
from ..networks.dit import WanDiT
from ..parallel.context import current_sequence_parallel


@dataclass
class JointOutput:
    """Velocity predictions: video [B,16,T,h,w], audio [B,C,L]."""

    video: torch.Tensor
    audio: torch.Tensor


def check_towers(video_dit: WanDiT, audio_dit: WanDiT, bridge: DualTowerBridge) -> None:
    """Raise a clear error when the bridge was built for other towers."""
    b = bridge.config
    problems = []
    if b.visual_hidden_dim != video_dit.config.dim:
        problems.append(f"bridge visual_hidden_dim {b.visual_hidden_dim} != video expert dim {video_dit.config.dim}")
    if b.audio_hidden_dim != audio_dit.config.dim:
        problems.append(f"bridge audio_hidden_dim {b.audio_hidden_dim} != audio DiT dim {audio_dit.config.dim}")
    if b.visual_layers != video_dit.config.num_layers:
        problems.append(f"bridge visual_layers {b.visual_layers} != video expert layers {video_dit.config.num_layers}")
    if b.audio_layers != audio_dit.config.num_layers:
        problems.append(f"bridge audio_layers {b.audio_layers} != audio DiT layers {audio_dit.config.num_layers}")
    if video_dit.config.num_layers < audio_dit.config.num_layers:
        problems.append("the video expert has fewer layers than the audio DiT")
    if problems:
        raise ValueError(
            "the bridge does not fit the towers: " + "; ".join(problems)
            + ". Load the dual_tower_bridge, audio_dit and video experts from the same MOVA release."
        )


def joint_forward(
    video_dit: WanDiT,
    audio_dit: WanDiT,
    bridge: DualTowerBridge,
    video_in: torch.Tensor,
    audio_in: torch.Tensor,
    context: torch.Tensor,
    video_timestep: torch.Tensor,
    audio_timestep: torch.Tensor,
    video_fps: float,
    bridge_scale: float = 1.0,
    dtype: torch.dtype | None = None,
    checkpoint: bool = False,
) -> JointOutput:
    """video_in [B,36,T,h,w] (latent + I2V condition), audio_in [B,C,L], context [B,Lt,4096],
    timesteps [B] (video and audio may differ) -> JointOutput in float32.

    ``bridge_scale`` 0 runs the towers without exchanging information (for dual CFG).
    ``checkpoint`` (training) recomputes each block and bridge exchange in the backward pass instead of
    keeping its activations; the forward result is the same.
    """
    dtype = dtype or video_in.dtype
    batch = video_in.shape[0]
    if audio_in.shape[0] != batch or context.shape[0] != batch:
        raise ValueError(
            f"batch sizes differ: video {batch}, audio {audio_in.shape[0]}, text {context.shape[0]}; "
            "give one text state per sample"
        )
    device = video_in.device
    video_timestep = video_timestep.to(device).float().reshape(-1).expand(batch)
    audio_timestep = audio_timestep.to(device).float().reshape(-1).expand(batch)

    v_emb, v_mod = video_dit.embed_time(video_timestep, dtype)
    a_emb, a_mod = audio_dit.embed_time(audio_timestep, dtype)
    context = context.to(device=device, dtype=dtype)
    v_ctx = video_dit.embed_text(context)
    a_ctx = audio_dit.embed_text(context)

    video, v_grid = video_dit.patchify(video_in.to(dtype))
    audio, a_grid = audio_dit.patchify(audio_in.to(dtype))
    v_rope = video_dit.rope(v_grid, device)
    a_rope = audio_dit.rope(a_grid, device)
    bv_rope, ba_rope = bridge.aligned_rope(v_grid, a_grid[0], video_fps, device=device, dtype=dtype)
    split = current_sequence_parallel()
    if split is not None:  # this process holds a slice of the video tokens (parallel/sequence.py)
        video, v_rope, bv_rope = split.split_video(video, v_rope, bv_rope)

    run = _run_checkpointed if checkpoint else _run
    video_blocks, audio_blocks = iter_blocks(video_dit), iter_blocks(audio_dit)
    for i in range(len(video_dit.blocks)):
        if i < len(audio_dit.blocks):
            video, audio = run(lambda v, a, i=i: bridge(i, v, a, bv_rope, ba_rope, scale=bridge_scale), video, audio)
            audio = run(next(audio_blocks), audio, a_ctx, a_mod, a_rope)
        video = run(next(video_blocks), video, v_ctx, v_mod, v_rope)

    video, audio = video_dit.head(video, v_emb), audio_dit.head(audio, a_emb)
    if split is not None:
        video, audio = split.gather(video, audio)
    video = video_dit.unpatchify(video, v_grid)
    audio = audio_dit.unpatchify(audio, a_grid)
    return JointOutput(video=video.float(), audio=audio.float())


def _run(fn, *args):
    return fn(*args)


def _run_checkpointed(fn, *args):
    """fn(*args) whose activations are recomputed in the backward pass (gradient checkpointing)."""
    return _checkpoint(fn, *args, use_reentrant=False)
