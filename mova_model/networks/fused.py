"""Fused element-wise steps of the hot path: fewer kernels and no float32 round trips between the GEMMs.

Each function computes one formula of the towers and the bridge. Three ways, one result:

- reference (``use_fused_ops(False)``): one op per term, as the formulas read (kept for counting and tests);
- fused eager (the default): the same formula in fewer kernels — the AdaLN modulation folded into
  layer norm's affine step (batch 1), modulation and gated residuals as one ``addcmul``;
- fused kernels (``use_fused_kernels(True)``, the speed option ``compile="kernels"``): RMS norm + RoPE
  and norm + modulation as small ``torch.compile``d functions, one generated kernel each that reads
  the bf16 activations once, computes in float32 in registers and writes bf16 once (the float32 RoPE
  round trip of eager mode never reaches memory). Compiled blocks fuse all of this anyway.

In float32 the three agree to rounding (~1e-7 relative). In bf16 the fused forms round once where the
reference rounds after every term, as the official code's compiled ``modulate`` does.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F

from .rope import apply_half_rope, apply_interleaved_rope

_state = {"fused": True, "kernels": False}
_compiled: dict[str, object] = {}
_log = logging.getLogger(__name__)


@contextlib.contextmanager
def use_fused_ops(enabled: bool = True):
    """Run the enclosed code with the fused eager forms (``enabled``) or the reference forms."""
    previous, _state["fused"] = _state["fused"], bool(enabled)
    try:
        yield
    finally:
        _state["fused"] = previous


def set_fused_kernels(enabled: bool) -> bool:
    """Use the compiled fused kernels (True) or eager ops (False); returns the previous setting."""
    previous, _state["kernels"] = _state["kernels"], bool(enabled)
    return previous


@contextlib.contextmanager
def use_fused_kernels(enabled: bool = True):
    previous = set_fused_kernels(enabled)
    try:
        yield
    finally:
        set_fused_kernels(previous)


def fused_kernels_enabled() -> bool:
    return _state["kernels"]


# -- the formulas, written once (eager; also what the compiled kernels trace) -------------------------

def _norm_modulate_math(x, shift, scale, eps: float):
    """layer_norm(x) * (1 + scale) + shift in float32 registers, rounded once to x's dtype."""
    h = F.layer_norm(x.float(), (x.shape[-1],), eps=eps)
    return (h * (1 + scale.float()) + shift.float()).to(x.dtype)


def _rms_rope_interleaved_math(x, weight, eps: float, table, num_heads: int):
    """RMS norm (scaled by ``weight``) then interleaved-pair RoPE by ``table`` ([L, D/2, 2] cos/sin,
    float32): x [B,L,H*D] -> [B,L,H*D]. The norm is rounded to x's dtype first, as torch's rms_norm."""
    b, l, c = x.shape
    h = F.rms_norm(x, (c,), weight, eps)
    pairs = h.float().view(b, l, num_heads, c // num_heads // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = table[None, :, None, :, 0], table[None, :, None, :, 1]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).view(b, l, c).to(x.dtype)


def _rms_rope_half_math(x, weight, eps: float, cos, sin, num_heads: int):
    """RMS norm then rotate-half RoPE: x [B,L,H*D], cos/sin [L,D] in x's dtype -> [B,L,H*D]."""
    return apply_half_rope(F.rms_norm(x, (x.shape[-1],), weight, eps), cos, sin, num_heads)


def _kernel(name: str, fn):
    """``fn`` compiled once (dynamic shapes: one graph serves every resolution); None when compiling is
    not possible here (then the eager forms run)."""
    if name not in _compiled:
        try:
            _compiled[name] = torch.compile(fn, fullgraph=True, dynamic=True)
        except Exception as exc:  # no compiler backend on this machine: eager forms
            _log.warning("MOVA: fused kernel %s unavailable (%s); using eager ops", name, exc)
            _compiled[name] = None
    return _compiled[name]


def run_kernel(name: str, fn, *args):
    """``fn(*args)`` through its compiled kernel (compiled on first use; eager where compiling fails)."""
    return _run(name, fn, *args)


def _run(name: str, fn, *args):
    kernel = _kernel(name, fn) if _state["kernels"] else None
    if kernel is None:
        return fn(*args)
    try:
        return kernel(*args)
    except Exception as exc:  # a compiler that fails at the first call (no triton / C++ toolchain)
        _log.warning("MOVA: fused kernel %s failed (%s: %s); using eager ops from now on",
                     name, type(exc).__name__, str(exc)[:200])
        _compiled[name] = None
        return fn(*args)


# -- the entry points used by the towers and the bridge ---------------------------------------------

def norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """AdaLN: layer_norm(x) (no weights) * (1 + scale) + shift; x [B,L,C], shift/scale [B,1,C] -> [B,L,C]."""
    if _state["kernels"] and not torch.compiler.is_compiling():
        return _run("norm_modulate", _norm_modulate_math, x, shift, scale, eps)
    c = x.shape[-1]
    if not _state["fused"]:
        h = F.layer_norm(x, (c,), eps=eps)
        return h * (1 + scale) + shift
    if shift.shape[0] == 1 and scale.shape[0] == 1:
        # batch 1: the modulation is layer norm's own affine step (one kernel, one rounding)
        return F.layer_norm(x, (c,), (1 + scale).reshape(c), shift.reshape(c), eps)
    return torch.addcmul(shift, F.layer_norm(x, (c,), eps=eps), 1 + scale)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """x + gate * update; x/update [B,L,C], gate [B,1,C] -> [B,L,C] (one kernel when fused)."""
    if not _state["fused"]:
        return x + gate * update
    return torch.addcmul(x, gate, update)


def scaled_residual(x: torch.Tensor, update: torch.Tensor, scale: float) -> torch.Tensor:
    """x + scale * update for a Python number ``scale`` (the bridge's strength); one kernel."""
    if not _state["fused"]:
        return x + scale * update
    return x + update if scale == 1 else torch.add(x, update, alpha=scale)


def rms_rope_interleaved(x: torch.Tensor, weight: torch.Tensor, eps: float, table: torch.Tensor,
                         num_heads: int) -> torch.Tensor:
    """The towers' q/k: RMS norm with ``weight`` [C], then RoPE on interleaved pairs by the complex table
    [L, D/2]: x [B,L,H*D] -> [B,L,H*D]. Eager: norm kernel + complex multiply in float32 (as the reference);
    fused kernels: one kernel."""
    if _state["kernels"] and not torch.compiler.is_compiling():
        return _run("rms_rope_interleaved", _rms_rope_interleaved_math, x, weight, eps,
                    torch.view_as_real(table), num_heads)
    return apply_interleaved_rope(F.rms_norm(x, (x.shape[-1],), weight, eps), table, num_heads)


def rms_rope_half(x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor,
                  num_heads: int) -> torch.Tensor:
    """The bridge's q/k: RMS norm then rotate-half RoPE; cos/sin [L, D] in x's dtype -> [B,L,H*D]."""
    if _state["kernels"] and not torch.compiler.is_compiling():
        return _run("rms_rope_half", _rms_rope_half_math, x, weight, eps, cos, sin, num_heads)
    return _rms_rope_half_math(x, weight, eps, cos, sin, num_heads)
