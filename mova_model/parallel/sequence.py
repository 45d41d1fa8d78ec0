"""Ulysses sequence parallel over the video tokens (DeepSpeed-Ulysses; the all-to-all is yunchang's).

Each process of a group of P holds a contiguous slice of the video tokens (padded at the end to a multiple of P)
and runs every per-token layer (projections, norms, FFN, text cross-attention, the bridge's video-from-audio
attention) on its slice only. Two attentions need the whole video sequence:

- the video self-attention: q, k and v go from "my tokens, all heads" to "all tokens, my heads" by one
  all-to-all each (yunchang's ``all_to_all_4D``, which runs on NCCL and on gloo), the padding is dropped, the
  attention runs on H/P heads, and one all-to-all brings the result back; the video expert's heads (40 in
  MOVA) must divide by P;
- the bridge's audio-from-video attention (audio queries, video keys and values): split over heads the same way
  when its heads (12 in MOVA) divide by P, else the video keys and values are gathered whole on every process.

The audio tower (~400 tokens at 360p, well under 1% of a step's work) is replicated: every process runs it whole,
and after the forward the audio output of the group's first process is broadcast so that all hold the same bits.
The video output is gathered after the head (64 values per token instead of 5120).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..networks.attention import attention
from .context import current_sequence_parallel

YUNCHANG_HINT = "pip install yunchang==0.6.4 (a small pure-Python package) into ComfyUI's Python"


def _yunchang_all_to_all():
    try:
        from yunchang.comm.all_to_all import all_to_all_4D
    except ImportError as exc:
        raise RuntimeError(f"Ulysses sequence parallel needs the yunchang package, which is not installed: "
                           f"{YUNCHANG_HINT}; or choose mode cfg") from exc
    return all_to_all_4D


def attach(video_dit, bridge) -> None:
    """Route ``video_dit``'s self-attentions and ``bridge``'s audio-from-video attentions through the
    sequence-parallel paths whenever a forward runs split (``parallel_run(sequence=...)``); plain attention
    otherwise. Attach before block swap copies the blocks."""
    for block in video_dit.blocks:
        block.self_attn.attend = _video_self_attention
    for conditioner in bridge.video_to_audio_conditioners.values():
        conditioner.inner.attend = _attention_to_video


def _video_self_attention(q, k, v, num_heads):
    sp = current_sequence_parallel()
    return attention(q, k, v, num_heads) if sp is None else sp.self_attention(q, k, v, num_heads)


def _attention_to_video(q, k, v, num_heads):
    sp = current_sequence_parallel()
    return attention(q, k, v, num_heads) if sp is None else sp.attention_to_video(q, k, v, num_heads)


class SequenceParallel:
    """The video tokens of each forward split over ``group`` (a torch.distributed process group)."""

    def __init__(self, group):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.first = dist.get_global_rank(group, 0)
        self._all_to_all = _yunchang_all_to_all()
        self.length = self.chunk = 0

    @property
    def padded(self) -> int:
        return self.chunk * self.size

    def split_video(self, tokens: torch.Tensor, rope: torch.Tensor, bridge_rope):
        """tokens [B,L,C], the tower's RoPE table [L,D/2] and the bridge's (cos, sin) [L,D] (or None) -> this
        process's rows of each ([B,L/P,C] ...), zero-padded at the end when P does not divide L."""
        self.length = tokens.shape[1]
        self.chunk = -(-self.length // self.size)
        tokens, rope = self._mine(tokens, 1), self._mine(rope, 0)
        if bridge_rope is not None:
            bridge_rope = tuple(self._mine(t, 0) for t in bridge_rope)
        return tokens, rope, bridge_rope

    def gather(self, video: torch.Tensor, audio: torch.Tensor):
        """(this process's video head output [B,L/P,O], audio head output [B,La,O']) -> (all video rows [B,L,O],
        the group's first process's audio output), the same on every process of the group."""
        video = self._gather_rows(video)[:, :self.length]
        audio = audio.contiguous()
        dist.broadcast(audio, src=self.first, group=self.group)
        return video, audio

    def self_attention(self, q, k, v, num_heads: int) -> torch.Tensor:
        """Attention of this process's video rows over all video rows: q, k, v [B,L/P,H*D] -> [B,L/P,H*D]."""
        b, n, c = q.shape
        local = num_heads // self.size
        q, k, v = (self._to_heads(x, num_heads) for x in (q, k, v))  # [B,L,H/P,D]
        out = attention(*(x.reshape(b, self.length, -1) for x in (q, k, v)), local)
        out = self._pad(out.view(b, self.length, local, c // num_heads), 1)
        return self._all_to_all(out, 1, 2, group=self.group).reshape(b, n, c)

    def attention_to_video(self, q, k, v, num_heads: int) -> torch.Tensor:
        """Replicated queries (audio) over the split video rows: q [B,La,H*D], k, v [B,L/P,H*D] -> [B,La,H*D]."""
        b, la, c = q.shape
        if num_heads % self.size:  # heads do not split: every process gathers the video keys and values
            k, v = (self._gather_rows(x)[:, :self.length] for x in (k, v))
            return attention(q, k, v, num_heads)
        local, d = num_heads // self.size, c // num_heads
        k, v = (self._to_heads(x, num_heads).reshape(b, self.length, -1) for x in (k, v))
        mine = q.view(b, la, num_heads, d)[:, :, self.rank * local:(self.rank + 1) * local].reshape(b, la, -1)
        out = self._gather(attention(mine, k, v, local))  # [P,B,La,H/P*D]
        return out.view(self.size, b, la, local, d).permute(1, 2, 0, 3, 4).reshape(b, la, c)

    def _to_heads(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        """[B,L/P,H*D] rows of this process -> [B,L,H/P,D] all rows (padding dropped), this process's heads."""
        b, n, c = x.shape
        return self._all_to_all(x.reshape(b, n, num_heads, c // num_heads), 2, 1, group=self.group)[:, :self.length]

    def _gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """[B,L/P,C] of every process -> [B,L',C] in row order (L' padded)."""
        return self._gather(x).transpose(0, 1).reshape(x.shape[0], self.padded, *x.shape[2:])

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,...] of every process of the group -> [P,B,...] (gloo takes the output concatenated along dim 0)."""
        x = x.contiguous()
        gathered = torch.empty((self.size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        dist.all_gather_into_tensor(gathered, x, group=self.group)
        return gathered.view(self.size, *x.shape)

    def _pad(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """x with zero rows appended along ``dim`` up to the padded length."""
        missing = self.padded - x.shape[dim]
        if missing == 0:
            return x
        shape = list(x.shape)
        shape[dim] = missing
        return torch.cat([x, x.new_zeros(shape)], dim=dim)

    def _mine(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return self._pad(x, dim).narrow(dim, self.rank * self.chunk, self.chunk)
