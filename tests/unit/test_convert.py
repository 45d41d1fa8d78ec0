"""The release converter (python -m mova_model.convert) and the streaming safetensors writer."""

import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from comfyui_mova.mova_model import convert
from comfyui_mova.mova_model.sampling import joint
from comfyui_mova.mova_model.weights import loading
from comfyui_mova.mova_model.weights.checkpoint import CheckpointError, open_checkpoint
from comfyui_mova.mova_model.configs import DiTConfig, config_to_dict
from comfyui_mova.mova_model.weights.detect import METADATA_CONFIG, METADATA_EXPERT, METADATA_KIND, detect_config
from comfyui_mova.mova_model.networks.dit import WanDiT
from comfyui_mova.mova_model.files.safetensors_stream import RawReader, StreamWriter, TensorSpec
from mova_pack import PACK_ROOT
from mova_testing import FP8_VS_BF16_BOUND, STEP_CASES, rel_l2

NAMES = {"high": "video_dit_high", "low": "video_dit_low", "audio": "audio_dit", "bridge": "dual_tower_bridge"}
KINDS = {"high": "video_dit", "low": "video_dit", "audio": "audio_dit", "bridge": "dual_tower_bridge"}


@pytest.fixture(scope="module")
def converted(golden_dir, tmp_path_factory):
    """{format: output folder} for the golden release converted to bf16, fp8 (comfy_quant keys, the default)
    and fp8 with the older scaled_fp8 keys ("fp8_legacy")."""
    out = {}
    for name, args in (("bf16", ["--dtype", "bf16"]), ("fp8_e4m3fn", []),
                       ("fp8_legacy", ["--dtype", "fp8_e4m3fn", "--fp8-layout", "scaled_fp8"])):
        folder = tmp_path_factory.mktemp(name)
        assert convert.main([str(golden_dir / "checkpoint"), str(folder), "--prefix", "mova_tiny", *args]) == 0
        out[name] = folder
    return out


def _file(folder, part, tag):
    return folder / f"mova_tiny_{NAMES.get(part, part)}_{tag}.safetensors"


def _towers_from(folder, tag):
    return {p: loading.load_component(_file(folder, p, tag), KINDS[p]) for p in NAMES}


def _forward(towers, case, g, fps):
    expert, tv, ta, case_fps = STEP_CASES[case]
    return joint.joint_forward(
        towers[expert], towers["audio"], towers["bridge"],
        torch.cat([g["noise_video"], g["condition"]], dim=1).bfloat16(), g["noise_audio"].bfloat16(),
        g["context_pos"].bfloat16(), torch.tensor([float(tv)]), torch.tensor([float(ta)]), case_fps or fps,
        dtype=torch.bfloat16)


