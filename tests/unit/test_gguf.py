"""GGUF weights: the converter's .gguf files, our torch dequantisation of every type against the gguf library's
numpy one, the loader (quantised layers that dequantise on the fly), and the errors for files it cannot use."""

import math
import shutil

import numpy as np
import pytest
import torch

from comfyui_mova.mova_model import convert
from comfyui_mova.mova_model.gguf.dequant import QUANTIZED_TYPES, TYPES
from comfyui_mova.mova_model.gguf.files import open_gguf
from comfyui_mova.mova_model.gguf.layers import GGUFLinearMixin, quantized_layers, weight_shapes
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError, open_checkpoint
from comfyui_mova.mova_model.weights.loading import load_component
from gguf_files import widened_release, write_raw_gguf
from mova_testing import rel_l2

PARTS = {"high": ("video_dit", "video_dit_high"), "low": ("video_dit", "video_dit_low"),
         "audio": ("audio_dit", "audio_dit"), "bridge": ("dual_tower_bridge", "dual_tower_bridge")}
FORMATS = ("gguf_q8_0", "gguf_q6_k", "gguf_q5_k", "gguf_q4_k")
# rel. L2 of a dequantised block weight against its source, per type: largest measured on these random weights
# Q8_0 0.0055, Q6_K 0.015, Q5_K 0.030, Q5_0 0.044, Q4_K 0.061, Q4_0 0.088; the bounds leave about 2x.
WEIGHT_BOUND = {"Q8_0": 0.011, "Q6_K": 0.03, "Q5_K": 0.06, "Q5_0": 0.09, "Q4_K": 0.12, "Q4_0": 0.18}


def _gguf_name(part, fmt):
    return f"mova_tiny_{PARTS[part][1]}_{fmt[len('gguf_'):]}.gguf"


@pytest.fixture(scope="module")
def releases(golden_dir, tmp_path_factory):
    """{"golden": the golden release, "wide": it widened to K-block widths}."""
    return {"golden": golden_dir / "checkpoint",
            "wide": widened_release(golden_dir, tmp_path_factory.mktemp("wide_release"))}


@pytest.fixture(scope="module")
def converted(releases, tmp_path_factory):
    """{(release, format): folder of .gguf files}, written by the converter."""
    out = {}
    for release, source in releases.items():
        for fmt in FORMATS:
            folder = tmp_path_factory.mktemp(f"{release}_{fmt}")
            assert convert.main([str(source), str(folder), "--prefix", "mova_tiny", "--dtype", fmt,
                                 "--components", "high", "low", "audio_dit", "bridge"]) == 0
            out[release, fmt] = folder
    return out


def _source(releases, release, part):
    folder = {"high": "video_dit", "low": "video_dit_2", "audio": "audio_dit", "bridge": "dual_tower_bridge"}[part]
    return open_checkpoint(releases[release], folder)


def test_converter_names_and_types(converted, releases):
    """Files named by type; the blocks' Linear weights quantised (the asked type where rows split into its blocks,
    else its 32-block fallback, else BF16); everything else BF16 or F32; metadata as the safetensors files."""
    seen = set()
    for (release, fmt), folder in converted.items():
        assert sorted(p.name for p in folder.iterdir()) == sorted(_gguf_name(p, fmt) for p in PARTS)
        for part, (kind, _) in PARTS.items():
            ckpt = open_gguf(folder / _gguf_name(part, fmt))
            source = _source(releases, release, part)
            assert ckpt.shapes() == source.shapes()
            assert ckpt.metadata["mova.component"] == kind and ckpt.metadata["mova.format"] == fmt
            assert ckpt.metadata.get("mova.expert") == {"high": "high", "low": "low"}.get(part)
            for key, type_name in ckpt.dtypes().items():
                shape = ckpt.shapes()[key]
                target = key.endswith(".weight") and len(shape) == 2 and key.startswith(
                    ("blocks.", "audio_to_video_conditioners.", "video_to_audio_conditioners."))
                if not target:
                    assert type_name == ("F32" if len(shape) == 1 else "BF16"), key
                    continue
                asked = fmt.split("_", 1)[1].upper()
                fits = [t for t in (asked, {"Q6_K": "Q8_0", "Q5_K": "Q5_0", "Q4_K": "Q4_0"}.get(asked, asked))
                        if shape[-1] % TYPES[t].block_size == 0]
                assert type_name == (fits[0] if fits else "BF16"), key
                seen.add(type_name)
    assert seen - {"BF16"} == set(QUANTIZED_TYPES)  # every type this pack reads came out of the converter


