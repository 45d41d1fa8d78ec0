"""What a model file holds, from its headers: the loaders' lists keep what each loader can load (files that cannot
be told stay, with a log note), and the queue-time checks name a missing or wrong file, its folder and the fix."""

import json
import logging
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_mova.mova_model.weights import sources as sources_module
from comfyui_mova.mova_model.configs import DiTConfig, config_from_dict
from comfyui_mova.mova_model.weights.detect import identify
from comfyui_mova.mova_model.networks.dit import WanDiT
from comfyui_mova.nodes.loaders import model_checks
from comfyui_mova.nodes.loaders.model_checks import check_choice, check_lora, check_tower_fit, filter_choices, identify_path
from comfyui_mova.nodes.loaders.model_files import list_choices

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge", "audio_vae")
KIND = {"video_dit": "video_dit", "video_dit_2": "video_dit", "audio_dit": "audio_dit",
        "dual_tower_bridge": "dual_tower_bridge", "audio_vae": "audio_vae"}
# A few keys of a Wan 2.1 VAE as ComfyUI stores it, and of a UMT5 text encoder (tiny tensors).
WAN_VAE_KEYS = ("encoder.conv1.weight", "encoder.downsamples.0.residual.0.gamma", "encoder.middle.0.residual.0.gamma",
                "encoder.head.2.weight", "conv1.weight", "conv2.weight", "decoder.conv1.weight",
                "decoder.upsamples.0.residual.0.gamma", "decoder.head.2.weight")
UMT5_KEYS = ("shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.final_layer_norm.weight")


def _tiny(path, keys):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.zeros(2, 2) for k in keys}, str(path))
    return path


def _wan_video(golden_dir, path, in_dim: int, extra: dict | None = None):
    """A Wan-family video DiT of the golden expert's size with ``in_dim`` input channels (real network)."""
    config = json.loads((golden_dir / "checkpoint" / "video_dit" / "config.json").read_text())
    dit = WanDiT(config_from_dict(DiTConfig, config | {"in_dim": in_dim}))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()} | (extra or {}), str(path))
    return path


