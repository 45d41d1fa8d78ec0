"""The timestep path follows the official dtype flow: sinusoid, time_embedding and time_projection in
float32 (the official float32 autocast), then t_emb / t_mod cast to the compute dtype."""

import pytest
import torch

from comfyui_mova.mova_model.weights.loading import load_component
from comfyui_mova.mova_model.networks.layers import timestep_sinusoid


@pytest.fixture(scope="module")
def float32_expert(golden_dir):
    """The golden high-noise expert in float32, its weights rounded to bf16 (so a bf16 copy holds the same
    values and only the compute dtype differs)."""
    model = load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float32, component="video_dit")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model


def _reference(model, timesteps, dtype):
    t_emb, t_mod = model.embed_time(timesteps, torch.float32)
    return t_emb.to(dtype), t_mod.to(dtype)


TIMESTEPS = torch.tensor([999.0, 857.25, 412.5, 3.0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_model_embeds_time_in_float32(float32_expert, golden_dir, dtype):
    half = load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float32, component="video_dit")
    half.load_state_dict(float32_expert.state_dict())
    half = half.to(dtype)
    t_emb, t_mod = half.embed_time(TIMESTEPS, dtype)
    ref_emb, ref_mod = _reference(float32_expert, TIMESTEPS, dtype)
    assert t_emb.dtype == t_mod.dtype == dtype
    assert t_mod.shape == (len(TIMESTEPS), 6, float32_expert.config.dim)
    assert torch.equal(t_emb, ref_emb) and torch.equal(t_mod, ref_mod)
    # what the pack did before (the time layers in the weights' dtype) is not the same computation
    sinusoid = timestep_sinusoid(TIMESTEPS, half.config.freq_dim).to(dtype)
    naive = half.time_projection(half.time_embedding(sinusoid))
    assert not torch.equal(naive.unflatten(1, (6, -1)), t_mod)


def test_fp8_model_embeds_time_in_float32(float32_expert, golden_dir):
    """fp8 weights (blocks in fp8, the rest in bf16, computed in bf16): the time layers still run in float32."""
    fp8 = load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float8_e4m3fn, component="video_dit")
    assert fp8.time_embedding[0].weight.dtype == torch.bfloat16
    assert fp8.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    plain = load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float32, component="video_dit")
    with torch.no_grad():
        for p in plain.parameters():  # the bf16 values the fp8 model holds outside its blocks
            p.copy_(p.to(torch.bfloat16).float())
    t_emb, t_mod = fp8.embed_time(TIMESTEPS, torch.bfloat16)
    ref_emb, ref_mod = _reference(plain, TIMESTEPS, torch.bfloat16)
    assert torch.equal(t_emb, ref_emb) and torch.equal(t_mod, ref_mod)


def test_float32_model_is_unchanged(float32_expert):
    t_emb, t_mod = float32_expert.embed_time(TIMESTEPS, torch.float32)
    sinusoid = timestep_sinusoid(TIMESTEPS, float32_expert.config.freq_dim)
    expected = float32_expert.time_projection(float32_expert.time_embedding(sinusoid))
    assert torch.equal(t_mod, expected.unflatten(1, (6, -1)))