def test_every_type_dequantises_as_the_gguf_library(converted, releases):
    from gguf import GGUFReader
    from gguf.quants import dequantize as numpy_dequantize

    checked = set()
    for (release, fmt), folder in converted.items():
        for part in ("high", "bridge"):
            path = folder / _gguf_name(part, fmt)
            ours, source = open_gguf(path), _source(releases, release, part)
            for tensor in GGUFReader(path).tensors:
                reference = numpy_dequantize(tensor.data, tensor.tensor_type)
                mine = ours.dequantized(tensor.name)
                assert np.array_equal(mine.numpy().reshape(-1), reference.reshape(-1)), tensor.name
                type_name = ours.dtypes()[tensor.name]
                if type_name in QUANTIZED_TYPES:
                    error = rel_l2(mine, source.get(tensor.name).float())
                    assert error < WEIGHT_BOUND[type_name], (tensor.name, type_name, error)
                    checked.add(type_name)
    assert checked == set(QUANTIZED_TYPES)


def test_loader_keeps_weights_quantised_and_dequantises_on_the_fly(converted, releases):
    for release, fmt in (("wide", "gguf_q4_k"), ("golden", "gguf_q8_0")):
        path = converted[release, fmt] / _gguf_name("high", fmt)
        ckpt = open_gguf(path)
        model = load_component(path, "video_dit")
        layers = quantized_layers(model)
        assert {f"{n}.weight" for n in layers} == set(ckpt.quantized_keys) and layers
        for layer in layers.values():  # Q8_0: 34 bytes per 32 values, Q4_K: 144 per 256 (bf16: 64, 512)
            assert layer.weight.numel() <= 0.54 * math.prod(layer.quant_shape) * 2
        name, layer = next(iter(layers.items()))
        assert layer.weight.dtype == torch.uint8
        assert weight_shapes(model)[f"{name}.weight"] == ckpt.shapes()[f"{name}.weight"]
        x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(0))
        expected = torch.nn.functional.linear(x, ckpt.dequantized(f"{name}.weight"), layer.bias.float())
        assert rel_l2(layer(x), expected) < 1e-6
        # a float dtype dequantises the whole file into plain layers
        plain = load_component(path, "video_dit", dtype=torch.float32)
        assert not quantized_layers(plain)
        assert torch.equal(plain.get_submodule(name).weight, ckpt.dequantized(f"{name}.weight"))
        # the float tensors load as they are stored, in bf16
        assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if p.is_floating_point())


def test_dequantisation_runs_on_the_inputs_device_and_dtype(converted):
    path = converted["wide", "gguf_q6_k"] / _gguf_name("bridge", "gguf_q6_k")
    model = load_component(path, "dual_tower_bridge")
    layer = next(iter(quantized_layers(model).values()))
    x = torch.randn(2, layer.in_features, dtype=torch.float16)
    out = layer(x)
    assert out.dtype == torch.float16
    expected = torch.nn.functional.linear(x.float(), layer.dequantized_weight(), layer.bias.float())
    assert rel_l2(out.float(), expected) < 2e-3


