"""DAC audio codec: golden parity with the official code, weight-norm files, chunked and batched decode."""

import json

import pytest
import torch
from safetensors.torch import load_file

from comfyui_mova.mova_model.configs import DACConfig, config_from_dict
from comfyui_mova.mova_model.networks.dac import DAC, fuse_weight_norm

from mova_testing import GOLDEN_TOL, rel_l2


@pytest.fixture(scope="module")
def dac_config(golden_dir) -> DACConfig:
    values = json.loads((golden_dir / "checkpoint" / "audio_vae" / "config.json").read_text())
    return config_from_dict(DACConfig, values)


def _model(config, state_dict, dtype=torch.float32) -> DAC:
    model = DAC(config, dtype=dtype)
    model.load_state_dict(state_dict, strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def dac(dac_config, golden_dir) -> DAC:
    return _model(dac_config, load_file(str(golden_dir / "checkpoint" / "audio_vae" / "diffusion_pytorch_model.safetensors")))


def test_golden_dac_decode(dac, golden_tensors):
    latent, ref = golden_tensors["dac_latent"], golden_tensors["dac_decoded"]
    out = dac.decode(latent)
    assert out.shape == (latent.shape[0], 1, latent.shape[-1] * dac.upsampling)
    assert rel_l2(out, ref) < GOLDEN_TOL


def test_golden_dac_decode_weight_norm_file(dac_config, golden_dir, golden_tensors):
    raw = load_file(str(golden_dir / "dac_weightnorm.safetensors"))
    assert any(k.endswith(".weight_g") for k in raw)
    fused = fuse_weight_norm(raw)
    assert not any(k.endswith((".weight_g", ".weight_v")) for k in fused)
    model = _model(dac_config, fused)
    out = model.decode(golden_tensors["dac_latent"])
    assert rel_l2(out, golden_tensors["dac_weightnorm_decoded"]) < GOLDEN_TOL


def test_golden_dac_encode_mean(dac, golden_tensors):
    waveform, ref = golden_tensors["dac_waveform"], golden_tensors["dac_encoded_mean"]
    out = dac.encode(waveform)
    assert out.shape[-1] == -(-waveform.shape[-1] // dac.hop_length)
    assert rel_l2(out, ref) < GOLDEN_TOL


def test_encode_pads_to_hop_multiple(dac, golden_tensors):
    waveform = golden_tensors["dac_waveform"]
    cut = waveform[..., : waveform.shape[-1] - 1]  # no longer a hop multiple (or one short of one)
    out = dac.encode(cut)
    assert out.shape[-1] == -(-cut.shape[-1] // dac.hop_length)
    padded = torch.nn.functional.pad(cut, (0, out.shape[-1] * dac.hop_length - cut.shape[-1]))
    torch.testing.assert_close(out, dac.encode(padded))


def test_fuse_weight_norm_formula_and_passthrough():
    g = torch.rand(3, 1, 1) + 0.5
    v = torch.randn(3, 4, 5)
    sd = {"a.weight_g": g, "a.weight_v": v, "a.bias": torch.ones(3), "b.alpha": torch.zeros(1, 2, 1)}
    fused = fuse_weight_norm(sd)
    assert set(fused) == {"a.weight", "a.bias", "b.alpha"}
    ref = torch._weight_norm(v, g, 0)
    torch.testing.assert_close(fused["a.weight"], ref)
    assert fused["a.bias"] is sd["a.bias"] and fused["b.alpha"] is sd["b.alpha"]
    with pytest.raises(KeyError):
        fuse_weight_norm({"a.weight_g": g})


def _random_latent(config, length, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.latent_dim, length, generator=gen)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_decode_chunked_equals_full(dac, dac_config, chunk):
    overlap = dac.decode_overlap
    latent = _random_latent(dac_config, 3 * overlap + 5)
    full = dac.decode(latent)
    out = dac.decode_chunked(latent, chunk=chunk, overlap=overlap)
    assert out.shape == full.shape
    assert (out - full).abs().max().item() < 1e-5
    torch.testing.assert_close(dac.decode_chunked(latent, chunk=chunk), out)  # default overlap


def test_decode_overlap_is_needed(dac, dac_config):
    """One frame less context than decode_overlap must show at the chunk seams (the bound is tight)."""
    overlap = dac.decode_overlap
    latent = _random_latent(dac_config, 3 * overlap + 5)
    full = dac.decode(latent)
    short = dac.decode_chunked(latent, chunk=overlap, overlap=overlap - 1)
    assert (short - full).abs().max().item() > 1e-5


def test_batch_of_two_equals_two_single_decodes(dac, dac_config, golden_tensors):
    first = golden_tensors["dac_latent"]
    second = _random_latent(dac_config, first.shape[-1], seed=1)
    both = dac.decode(torch.cat([first, second]))
    # CPU conv kernels differ with the batch size (measured ~5e-6); mixing samples would be O(1).
    assert rel_l2(both[0:1], dac.decode(first)) < GOLDEN_TOL
    assert rel_l2(both[1:2], dac.decode(second)) < GOLDEN_TOL


def test_bf16_decode_close_to_float32(dac_config, golden_dir, golden_tensors):
    state = load_file(str(golden_dir / "checkpoint" / "audio_vae" / "diffusion_pytorch_model.safetensors"))
    model = _model(dac_config, {k: v.bfloat16() for k, v in state.items()}, dtype=torch.bfloat16)
    latent = golden_tensors["dac_latent"]
    out = model.decode(latent.bfloat16())
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    # Measured 6.2e-2 on the tiny golden set: its random weights drive activations to ~30,
    # where bf16's 8-bit mantissa moves sin(alpha * x) noticeably.
    assert rel_l2(out.float(), golden_tensors["dac_decoded"]) < 0.15


def test_layers_come_from_operations(dac_config):
    from types import SimpleNamespace

    made = []

    def counting(cls):
        class Counted(cls):
            def __init__(self, *args, **kwargs):
                made.append(cls.__name__)
                super().__init__(*args, **kwargs)
        return Counted

    ops = SimpleNamespace(Conv1d=counting(torch.nn.Conv1d), ConvTranspose1d=counting(torch.nn.ConvTranspose1d))
    model = DAC(dac_config, operations=ops, device="meta")
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    assert len(made) == len(convs) and made.count("ConvTranspose1d") == len(dac_config.decoder_rates)
    assert all(p.device.type == "meta" for p in model.parameters())