@pytest.fixture()
def folders(golden_dir, tmp_path):
    """diffusion_models and vae folders as a user has them: the MOVA release, Wan files, a text encoder in the
    wrong place, a file nobody can tell and a damaged one."""
    diffusion, vae = tmp_path / "diffusion_models", tmp_path / "vae"
    for name in COMPONENTS:
        target = (vae if name == "audio_vae" else diffusion) / "MOVA-360p" / name
        shutil.copytree(golden_dir / "checkpoint" / name, target, copy_function=shutil.copyfile)
        for path in [target, *target.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    _tiny(vae / "wan_2.1_vae.safetensors", WAN_VAE_KEYS)
    _tiny(diffusion / "umt5_in_the_wrong_folder.safetensors", UMT5_KEYS)
    _tiny(diffusion / "mystery.safetensors", ("alpha.weight", "beta.bias"))
    _tiny(vae / "mystery_vae.safetensors", ("alpha.weight",))
    (diffusion / "broken.safetensors").write_bytes(b"\x08\x00")
    _wan_video(golden_dir, diffusion / "wan2.1_t2v.safetensors", in_dim=16)
    _wan_video(golden_dir, diffusion / "wan2.1_i2v.safetensors", in_dim=36, extra={"img_emb.proj.1.weight": torch.zeros(2, 2)})
    return diffusion, vae


def _choices(root):
    return list_choices([p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()], [root])


def test_components_and_other_files_are_told_apart(folders):
    diffusion, vae = folders
    for name in COMPONENTS:
        folder = (vae if name == "audio_vae" else diffusion) / "MOVA-360p" / name
        assert identify_path(folder).kind == KIND[name], name
    assert identify_path(vae / "wan_2.1_vae.safetensors").other.startswith("a Wan video VAE")
    assert identify_path(diffusion / "umt5_in_the_wrong_folder.safetensors").other.startswith("a text encoder")
    assert "input channels" in identify_path(diffusion / "wan2.1_t2v.safetensors").other
    assert "CLIP image input" in identify_path(diffusion / "wan2.1_i2v.safetensors").other
    unknown = identify_path(diffusion / "mystery.safetensors")
    assert (unknown.kind, unknown.other, unknown.problem) == (None, None, None)
    assert "is empty or truncated" in identify_path(diffusion / "broken.safetensors").problem


def test_lora_files_are_no_component():
    shapes = {f"video_dit.blocks.0.self_attn.q.lora_{ab}.weight": (2, 2) for ab in "AB"}
    assert identify(shapes) == (None, "a LoRA (not a MOVA component)")


def test_each_loader_lists_what_it_loads_and_what_cannot_be_told(folders, caplog):
    diffusion, vae = folders
    caplog.set_level(logging.INFO, logger=model_checks.__name__)
    unknown = ["broken.safetensors", "mystery.safetensors"]
    choices = _choices(diffusion)
    assert filter_choices(choices, [diffusion], ("video_dit",), "MOVA Video Expert Loader") == \
        sorted(unknown + ["MOVA-360p/video_dit", "MOVA-360p/video_dit_2"])
    assert filter_choices(choices, [diffusion], ("audio_dit",), "x") == sorted(unknown + ["MOVA-360p/audio_dit"])
    assert filter_choices(choices, [diffusion], ("dual_tower_bridge",), "x") == \
        sorted(unknown + ["MOVA-360p/dual_tower_bridge"])
    assert filter_choices(_choices(vae), [vae], ("audio_vae",), "MOVA Audio VAE Loader") == \
        ["MOVA-360p/audio_vae", "mystery_vae.safetensors"]
    notes = [r.getMessage() for r in caplog.records]
    assert any("MOVA Video Expert Loader lists mystery.safetensors although it cannot tell what it holds (no MOVA "
               "component (unknown keys, e.g. alpha.weight, beta.bias))" in n for n in notes)
    assert any("lists broken.safetensors" in n and "truncated" in n for n in notes)
    before = len(caplog.records)
    filter_choices(choices, [diffusion], ("video_dit",), "MOVA Video Expert Loader")
    assert len(caplog.records) == before  # one note per file, not one per listing


def test_headers_are_read_once_until_the_file_changes(folders, monkeypatch):
    diffusion, _ = folders
    opened = []
    real = model_checks.open_weights
    monkeypatch.setattr(model_checks, "open_weights", lambda path: opened.append(path) or real(path))
    target = diffusion / "swap.safetensors"
    _tiny(target, WAN_VAE_KEYS)
    for _ in range(3):
        assert identify_path(target).other.startswith("a Wan video VAE")
    assert len(opened) == 1
    save_file(load_file(str(diffusion / "MOVA-360p" / "audio_dit" / "diffusion_pytorch_model.safetensors")),
              str(target))
    assert identify_path(target).kind == "audio_dit" and len(opened) == 2
    assert sources_module.open_weights is real  # the loaders' own reader is untouched


def test_missing_file_names_folder_and_download(folders):
    diffusion, vae = folders
    problem = check_choice("MOVA-720p/video_dit_2", [diffusion], "diffusion_models", "video_dit")
    assert problem.startswith(f"'MOVA-720p/video_dit_2' is not in models/diffusion_models (looked in {diffusion}). "
                              "Put a MOVA video expert")
    assert ('hf download OpenMOSS-Team/MOVA-720p --include "video_dit_2/*" --local-dir '
            "models/diffusion_models/MOVA-720p") in problem
    problem = check_choice("MOVA-360p/audio_vae", [], "vae", "audio_vae")
    assert "(looked in no folder configured)" in problem and '--include "audio_vae/*" --local-dir models/vae/MOVA-360p' \
        in problem


def test_wrong_or_damaged_files_are_named(folders):
    diffusion, vae = folders
    assert check_choice("MOVA-360p/video_dit", [diffusion], "diffusion_models", "video_dit") is None
    problem = check_choice("MOVA-360p/audio_dit", [diffusion], "diffusion_models", "video_dit")
    assert problem == ("'MOVA-360p/audio_dit' in models/diffusion_models holds the MOVA audio DiT (audio_dit), but this "
                       "input takes a MOVA video expert (video_dit / video_dit_2). Pick a MOVA video expert: the "
                       "release's video_dit folder (high-noise expert) or video_dit_2 folder (low-noise expert), or a "
                       "converted single file.")
    problem = check_choice("wan_2.1_vae.safetensors", [vae], "vae", "audio_vae")
    assert "holds a Wan video VAE (not a MOVA component), but this input takes the MOVA audio VAE" in problem
    problem = check_choice("mystery.safetensors", [diffusion], "diffusion_models", "audio_dit")
    assert "holds no MOVA component (unknown keys, e.g. alpha.weight, beta.bias)" in problem
    problem = check_choice("broken.safetensors", [diffusion], "diffusion_models", "dual_tower_bridge")
    assert problem.startswith("'broken.safetensors' in models/diffusion_models cannot be read: ") and \
        "download it again" in problem


def test_bridge_of_another_width_is_named(folders, golden_dir):
    diffusion, _ = folders
    assert check_tower_fit("MOVA-360p/audio_dit", "MOVA-360p/dual_tower_bridge", [diffusion]) is None
    bridge = load_file(str(golden_dir / "checkpoint" / "dual_tower_bridge" / "diffusion_pytorch_model.safetensors"))
    wider = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if k.endswith(("inner.k.weight", "inner.v.weight")) and
             k.startswith("audio_to_video") else v for k, v in bridge.items()}
    save_file(wider, str(diffusion / "bridge_720p.safetensors"))
    problem = check_tower_fit("MOVA-360p/audio_dit", "bridge_720p.safetensors", [diffusion])
    width = bridge["audio_to_video_conditioners.0.inner.k.weight"].shape[1]
    assert problem == (f"the bridge 'bridge_720p.safetensors' (made for an audio DiT {2 * width} wide) does not fit the "
                       f"audio DiT 'MOVA-360p/audio_dit' ({width} wide): pick the audio_dit and dual_tower_bridge "
                       "folders of the same MOVA release.")


