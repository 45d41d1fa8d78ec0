"""fp8 weights: quantisation, the fp8 Linear, loading (quantise on load, our files, ComfyUI's scaled-fp8
and plain fp8 files), and the error of an fp8 joint forward versus bf16 on the golden tiny model."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from comfyui_mova.mova_model.sampling import joint
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError, open_checkpoint
from comfyui_mova.mova_model.weights.detect import detect_config
from comfyui_mova.mova_model.networks.ops import Fp8Linear, torch_ops
from comfyui_mova.mova_model.weights.quantize import (dequantize, is_fp8_target, quantize_fp8, quantize_fp8_,
                                              rounding_bound)
from mova_pack import TESTS
from mova_testing import FP8_VS_BF16_BOUND, STEP_CASES, rel_l2

SUPPORT = TESTS / "support"

def _towers(ckpt, dtype):
    load = lambda kind, folder: loading.load_component(ckpt, kind, dtype=dtype, component=folder)  # noqa: E731
    return {"high": load("video_dit", "video_dit"), "low": load("video_dit", "video_dit_2"),
            "audio": load("audio_dit", "audio_dit"), "bridge": load("dual_tower_bridge", "dual_tower_bridge")}


def _forward(towers, case, g, fps, dtype=torch.bfloat16):
    expert, t_video, t_audio, case_fps = STEP_CASES[case]
    return joint.joint_forward(
        towers[expert], towers["audio"], towers["bridge"],
        torch.cat([g["noise_video"], g["condition"]], dim=1).to(dtype), g["noise_audio"].to(dtype),
        g["context_pos"].to(dtype), torch.tensor([float(t_video)]), torch.tensor([float(t_audio)]),
        case_fps or fps, dtype=dtype,
    )


def _fp8_layers(model):
    return {n for n, m in model.named_modules() if isinstance(m, Fp8Linear) and m.scale_weight is not None}


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_quantize_is_within_half_an_fp8_step(fp8):
    torch.manual_seed(0)
    w = torch.randn(64, 96) * 0.02
    w[0, 0] = 0.5   # one outlier sets the scale
    q, scale = quantize_fp8(w, fp8)
    assert q.dtype == fp8 and scale.shape == () and scale.dtype == torch.float32
    assert abs(float(scale) - 0.5 / torch.finfo(fp8).max) / float(scale) < 2 ** -8   # amax / fp8 max (bf16-rounded)
    err = (dequantize(q, scale, torch.float32) - w).abs()
    assert bool((err <= rounding_bound(w, scale, fp8)).all())
    assert err.max() > 0   # it really is quantised
    zeros, one = quantize_fp8(torch.zeros(3, 3), fp8)
    assert float(one) == 1.0 and not zeros.float().any()


def test_fp8_linear_computes_with_the_dequantised_weight():
    torch.manual_seed(0)
    layer = Fp8Linear(32, 16)
    q, scale = quantize_fp8(layer.weight.detach())
    layer.weight, layer.scale_weight = nn.Parameter(q, requires_grad=False), nn.Parameter(scale, requires_grad=False)
    x = torch.randn(4, 32)
    ref = torch.nn.functional.linear(x, dequantize(q, scale, torch.float32), layer.bias)
    assert torch.equal(layer(x), ref)
    assert set(layer.state_dict()) == {"weight", "bias", "scale_weight"}   # ComfyUI's key layout
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_quantise_on_load_keeps_the_rest_in_bf16(golden_dir):
    ckpt = golden_dir / "checkpoint"
    model = loading.load_component(ckpt, "video_dit", dtype=torch.float8_e4m3fn)
    state = model.state_dict()
    fp8_layers = _fp8_layers(model)
    assert len(fp8_layers) == 10 * model.config.num_layers   # 4 + 4 attention, 2 FFN per block
    for key, value in state.items():
        module = key.rsplit(".", 1)[0]
        if module in fp8_layers and key.endswith(".weight"):
            assert value.dtype == torch.float8_e4m3fn and is_fp8_target(key, tuple(value.shape)), key
        elif key.endswith(".scale_weight"):
            assert module in fp8_layers and value.dtype == torch.float32 and value.shape == ()
        else:
            assert value.dtype == torch.bfloat16, key
    assert state["head.head.weight"].dtype == torch.bfloat16
    bridge = loading.load_component(ckpt, "dual_tower_bridge", dtype=torch.float8_e4m3fn)
    assert len(_fp8_layers(bridge)) == 8 * len(bridge.audio_to_video_conditioners)


def test_fp8_joint_forward_error_versus_bf16_is_bounded(golden_dir, golden_tensors, golden_cases):
    ckpt = golden_dir / "checkpoint"
    bf16, fp8 = _towers(ckpt, torch.bfloat16), _towers(ckpt, torch.float8_e4m3fn)
    assert _fp8_layers(fp8["high"]) and _fp8_layers(fp8["audio"]) and _fp8_layers(fp8["bridge"])
    for case in STEP_CASES:
        ref = _forward(bf16, case, golden_tensors, golden_cases["fps"])
        out = _forward(fp8, case, golden_tensors, golden_cases["fps"])
        assert torch.isfinite(out.video).all() and torch.isfinite(out.audio).all()
        for name in ("video", "audio"):
            err = rel_l2(getattr(out, name), getattr(ref, name))
            assert 0 < err < FP8_VS_BF16_BOUND, (case, name, err)
            assert rel_l2(getattr(out, name), golden_tensors[f"{case}_{name}"]) < FP8_VS_BF16_BOUND, (case, name)


def _comfy_scaled_file(golden_dir, path, marker, scale_input=False):
    """A video expert saved the way ComfyUI's scaled-fp8 files are: every Linear weight fp8 with a
    0-dim float32 ``scale_weight``, a ``scaled_fp8`` marker, keys under model.diffusion_model."""
    model = loading.load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float32)
    state, linears = {}, {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for key, value in model.state_dict().items():
        module = key.rsplit(".", 1)[0]
        if module in linears and key.endswith(".weight"):
            q, scale = quantize_fp8(value)
            state[key], state[module + ".scale_weight"] = q, scale
            if scale_input:
                state[module + ".scale_input"] = torch.ones(())
        else:
            state[key] = value.contiguous()
    if marker is not None:
        state["scaled_fp8"] = marker
    save_file({"model.diffusion_model." + k: v for k, v in state.items()}, str(path))
    return state


@pytest.mark.parametrize("marker", [torch.empty(2, dtype=torch.float8_e4m3fn), torch.empty(0, dtype=torch.float32)])
def test_comfyui_scaled_fp8_file_loads(golden_dir, golden_tensors, golden_cases, tmp_path, marker):
    path = tmp_path / "wan_fp8_scaled.safetensors"
    state = _comfy_scaled_file(golden_dir, path, marker, scale_input=True)
    config = detect_config(open_checkpoint(golden_dir / "checkpoint", "video_dit"), "video_dit")  # tiny heads
    fp8 = loading.load_component(path, "video_dit", config=config)   # as stored: fp8 Linears, float32 elsewhere
    assert "head.head" in _fp8_layers(fp8)   # a stored-fp8 Linear stays fp8 even outside the blocks
    assert torch.equal(fp8.state_dict()["blocks.0.ffn.0.scale_weight"], state["blocks.0.ffn.0.scale_weight"])
    plain = loading.load_component(path, "video_dit", dtype=torch.float32, config=config)   # dequantised
    assert not _fp8_layers(plain) and all(type(m) is not Fp8Linear for m in plain.modules())
    assert torch.equal(plain.state_dict()["blocks.1.self_attn.q.weight"],
                       dequantize(state["blocks.1.self_attn.q.weight"], state["blocks.1.self_attn.q.scale_weight"],
                                  torch.float32))
    others = _towers(golden_dir / "checkpoint", torch.float32)
    out_fp8 = _forward({**others, "high": fp8}, "step_high", golden_tensors, golden_cases["fps"], torch.float32)
    out_plain = _forward({**others, "high": plain}, "step_high", golden_tensors, golden_cases["fps"], torch.float32)
    assert torch.equal(out_fp8.video, out_plain.video) and torch.equal(out_fp8.audio, out_plain.audio)


@pytest.mark.parametrize("fp8_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_plain_unscaled_fp8_file_loads(golden_dir, tmp_path, fp8_dtype):
    source = loading.load_component(golden_dir / "checkpoint", "audio_dit", dtype=torch.float32)
    state = {k: (v.to(fp8_dtype) if is_fp8_target(k, tuple(v.shape)) else v.bfloat16()).contiguous()
             for k, v in source.state_dict().items()}
    path = tmp_path / "audio_dit_fp8.safetensors"
    save_file(state, str(path))
    model = loading.load_component(path, "audio_dit")
    loaded = model.state_dict()
    assert loaded["blocks.0.ffn.0.weight"].dtype == fp8_dtype
    assert float(loaded["blocks.0.ffn.0.scale_weight"]) == 1.0   # no scale in the file: scale 1
    assert loaded["head.head.weight"].dtype == torch.bfloat16
    x = torch.randn(1, source.config.in_dim, 8, dtype=torch.bfloat16)
    ref = loading.load_component(path, "audio_dit", dtype=torch.bfloat16)
    ctx = torch.randn(1, 5, source.config.text_dim, dtype=torch.bfloat16)
    assert torch.equal(model(x, torch.tensor([300.0]), ctx), ref(x, torch.tensor([300.0]), ctx))


def test_unknown_marker_is_named(golden_dir, tmp_path):
    path = tmp_path / "odd.safetensors"
    _comfy_scaled_file(golden_dir, path, torch.zeros(2, dtype=torch.int8))
    with pytest.raises(CheckpointError, match=rf"{path.name} has a 'scaled_fp8' marker of dtype I8.*convert"):
        loading.load_component(path, "video_dit")


def test_scale_keys_only_for_linear_layers(golden_dir, tmp_path):
    path = tmp_path / "extra_scale.safetensors"
    state = _comfy_scaled_file(golden_dir, path, torch.empty(2, dtype=torch.float8_e4m3fn))
    state["blocks.0.norm3.scale_weight"] = torch.ones(())
    del state["blocks.2.ffn.2.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"1 missing \(first: blocks\.2\.ffn\.2\.weight\); "
                                              r"1 unexpected \(first: blocks\.0\.norm3\.scale_weight\)"):
        loading.load_component(path, "video_dit")


def test_scale_on_a_float_weight_is_applied(golden_dir, tmp_path):
    """ComfyUI multiplies every Linear by its scale_weight; a float weight with a scale means w * scale."""
    source = loading.load_component(golden_dir / "checkpoint", "audio_dit", dtype=torch.float32)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    state["head.head.scale_weight"] = torch.tensor(0.5)
    path = tmp_path / "scaled_head.safetensors"
    save_file(state, str(path))
    model = loading.load_component(path, "audio_dit")
    assert torch.equal(model.state_dict()["head.head.weight"], state["head.head.weight"] * 0.5)


def test_operations_without_fp8_support_are_refused(golden_dir, tmp_path):
    path = tmp_path / "fp8.safetensors"
    _comfy_scaled_file(golden_dir, path, None)
    plain_ops = SimpleNamespace(**vars(torch_ops))
    with pytest.raises(CheckpointError, match=r"fp8.*no scale_weight.*fp8_ops.*dtype=torch\.bfloat16"):
        loading.load_component(path, "video_dit", operations=plain_ops)
    assert loading.stored_dtype(open_checkpoint(path)) == torch.float32


def test_quantize_in_place_matches_quantise_on_load(golden_dir):
    """``quantize_fp8_`` on a built model stores the same fp8 weights as loading with dtype=float8_e4m3fn."""
    model = loading.load_component(golden_dir / "checkpoint", "audio_dit", dtype=torch.float32)
    assert quantize_fp8_(model) is model
    loaded = loading.load_component(golden_dir / "checkpoint", "audio_dit", dtype=torch.float8_e4m3fn)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and _fp8_layers(model) == _fp8_layers(loaded) != set()
    for key in a:
        if b[key].dtype == torch.float8_e4m3fn or key.endswith("scale_weight"):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key].float(), b[key].float()), key
        else:
            assert torch.equal(a[key].bfloat16(), b[key]), key


def _converted_layouts(golden_dir, tmp_path):
    """The golden expert, audio DiT and bridge converted to fp8 twice: tmp_path/comfy_quant and tmp_path/scaled_fp8."""
    from comfyui_mova.mova_model import convert
    for layout in ("comfy_quant", "scaled_fp8"):
        assert convert.main([str(golden_dir / "checkpoint"), str(tmp_path / layout), "--components", "high",
                             "audio_dit", "bridge", "--fp8-layout", layout]) == 0
    return tmp_path


def _comfy_ops_check(comfy_root, python, out, *flags):
    run = subprocess.run([python, str(SUPPORT / "comfy_ops_check.py"), str(out), *flags],
                         cwd=comfy_root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _check_families(report):
    """Plain layers (fp8 dequantised on load) give exactly the plain torch forward; ComfyUI's fp8 layers give our
    fp8 forward within bf16 rounding (ComfyUI may apply the scale to the input instead of the weight; measured
    0.008 with scaled_fp8_ops on v0.3.64)."""
    for name, result in report["families"].items():
        video_err, audio_err = result["errors"]
        if name.startswith(("manual_cast/", "disable_weight_init/")):
            assert video_err == audio_err == 0.0 and result["storage"] == "torch.bfloat16", (name, result)
        else:
            assert video_err < 0.03 and audio_err < 0.03, (name, result)
            assert result["storage"] == "torch.float8_e4m3fn", (name, result)


@pytest.mark.skipif(not os.environ.get("COMFYUI_PATH"), reason="COMFYUI_PATH is not set (run with ComfyUI's Python)")
def test_converted_fp8_files_run_with_comfyui_ops(golden_dir, tmp_path):
    """Both fp8 layouts load through every comfy.ops family of the ComfyUI in COMFYUI_PATH: manual_cast and
    disable_weight_init (dequantised), scaled_fp8_ops (older ComfyUI), mixed_precision_ops (v0.8.0 and later)."""
    report = _comfy_ops_check(os.environ["COMFYUI_PATH"], sys.executable, _converted_layouts(golden_dir, tmp_path))
    families = {name.split("/")[0] for name in report["families"]}
    assert {"manual_cast", "disable_weight_init"} < families
    assert families & {"scaled_fp8_ops", "mixed_precision_ops"}, "this ComfyUI has no fp8 layers"
    _check_families(report)


NEWEST = os.environ.get("COMFYUI_NEWEST_PATH")


@pytest.mark.skipif(not NEWEST, reason="COMFYUI_NEWEST_PATH is not set (a ComfyUI with dynamic VRAM, whose comfy.ops "
                    "create Linear layers without weights; COMFYUI_NEWEST_PYTHON: its Python)")
def test_lazily_created_comfy_layers_load(golden_dir, tmp_path):
    """With dynamic VRAM's switch on, comfy.ops Linear layers have no weight until _load_from_state_dict runs: the
    loader learns keys and shapes from the config and fills every family through load_state_dict."""
    python = os.environ.get("COMFYUI_NEWEST_PYTHON", sys.executable)
    report = _comfy_ops_check(NEWEST, python, _converted_layouts(golden_dir, tmp_path), "lazy")
    if "skip" in report:
        pytest.skip(f"{NEWEST}: {report['skip']}")
    assert report["lazy"]
    _check_families(report)


def _comfy_quant_file(golden_dir, path, per_layer=True):
    """A video expert in ComfyUI's comfy_quant layout: Linear weights fp8 + X.weight_scale, and the format either
    as per-layer X.comfy_quant tensors or as the file's _quantization_metadata table; keys under diffusion_model."""
    from comfyui_mova.mova_model.weights.quantize import comfy_quant_entry
    model = loading.load_component(golden_dir / "checkpoint", "video_dit", dtype=torch.float32)
    state, layers = {}, {}
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for key, value in model.state_dict().items():
        module = key.rsplit(".", 1)[0]
        if module in linears and key.endswith(".weight"):
            state[key], state[module + ".weight_scale"] = quantize_fp8(value)
            layers[module] = {"format": "float8_e4m3fn"}
            if per_layer:
                state[module + ".comfy_quant"] = comfy_quant_entry(torch.float8_e4m3fn)
        else:
            state[key] = value.contiguous()
    metadata = None if per_layer else {"_quantization_metadata": json.dumps({"layers": layers})}
    save_file({"diffusion_model." + k: v for k, v in state.items()}, str(path), metadata=metadata)
    return state