def test_files_keys_and_metadata(converted, golden_dir):
    ckpt = golden_dir / "checkpoint"
    assert sorted(p.name for p in converted["fp8_e4m3fn"].iterdir()) == sorted(
        [f"mova_tiny_{NAMES[p]}_fp8_e4m3fn_scaled.safetensors" for p in NAMES]
        + ["mova_tiny_audio_vae_fp32.safetensors"])
    for part, folder in (("high", "video_dit"), ("low", "video_dit_2"), ("audio", "audio_dit"),
                         ("bridge", "dual_tower_bridge")):
        source = open_checkpoint(ckpt, folder)
        with safe_open(str(_file(converted["fp8_e4m3fn"], part, "fp8_e4m3fn_scaled")), framework="pt") as f:
            meta, keys = f.metadata(), set(f.keys())
            dtypes = {k: f.get_slice(k).get_dtype() for k in keys}
            confs = {k: json.loads(bytes(f.get_tensor(k).tolist())) for k in keys if k.endswith(".comfy_quant")}
        assert meta[METADATA_KIND] == KINDS[part] and meta["mova.format"] == "fp8_e4m3fn_scaled"
        assert meta["mova.fp8_layout"] == "comfy_quant"
        assert json.loads(meta[METADATA_CONFIG]) == config_to_dict(detect_config(source, KINDS[part]))
        assert meta.get(METADATA_EXPERT) == {"high": "high", "low": "low"}.get(part)
        fp8 = {k for k, d in dtypes.items() if d == "F8_E4M3"}
        assert fp8 and all(k.startswith(("blocks.", "audio_to_video", "video_to_audio")) for k in fp8)
        modules = {k[: -len(".weight")] for k in fp8}
        extra = {m + suffix for m in modules for suffix in (".weight_scale", ".comfy_quant")}
        assert keys == set(source.keys()) | extra
        assert all(dtypes[m + ".weight_scale"] == "F32" and dtypes[m + ".comfy_quant"] == "U8" for m in modules)
        assert all(c == {"format": "float8_e4m3fn", "full_precision_matrix_mult": True} for c in confs.values())
        assert {d for k, d in dtypes.items() if k not in fp8 and "." + k.rsplit(".", 1)[1] not in
                (".weight_scale", ".comfy_quant")} == {"BF16"}
        # the older layout on request: the same fp8 codes and scales under scale_weight, plus the scaled_fp8 marker
        legacy = _file(converted["fp8_legacy"], part, "fp8_e4m3fn_scaled")
        with safe_open(str(legacy), framework="pt") as f, \
                safe_open(str(_file(converted["fp8_e4m3fn"], part, "fp8_e4m3fn_scaled")), framework="pt") as g:
            assert set(f.keys()) == set(source.keys()) | {m + ".scale_weight" for m in modules} | {"scaled_fp8"}
            assert f.metadata()["mova.fp8_layout"] == "scaled_fp8"
            marker = f.get_tensor("scaled_fp8")
            for m in modules:
                codes = f.get_tensor(m + ".weight").view(torch.uint8)
                assert torch.equal(codes, g.get_tensor(m + ".weight").view(torch.uint8))
                assert torch.equal(f.get_tensor(m + ".scale_weight"), g.get_tensor(m + ".weight_scale"))
        assert marker.dtype == torch.float8_e4m3fn and marker.shape == (2,)
        with safe_open(str(_file(converted["bf16"], part, "bf16")), framework="pt") as f:
            assert set(f.keys()) == set(source.keys())
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    vae = load_file(str(_file(converted["bf16"], "audio_vae", "fp32")))
    assert {v.dtype for v in vae.values()} == {torch.float32}


def test_converted_files_give_the_source_forward(converted, golden_dir, golden_tensors, golden_cases):
    ckpt, g, fps = golden_dir / "checkpoint", golden_tensors, golden_cases["fps"]
    src = {p: loading.load_component(ckpt, KINDS[p], dtype=torch.bfloat16, component=f)
           for p, f in (("high", "video_dit"), ("low", "video_dit_2"), ("audio", "audio_dit"),
                        ("bridge", "dual_tower_bridge"))}
    src_fp8 = {p: loading.load_component(ckpt, KINDS[p], dtype=torch.float8_e4m3fn, component=f)
               for p, f in (("high", "video_dit"), ("low", "video_dit_2"), ("audio", "audio_dit"),
                            ("bridge", "dual_tower_bridge"))}
    bf16 = _towers_from(converted["bf16"], "bf16")
    fp8 = _towers_from(converted["fp8_e4m3fn"], "fp8_e4m3fn_scaled")
    legacy = _towers_from(converted["fp8_legacy"], "fp8_e4m3fn_scaled")
    for case in ("step_high", "step_low"):
        ref, ref_fp8 = _forward(src, case, g, fps), _forward(src_fp8, case, g, fps)
        out_bf16, out_fp8 = _forward(bf16, case, g, fps), _forward(fp8, case, g, fps)
        out_legacy = _forward(legacy, case, g, fps)
        for name in ("video", "audio"):
            # bf16 file = the source rounded to bf16: the same forward as the source loaded in bf16
            assert torch.equal(getattr(out_bf16, name), getattr(ref, name)), (case, name)
            # fp8 file (either layout) = the same fp8 codes and scales as quantising the source on load
            assert torch.equal(getattr(out_fp8, name), getattr(ref_fp8, name)), (case, name)
            assert torch.equal(getattr(out_legacy, name), getattr(ref_fp8, name)), (case, name)
            assert rel_l2(getattr(out_fp8, name), getattr(ref, name)) < FP8_VS_BF16_BOUND, (case, name)
    dac_src = loading.load_component(ckpt, "audio_vae", dtype=torch.float32)
    dac = loading.load_component(_file(converted["fp8_e4m3fn"], "audio_vae", "fp32"), "audio_vae")
    assert torch.equal(dac.decode(g["dac_latent"]), dac_src.decode(g["dac_latent"]))