def test_lora_must_be_there(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "lora_weights.pt").write_bytes(b"x")
    assert check_lora("mine/lora_weights.pt", [tmp_path]) is None
    problem = check_lora("gone.safetensors", [tmp_path])
    assert problem.startswith(f"'gone.safetensors' is not in models/loras (looked in {tmp_path})")
    assert "connect MOVA Train LoRA's lora output" in problem


def test_a_name_outside_the_model_folder_is_refused_before_any_read(folders, tmp_path, monkeypatch):
    """The loaders check their own inputs, so ComfyUI does not hold a workflow's file name to its list: a name that
    is absolute or goes up with '..' is refused by its shape, and the file it points at (a real MOVA expert outside
    the folder) is never opened."""
    from comfyui_mova.nodes.loaders.model_files import find_choice, resolve_choice
    diffusion, _ = folders
    outside = tmp_path / "elsewhere" / "video_dit"
    shutil.copytree(diffusion / "MOVA-360p" / "video_dit", outside)
    opened = []
    monkeypatch.setattr(model_checks, "identify_path", lambda path: opened.append(path))
    for name, problem in (("../elsewhere/video_dit", "goes up out of the folder ('..')"),
                          ("MOVA-360p/../../elsewhere/video_dit", "goes up out of the folder ('..')"),
                          ("..\\elsewhere\\video_dit", "goes up out of the folder ('..')"),
                          (str(outside), "is an absolute path"), ("C:\\models\\x.safetensors", "is an absolute path")):
        assert check_choice(name, [diffusion], "diffusion_models", "video_dit") == \
            f"'{name}' {problem}: pick a file from the list of models/diffusion_models.", name
        assert find_choice(name, [diffusion]) is None
        with pytest.raises(FileNotFoundError, match=re.escape(f"{problem}: pick a file from the list of models/")):
            resolve_choice(name, [diffusion], "diffusion_models")
        assert check_lora(name, [diffusion]).startswith(f"'{name}' is not in models/loras")
    assert opened == []
    assert find_choice("MOVA-360p/video_dit", [diffusion]) == diffusion / "MOVA-360p" / "video_dit"