@pytest.mark.parametrize("per_layer", [True, False])
def test_comfy_quant_file_loads_like_the_scaled_fp8_one(golden_dir, tmp_path, per_layer):
    """ComfyUI's newer layout (weight_scale + comfy_quant) gives the same fp8 model as the older one."""
    config = detect_config(open_checkpoint(golden_dir / "checkpoint", "video_dit"), "video_dit")
    state = _comfy_quant_file(golden_dir, tmp_path / "new.safetensors", per_layer)
    _comfy_scaled_file(golden_dir, tmp_path / "old.safetensors", torch.empty(2, dtype=torch.float8_e4m3fn))
    new = loading.load_component(tmp_path / "new.safetensors", "video_dit", config=config)
    old = loading.load_component(tmp_path / "old.safetensors", "video_dit", config=config)
    assert _fp8_layers(new) == _fp8_layers(old) != set()
    a, b = new.state_dict(), old.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key].float(), b[key].float()), key
    assert torch.equal(a["blocks.0.ffn.0.scale_weight"], state["blocks.0.ffn.0.weight_scale"])
    plain = loading.load_component(tmp_path / "new.safetensors", "video_dit", dtype=torch.float32, config=config)
    assert torch.equal(plain.state_dict()["blocks.1.self_attn.q.weight"],
                       dequantize(state["blocks.1.self_attn.q.weight"], state["blocks.1.self_attn.q.weight_scale"],
                                  torch.float32))


def test_unknown_quant_format_is_named(golden_dir, tmp_path):
    from comfyui_mova.mova_model.weights.quantize import QUANT_CONF_SUFFIX
    path = tmp_path / "nvfp4.safetensors"
    state = _comfy_quant_file(golden_dir, path)
    state["blocks.0.ffn.0" + QUANT_CONF_SUFFIX] = torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"nvfp4.safetensors: layer blocks\.0\.ffn\.0 is quantised as 'nvfp4'.*"
                                              r"fp8 formats.*mova_model\.convert"):
        loading.load_component(path, "video_dit")


def test_layers_that_do_not_read_the_asked_layout_are_named(golden_dir, tmp_path):
    """comfy_quant keys given to layers that do not take them: the error names the keys and the way out."""
    path = tmp_path / "fp8.safetensors"
    _comfy_quant_file(golden_dir, path)
    with pytest.raises(CheckpointError, match=r"fp8.safetensors: the layers of .* do not take this model's keys .*"
                                              r"weight_scale.*dtype=torch\.bfloat16"):
        loading.load_component(path, "video_dit", fp8_layout="comfy_quant")