def test_non_mova_and_broken_files_are_named(converted, tmp_path):
    path = converted["golden", "gguf_q8_0"] / _gguf_name("high", "gguf_q8_0")
    # not a GGUF file at all
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.gguf.*not a readable GGUF file.*mova_model\.convert"):
        load_component(junk, "video_dit")
    # cut short
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.gguf.*(truncated|cut short|not a readable).*again"):
        load_component(cut, "video_dit")
    # a language model's GGUF
    llama = write_raw_gguf(tmp_path / "llama.gguf", {
        "token_embd.weight": (np.zeros((8, 32), np.float32), "F32"),
        "blk.0.attn_q.weight": (np.zeros((32, 32), np.float32), "F32")}, arch="llama")
    with pytest.raises(CheckpointError, match=r"llama\.gguf holds no MOVA component.*video_dit"):
        load_component(llama, "video_dit")
    # a type we do not dequantise (Q2_K: 84 bytes per 256 values)
    q2 = write_raw_gguf(tmp_path / "q2k.gguf", {"blocks.0.ffn.0.weight": (np.zeros((4, 84), np.uint8), "Q2_K")})
    with pytest.raises(CheckpointError, match=r"q2k\.gguf stores blocks\.0\.ffn\.0\.weight as Q2_K.*Q8_0.*convert"):
        load_component(q2, "video_dit")
    # another component than asked
    bridge = converted["golden", "gguf_q8_0"] / _gguf_name("bridge", "gguf_q8_0")
    with pytest.raises(CheckpointError, match=r"dual_tower_bridge_q8_0\.gguf holds the MOVA dual-tower bridge"):
        load_component(bridge, "video_dit")
    # fp8 is not a way to load a GGUF file
    with pytest.raises(CheckpointError, match=r"GGUF file.*not as fp8"):
        load_component(path, "video_dit", dtype=torch.float8_e4m3fn)


def test_converter_refuses_to_overwrite(converted, releases, capsys):
    folder = converted["golden", "gguf_q6_k"]
    before = (folder / _gguf_name("high", "gguf_q6_k")).stat().st_mtime_ns
    args = [str(releases["golden"]), str(folder), "--prefix", "mova_tiny", "--dtype", "gguf_q6_k", "--components",
            "high"]
    assert convert.main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (folder / _gguf_name("high", "gguf_q6_k")).stat().st_mtime_ns == before
    assert convert.main([*args, "--overwrite"]) == 0
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_gguf_experts_take_compute_layers_of_the_host(converted):
    """Quantised layers are the given operations' Linear with dequantisation mixed in (ComfyUI passes its
    comfy.ops families); their float Linears stay that family's own."""
    from types import SimpleNamespace

    class HostLinear(torch.nn.Linear):
        pass

    ops = SimpleNamespace(Linear=HostLinear, Conv1d=torch.nn.Conv1d, Conv3d=torch.nn.Conv3d,
                          ConvTranspose1d=torch.nn.ConvTranspose1d, LayerNorm=torch.nn.LayerNorm)
    path = converted["golden", "gguf_q8_0"] / _gguf_name("high", "gguf_q8_0")
    model = load_component(path, "video_dit", operations=ops)
    linears = [m for m in model.modules() if isinstance(m, HostLinear)]
    assert linears and all(isinstance(m, GGUFLinearMixin) for m in linears)
    assert any(m.quant_type is None for m in linears) and any(m.quant_type for m in linears)



def test_loader_lists_find_and_check_gguf_files(converted, tmp_path):
    """The loaders' lists: .gguf files (which ComfyUI's own lists leave out) are found, told apart by what they
    hold, and checked at queue time like safetensors files."""
    from comfyui_mova.nodes.loaders.model_checks import check_choice, filter_choices, identify_path
    from comfyui_mova.nodes.loaders.model_files import expert_role, gguf_files, list_choices

    root = tmp_path / "diffusion_models"
    (root / "mova").mkdir(parents=True)
    (root / ".hidden").mkdir()
    source = converted["golden", "gguf_q4_k"]
    for part in PARTS:
        shutil.copy(source / _gguf_name(part, "gguf_q4_k"), root / "mova" / _gguf_name(part, "gguf_q4_k"))
    shutil.copy(source / _gguf_name("high", "gguf_q4_k"), root / ".hidden" / "skipped.gguf")
    found = gguf_files([root])
    assert found == sorted(f"mova/{_gguf_name(p, 'gguf_q4_k')}" for p in PARTS)
    choices = list_choices(found, [root])
    assert filter_choices(choices, [root], ("video_dit",), "MOVA Video Expert Loader") == sorted(
        f"mova/{_gguf_name(p, 'gguf_q4_k')}" for p in ("high", "low"))
    high = f"mova/{_gguf_name('high', 'gguf_q4_k')}"
    assert identify_path(root / high).kind == "video_dit"
    assert expert_role(root / high) == "high_noise"
    assert check_choice(high, [root], "diffusion_models", "video_dit") is None
    problem = check_choice(high, [root], "diffusion_models", "dual_tower_bridge")
    assert "holds a MOVA video expert" in problem and "dual-tower bridge" in problem
