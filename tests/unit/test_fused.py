"""The fused hot path (mova_model/networks/fused.py): the fused eager forms and the fused kernels compute the reference
formulas (float32 to rounding, the golden set unchanged), run fewer kernels, keep the float32 RoPE round trip
out of memory, and are reached through the speed option ``compile="kernels"``."""

import pytest
import torch

from comfyui_mova.mova_model.networks import fused
from comfyui_mova.mova_model.sampling import joint
from comfyui_mova.mova_model.networks.rope import apply_half_rope, apply_interleaved_rope, tower_rope_video
from comfyui_mova.mova_model.memory.speed import apply_speed_options, check_speed_options
from mova_testing import GOLDEN_TOL, load_golden_towers, rel_l2


def _forward(towers, g, fps, dtype=torch.float32):
    x = torch.cat([g["noise_video"], g["condition"]], dim=1).to(dtype)
    t = torch.tensor([850.0])
    with torch.no_grad():
        return joint.joint_forward(towers.video_experts[0], towers.audio_dit, towers.bridge, x,
                                   g["noise_audio"].to(dtype), g["context_pos"].to(dtype), t, t, fps, dtype=dtype)


@pytest.fixture
def shapes(golden_cases):
    """Token count, width and heads of the golden video tower."""
    v = golden_cases["video_dit"]
    t = (golden_cases["num_frames"] - 1) // 4 + 1
    grid = (t, golden_cases["height"] // 16, golden_cases["width"] // 16)
    return grid, v["dim"], v["num_heads"]


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_eager_forms_equal_the_reference_formulas_in_float32(shapes, batch):
    grid, dim, heads = shapes
    tokens = grid[0] * grid[1] * grid[2]
    gen = torch.Generator().manual_seed(batch)
    x, y = (torch.randn(batch, tokens, dim, generator=gen) for _ in range(2))
    shift, scale, gate = (torch.randn(batch, 1, dim, generator=gen) * 0.3 for _ in range(3))
    weight = 1 + 0.1 * torch.randn(dim, generator=gen)
    table = tower_rope_video(dim // heads, grid)
    cos, sin = torch.randn(tokens, dim // heads, generator=gen), torch.randn(tokens, dim // heads, generator=gen)

    def both(fn, *args):
        with fused.use_fused_ops(False):
            ref = fn(*args)
        with fused.use_fused_ops(True):
            return fn(*args), ref

    out, ref = both(fused.norm_modulate, x, shift, scale, 1e-6)
    expected = torch.nn.functional.layer_norm(x, (dim,), eps=1e-6) * (1 + scale) + shift
    assert rel_l2(ref, expected) == 0 and rel_l2(out, expected) < 1e-6
    out, ref = both(fused.gated_residual, x, gate, y)
    assert rel_l2(ref, x + gate * y) == 0 and rel_l2(out, ref) < 1e-6
    out, ref = both(fused.scaled_residual, x, y, 0.7)
    assert rel_l2(out, x + 0.7 * y) < 1e-6 and rel_l2(ref, x + 0.7 * y) == 0
    normed = torch.nn.functional.rms_norm(x, (dim,), weight, 1e-6)
    out, _ = both(fused.rms_rope_interleaved, x, weight, 1e-6, table, heads)
    assert rel_l2(out, apply_interleaved_rope(normed, table, heads)) < 1e-6
    out, _ = both(fused.rms_rope_half, x, weight, 1e-6, cos, sin, heads)
    assert rel_l2(out, apply_half_rope(normed, cos, sin, heads)) < 1e-6


def _inside_a_norm(event) -> bool:
    """Inside an RMS/layer norm: composite on the CPU, one kernel on a GPU."""
    while event is not None:
        if event.name in ("aten::rms_norm", "aten::layer_norm"):
            return True
        event = event.cpu_parent
    return False


def _tower_casts(prof, tokens: int) -> int:
    """dtype copies of [B, tokens, C] activations outside the fused kernels (the RoPE round trip)."""
    return sum(1 for e in prof.profiler.function_events if e.name == "aten::_to_copy" and e.input_shapes
               and len(e.input_shapes[0]) == 3 and e.input_shapes[0][1] == tokens and not _inside_a_norm(e))


def test_fused_kernels_keep_the_golden_parity_and_drop_the_rope_round_trip(golden_dir, golden_tensors, golden_cases,
                                                                         shapes):
    """The golden step with every fused kernel compiled (float32): the golden bar holds; in bf16 the
    q/k RoPE no longer casts whole activations to float32 and back (eager: two casts per q and k)."""
    towers = load_golden_towers(golden_dir)
    fps, g = golden_cases["fps"], golden_tensors
    with fused.use_fused_kernels(True):
        out = _forward(towers, g, fps)
    assert rel_l2(out.video, g["step_high_video"]) < GOLDEN_TOL
    assert rel_l2(out.audio, g["step_high_audio"]) < GOLDEN_TOL

    grid = shapes[0]
    tokens = grid[0] * grid[1] * grid[2]
    bf16 = load_golden_towers(golden_dir, dtype=torch.bfloat16)
    counts = {}
    for kernels in (False, True):
        with fused.use_fused_kernels(kernels):
            _forward(bf16, g, fps, torch.bfloat16)  # compile outside the profile
            with torch.profiler.profile(record_shapes=True) as prof:
                _forward(bf16, g, fps, torch.bfloat16)
        counts[kernels] = _tower_casts(prof, tokens)
    video_layers = golden_cases["video_dit"]["num_layers"]
    assert counts[False] >= 4 * video_layers  # eager: q and k, up and down, in every video block
    assert counts[True] == 0, counts


def test_fused_bf16_is_no_noisier_than_the_reference_forms(golden_dir, golden_tensors, golden_cases):
    """bf16 error against the float32 golden step: the fused forms round once where the reference rounds
    per term, so their error stays at the reference forms' (measured: 1.00-1.02x here)."""
    towers = load_golden_towers(golden_dir, dtype=torch.bfloat16)
    g, fps = golden_tensors, golden_cases["fps"]
    errors = {}
    for on in (False, True):
        with fused.use_fused_ops(on):
            out = _forward(towers, g, fps, torch.bfloat16)
        errors[on] = [rel_l2(out.video, g["step_high_video"]), rel_l2(out.audio, g["step_high_audio"])]
    for ref, new in zip(errors[False], errors[True]):
        assert 0 < new < 1.25 * ref, errors


def test_the_kernels_speed_option_switches_the_fused_kernels(golden_dir):
    towers = load_golden_towers(golden_dir)
    parts = [towers.video_experts[0], towers.audio_dit, towers.bridge]
    check_speed_options("kernels", "auto")
    try:
        done = apply_speed_options(parts, "kernels", "auto", "cpu")
        assert fused.fused_kernels_enabled() and done == ["fused kernels compiled (RMS norm + RoPE, modulation)"]
        assert all(getattr(r, "_compiled_call_impl", None) is None for r in parts[0].blocks)  # blocks stay eager
        assert apply_speed_options(parts, "off", "auto", "cpu") == []
        assert not fused.fused_kernels_enabled()
    finally:
        fused.set_fused_kernels(False)
