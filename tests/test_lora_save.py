"""Saving a trained LoRA: the official key layout in .safetensors (rank/alpha in the metadata), no silent
overwrite, the official folder (lora_weights.pt + lora_config.pt) and its command line, and the saved file
going through the MOVA LoRA Loader's path as W + s·(alpha/rank)·B·A; plus the loss plot and the report."""

import hashlib

import pytest
import torch
from safetensors import safe_open

from comfyui_mova.mova_model.lora import lora_from_tensors, read_lora
from comfyui_mova.mova_model.lora_save import lora_tensors, main, save_lora_safetensors, save_official_folder
from comfyui_mova.mova_model.lora_train import make_lora_set
from comfyui_mova.mova_model.training import HIGH, LOW, StepRecord, TrainResult, TrainSettings
from comfyui_mova.nodes.lora_patches import SLOTS, comfy_lora_weights, plan_lora
from comfyui_mova.nodes.loss_plot import COLOURS, plot_losses
from comfyui_mova.nodes.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.training_run import lora_save_paths, report, run_folder

RANK, ALPHA = 4, 6.0


@pytest.fixture(scope="module")
def parts(golden_dir):
    ckpt = golden_dir / "checkpoint"
    return dict(zip(SLOTS, (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
                            load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))))


@pytest.fixture(scope="module")
def trained(parts):
    """A LoRA over every part, as MOVA Train LoRA outputs it (random B instead of trained, to be visible)."""
    models = {"video_dit": parts["high_noise_expert"].model, "video_dit_2": parts["low_noise_expert"].model,
              "audio_dit": parts["audio_tower"].model.audio_dit, "dual_tower_bridge": parts["audio_tower"].model.bridge}
    lora = make_lora_set(models, RANK, ALPHA, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in lora.named_parameters():
            if "lora_B" in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return lora_from_tensors(lora.state_dict(), {"rank": RANK, "alpha": ALPHA}, "trained")


def test_safetensors_in_the_official_layout(trained, tmp_path):
    path = save_lora_safetensors(trained, tmp_path / "mova" / "my.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        a = f.get_tensor("video_dit.blocks.0.self_attn.q.lora_A.weight")
    assert meta["rank"] == str(RANK) and float(meta["alpha"]) == ALPHA
    assert "video_dit.blocks.0.self_attn.q.lora_B.weight" in keys
    assert "dual_tower_bridge.audio_to_video_conditioners.0.inner.k.lora_A.weight" in keys
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert a.dtype == torch.float32 and a.shape[0] == RANK
    again = read_lora(path)
    assert again.unknown_keys == []
    for part, patches in trained.patches.items():
        for key, patch in patches.items():
            other = again.patches[part][key]
            assert torch.equal(other.down, patch.down) and torch.equal(other.up, patch.up)
            assert other.scale == pytest.approx(ALPHA / RANK)
    half = save_lora_safetensors(trained, tmp_path / "half.safetensors", dtype=torch.bfloat16)
    assert read_lora(half).patches["video_dit"]["blocks.0.self_attn.q.weight"].down.dtype == torch.bfloat16


def test_existing_files_are_not_overwritten_unasked(trained, tmp_path):
    path = save_lora_safetensors(trained, tmp_path / "my.safetensors")
    stamp = path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists: choose another file name, or allow overwriting"):
        save_lora_safetensors(trained, path)
    assert path.read_bytes() == stamp
    save_lora_safetensors(trained, path, dtype=torch.bfloat16, overwrite=True)
    assert path.read_bytes() != stamp
    with pytest.raises(FileExistsError, match="switch overwrite on"):
        lora_save_paths(tmp_path, "my", overwrite=False, official=False)
    target, folder = lora_save_paths(tmp_path, "sub/new.safetensors", overwrite=False, official=True)
    assert target == tmp_path / "sub" / "new.safetensors" and folder == tmp_path / "sub" / "new_official"
    for bad, problem in (("../escape", "goes up out of its folder"), ("/abs/path", "is an absolute path"),
                         ("a/../../b", "goes up out of its folder"), ("", "is empty")):
        with pytest.raises(ValueError, match=f"MOVA Save LoRA's filename '.*' {problem}.*: give a name inside"):
            lora_save_paths(tmp_path, bad, overwrite=False, official=False)
    with pytest.raises(ValueError, match="MOVA Train LoRA's run_name '..' goes up out of its folder"):
        run_folder(tmp_path, "..")


def test_official_folder_and_command_line(trained, tmp_path, capsys):
    weights = save_official_folder(trained, tmp_path / "official")
    state = torch.load(weights, weights_only=True)
    config = torch.load(tmp_path / "official" / "lora_config.pt", weights_only=True)
    tensors, settings = lora_tensors(trained)
    assert set(state) == set(tensors) and all(torch.equal(state[k], tensors[k]) for k in state)
    # rank/alpha for the official loaders; target_modules: the pipeline parts its inference script injects into
    # and the digest of the lora_weights.pt it belongs to (a pair cut apart by an interrupted save is refused)
    assert config == {"rank": RANK, "alpha": ALPHA,
                      "target_modules": ["video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"],
                      "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert read_lora(weights).patches.keys() == trained.patches.keys()
    source = save_lora_safetensors(trained, tmp_path / "x.safetensors")
    assert main([str(source), str(tmp_path / "cli")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert set(torch.load(tmp_path / "cli" / "lora_weights.pt", weights_only=True)) == set(tensors)
    assert main([str(source), str(tmp_path / "cli")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_saved_lora_goes_through_the_lora_loader_as_w_plus_scaled_ba(trained, parts, tmp_path):
    path = save_lora_safetensors(trained, tmp_path / "my.safetensors")
    shapes = {slot: {k: tuple(v.shape) for k, v in p.model.state_dict().items()} for slot, p in parts.items()}
    strengths = {"video_dit": 0.5, "video_dit_2": 1.0, "audio_dit": -1.0, "dual_tower_bridge": 2.0}
    plan = plan_lora(read_lora(path), shapes, strengths)
    assert plan.misses == [] and plan.unknown == []
    assert plan.applied == {c: len(trained.patches[c]) for c in strengths}
    for slot, entries in plan.patches.items():
        state = parts[slot].model.state_dict()
        for patches, strength in entries:
            for key, patch in patches.items():
                up, down, alpha = comfy_lora_weights(patch)[:3]
                applied = state[key] + strength * (alpha / down.shape[0]) * (up @ down)   # ComfyUI's LoRA adapter
                component, module = _component(slot, key)
                a = trained.patches[component][module].down
                b = trained.patches[component][module].up
                assert torch.allclose(applied, state[key] + strength * (ALPHA / RANK) * (b @ a), atol=1e-6)


def _component(slot, key):
    if slot == "high_noise_expert":
        return "video_dit", key
    if slot == "low_noise_expert":
        return "video_dit_2", key
    prefix, rest = key.split(".", 1)
    return {"audio_dit": "audio_dit", "bridge": "dual_tower_bridge"}[prefix], rest


def _history(steps):
    return [StepRecord(step=i + 1, expert=HIGH if i % 2 == 0 else LOW, loss=2.0 / (i + 1) + 0.1 * (i % 2),
                       video_loss=1.5 / (i + 1), audio_loss=0.5 / (i + 1), timestep=950.0 if i % 2 == 0 else 400.0)
            for i in range(steps)]


def test_loss_plot_has_a_line_per_expert():
    image = plot_losses(_history(20))
    assert image.shape[0] == 1 and image.shape[-1] == 3 and image.dtype == torch.float32
    pixels = (image[0] * 255).round().to(torch.int64).reshape(-1, 3)
    for colour in COLOURS.values():
        assert (pixels == torch.tensor(colour)).all(dim=1).sum() > 50, colour
    assert plot_losses([]).shape == image.shape
    assert plot_losses(_history(1)).shape == image.shape


def test_report_says_what_was_trained():
    settings = TrainSettings(steps=20)
    text = report(TrainResult(state={}, rank=8, alpha=8.0, history=_history(20), resumed_from=10,
                              checkpoint="run/step_000020.safetensors"), settings)
    assert text.startswith("trained steps 11-20 (continued from the checkpoint at step 10)")
    assert "high-noise loss" in text and "low-noise loss" in text and "checkpoint: run/step_000020" in text
    done = report(TrainResult(state={}, rank=8, alpha=8.0, history=_history(20), resumed_from=20), settings)
    assert done.startswith("nothing to train: the run already has 20 steps")