def test_refuses_to_overwrite_unless_asked(converted, golden_dir, capsys):
    folder = converted["bf16"]
    target = _file(folder, "high", "bf16")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    args = [str(golden_dir / "checkpoint"), str(folder), "--dtype", "bf16", "--prefix", "mova_tiny"]
    assert convert.main(args) == 2
    err = capsys.readouterr().err
    assert "5 output file(s) already exist" in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before   # nothing touched
    assert convert.main(args + ["--components", "high", "--overwrite"]) == 0
    assert target.stat().st_mtime_ns != before[target.name]
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)   # no .part left behind


def test_overwrite_refusal_names_the_file(golden_dir, tmp_path, capsys):
    (tmp_path / "mova_x_audio_dit_bf16.safetensors").write_bytes(b"mine")
    args = [str(golden_dir / "checkpoint"), str(tmp_path), "--dtype", "bf16", "--prefix", "mova_x"]
    assert convert.main(args + ["--components", "audio_dit"]) == 2
    err = capsys.readouterr().err
    assert "mova_x_audio_dit_bf16.safetensors" in err and "--overwrite" in err
    assert (tmp_path / "mova_x_audio_dit_bf16.safetensors").read_bytes() == b"mine"


@pytest.mark.parametrize("key,fmt,layout", [
    ("blocks.1.ffn.0.weight", "fp8_e4m3fn", "comfy_quant"), ("blocks.1.ffn.0.weight", "fp8_e4m3fn", "scaled_fp8"),
    ("blocks.1.ffn.0.weight_scale", "fp8_e4m3fn", "comfy_quant"),
    ("blocks.1.ffn.0.comfy_quant", "fp8_e4m3fn", "comfy_quant"),
    ("head.head.weight", "fp8_e4m3fn", "comfy_quant"), ("blocks.0.self_attn.q.weight", "bf16", "comfy_quant")])
def test_verification_catches_a_changed_value(golden_dir, tmp_path, key, fmt, layout):
    ckpt = open_checkpoint(golden_dir / "checkpoint", "audio_dit")
    specs = convert.plan(ckpt, "audio_dit", fmt, layout)
    path = tmp_path / "part.safetensors"
    convert.write_part(ckpt, "audio_dit", specs, path, {"format": "pt"})
    convert.verify_part(path, ckpt, "audio_dit", specs, {"format": "pt"})   # a clean file passes
    with open(path, "rb") as f:
        start = 8 + struct.unpack("<Q", f.read(8))[0]
        begin = json.loads(f.read(start - 8))[key]["data_offsets"][0]
    data = bytearray(path.read_bytes())
    data[start + begin + 1] ^= 0x24   # a few bits of the second element
    path.write_bytes(bytes(data))
    module = key.rsplit(".", 1)[0]
    with pytest.raises(CheckpointError, match=rf"part.safetensors failed verification: {module}\..*Convert again"):
        convert.verify_part(path, ckpt, "audio_dit", specs, {"format": "pt"})


