"""Memory modes give the resident result: block swap, releasing the high expert, chunked decode."""

import pytest
import torch

from comfyui_mova.mova_model.sampling import joint, sampler
from comfyui_mova.mova_model.memory.offload import disable_block_swap, enable_block_swap
from mova_testing import load_golden_towers

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _load(golden_dir, device="cpu"):
    return load_golden_towers(golden_dir, device=device)

def _forward(towers, g, fps, device="cpu"):
    x = torch.cat([g["noise_video"], g["condition"]], dim=1).to(device)
    t = torch.tensor([850.0])
    return joint.joint_forward(towers.video_experts[0], towers.audio_dit, towers.bridge, x,
                               g["noise_audio"].to(device), g["context_pos"].to(device), t, t, fps)


@pytest.mark.parametrize("resident", [0, 1, 2, 99])
def test_block_swap_equals_resident(golden_dir, golden_tensors, golden_cases, resident):
    towers = _load(golden_dir)
    ref = _forward(towers, golden_tensors, golden_cases["fps"])
    layers = towers.video_experts[0].config.num_layers
    swap = enable_block_swap(towers.video_experts[0], "cpu", resident=resident)
    enable_block_swap(towers.audio_dit, "cpu", resident=0)
    assert swap.swapped == max(0, layers - resident)
    for _ in range(2):  # the slots are reused from one forward to the next
        out = _forward(towers, golden_tensors, golden_cases["fps"])
        assert torch.equal(out.video, ref.video) and torch.equal(out.audio, ref.audio)
    disable_block_swap(towers.video_experts[0])
    assert torch.equal(_forward(towers, golden_tensors, golden_cases["fps"]).video, ref.video)


def test_block_swap_keeps_slots_out_of_the_state_dict(golden_dir):
    expert = _load(golden_dir).video_experts[0]
    keys = set(expert.state_dict())
    enable_block_swap(expert, "cpu", resident=1)
    assert set(expert.state_dict()) == keys


def test_releasing_the_high_expert_gives_the_same_sample(golden_dir, golden_tensors, golden_cases):
    g = golden_tensors
    args = (g["condition"], g["context_pos"], g["context_neg"], g["noise_video"], g["noise_audio"])
    base = dict(steps=golden_cases["sample_steps"], cfg_scale=5.0, fps=golden_cases["fps"],
                boundary_ratio=golden_cases["boundary_ratio"])
    ref = sampler.sample(_load(golden_dir), *args, sampler.SamplingOptions(**base))
    towers = _load(golden_dir)
    out = sampler.sample(towers, *args, sampler.SamplingOptions(**base, release_high_expert=True))
    assert towers.video_experts[0] is None and towers.video_experts[1] is not None
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


@pytest.mark.gpu
@GPU
def test_block_swap_on_cuda_equals_resident(golden_dir, golden_tensors, golden_cases):
    towers = _load(golden_dir, device="cuda")
    ref = _forward(towers, golden_tensors, golden_cases["fps"], device="cuda")
    enable_block_swap(towers.video_experts[0], "cuda", resident=1)
    out = _forward(towers, golden_tensors, golden_cases["fps"], device="cuda")
    assert torch.equal(out.video, ref.video) and torch.equal(out.audio, ref.audio)
    assert next(towers.video_experts[0].blocks[-1].parameters()).is_pinned()