def test_missing_component_and_not_a_release(golden_dir, tmp_path, capsys):
    release = tmp_path / "MOVA-tiny"
    shutil.copytree(golden_dir / "checkpoint", release, ignore=shutil.ignore_patterns("audio_vae"))
    out = tmp_path / "out"
    assert convert.main([str(release), str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no audio_vae folder" in err and "--components" in err
    assert not out.exists()   # nothing written before the checks
    assert convert.main([str(release), str(out), "--components", "audio_dit", "bridge"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [   # prefix from the folder name
        "mova_tiny_audio_dit_fp8_e4m3fn_scaled.safetensors",
        "mova_tiny_dual_tower_bridge_fp8_e4m3fn_scaled.safetensors"]
    assert convert.main([str(release / "audio_dit"), str(out)]) == 2
    assert "not a MOVA release folder (no model_index.json)" in capsys.readouterr().err


def test_command_line_from_the_pack_folder(golden_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "mova_model.convert", str(golden_dir / "checkpoint"), str(tmp_path),
                          "--components", "bridge", "audio_vae"], cwd=PACK_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "[2/2] audio VAE" in run.stderr and "verify: 10%" in run.stderr and "100%" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mova_checkpoint_audio_vae_fp32.safetensors", "mova_checkpoint_dual_tower_bridge_fp8_e4m3fn_scaled.safetensors"]


def test_stream_writer_matches_safetensors(tmp_path):
    torch.manual_seed(0)
    tensors = {"b": torch.randn(3, 5).bfloat16(), "a.scale": torch.tensor(0.25),
               "f8": torch.randn(7).to(torch.float8_e4m3fn), "empty": torch.empty(2, dtype=torch.float8_e5m2),
               "i": torch.arange(6).reshape(2, 3), "h": torch.randn(3).half()}
    specs = [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    path = tmp_path / "s.safetensors"
    with StreamWriter(path, specs, {"k": "v"}) as w:
        for key in reversed(list(tensors)):   # any order
            w.write(key, tensors[key])
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_len % 8 == 0
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
    ckpt = open_checkpoint(path)
    assert all(torch.equal(t, tensors[k]) for k, t in RawReader(ckpt).tensors())
    with pytest.raises(CheckpointError, match="incomplete"):
        with StreamWriter(tmp_path / "t.safetensors", specs) as w:
            w.write("b", tensors["b"])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_peak_memory_is_a_fraction_of_the_component(tmp_path):
    """A 350 MB float32 video expert (largest tensor 16 MB) converts to fp8 with a small fraction of it."""
    release = tmp_path / "MOVA-big"
    (release / "video_dit").mkdir(parents=True)
    (release / "model_index.json").write_text("{}")
    config = DiTConfig(dim=512, num_heads=4, num_layers=8, ffn_dim=8192, in_dim=36, out_dim=16, patch_size=(1, 2, 2))
    (release / "video_dit" / "config.json").write_text(json.dumps(config_to_dict(config)))
    state = WanDiT(config).state_dict()
    size = sum(v.numel() * 4 for v in state.values())
    save_file(state, str(release / "video_dit" / "diffusion_pytorch_model.safetensors"))
    largest = max(v.numel() * 4 for v in state.values())
    del state
    script = (
        "import sys\nfrom mova_model import convert\n"
        "def rss(field):\n"
        "    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(field))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\nbase = rss('VmRSS:')\n"
        f"assert convert.main([{str(release)!r}, {str(tmp_path / 'out')!r}, '--components', 'high']) == 0\n"
        "print(rss('VmHWM:') - base)\n")
    # One malloc arena and one thread: the measure then depends on the converter, not on thread scheduling.
    env = {**os.environ, "MALLOC_ARENA_MAX": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=PACK_ROOT, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    extra = int(run.stdout.split()[-1])
    print(f"converter peak RAM above the imports: {extra / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB component")
    # Holding the source component (or most of it) would need >= size; measured 50-92 MiB of 338.
    assert extra < size / 2, (extra, size, largest)


def test_output_that_is_a_file(golden_dir, tmp_path, capsys):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    assert convert.main([str(golden_dir / "checkpoint"), str(target)]) == 2
    assert f"the output {target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors"]
    assert convert.main([str(golden_dir / "checkpoint"), str(target / "sub")]) == 2
    assert f"cannot create the output folder {target / 'sub'}" in capsys.readouterr().err


@contextlib.contextmanager
def _unprivileged():
    """Act as an ordinary user (root ignores permissions): the effective uid 'nobody' for the duration."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_read_only_output_folder(golden_dir, capsys):
    folder = Path(tempfile.mkdtemp(prefix="mova_ro_"))
    try:
        folder.chmod(0o555)
        with _unprivileged():
            code = convert.main([str(golden_dir / "checkpoint"), str(folder), "--components", "audio_dit"])
        assert code == 2
        err = capsys.readouterr().err
        assert f"cannot write into the output folder {folder} (Permission denied): pass a folder you can write" in err
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_folders_made_for_a_failed_run_are_removed(golden_dir, tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    assert convert.main([str(golden_dir / "checkpoint" / "audio_dit"), str(out)]) == 2  # not a release
    assert "not a MOVA release folder" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
