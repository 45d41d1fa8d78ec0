"""MOVA LoRA Loader's logic without ComfyUI: which weights of which part get which patch, the LoRA weights
tuple in ComfyUI's adapter layout (W + s·(α/r)·B·A once applied), strengths, reports and refusals.
(ComfyUI's own patch application is checked in test_comfyui_lora.py.)"""

import copy

import pytest
import torch
from safetensors.torch import save_file

from comfyui_mova.mova_model.lora.load import merge_lora_, read_lora
from comfyui_mova.nodes.lora.patches import SLOTS, comfy_lora_weights, lora_choices, plan_lora
from comfyui_mova.nodes.loaders.model_files import load_audio_tower, load_video_expert
from comfyui_mova.nodes.sampling.run import check_roles

ALL_ON = {"video_dit": 1.0, "video_dit_2": 1.0, "audio_dit": 1.0, "dual_tower_bridge": 1.0}
# (LoRA component, module) pairs: attention and FFN layers of each part, both bridge directions
MODULES = [("video_dit", "blocks.0.self_attn.q"), ("video_dit", "blocks.1.ffn.0"),
           ("video_dit_2", "blocks.0.cross_attn.o"), ("audio_dit", "blocks.1.self_attn.v"),
           ("dual_tower_bridge", "audio_to_video_conditioners.0.inner.k"),
           ("dual_tower_bridge", "video_to_audio_conditioners.0.inner.q")]
PARTS = {"video_dit": ("high_noise_expert", ""), "video_dit_2": ("low_noise_expert", ""),
         "audio_dit": ("audio_tower", "audio_dit."), "dual_tower_bridge": ("audio_tower", "bridge.")}


@pytest.fixture(scope="module")
def parts(golden_dir):
    ckpt = golden_dir / "checkpoint"
    return dict(zip(SLOTS, (load_video_expert(ckpt / "video_dit"), load_video_expert(ckpt / "video_dit_2"),
                            load_audio_tower(ckpt / "audio_dit", ckpt / "dual_tower_bridge"))))


def _shapes(parts):
    return {slot: {k: tuple(v.shape) for k, v in part.model.state_dict().items()} for slot, part in parts.items()}


def _weight(parts, component, module):
    slot, prefix = PARTS[component]
    return parts[slot].model.state_dict()[prefix + module + ".weight"]


def _write_accelerate_lora(folder, parts, rank=4, alpha=8.0, modules=MODULES, extra=None):
    """lora_weights.pt + lora_config.pt as the official accelerate trainer writes them; returns the factors."""
    gen = torch.Generator().manual_seed(0)
    state, factors = {}, {}
    for component, module in modules:
        out_f, in_f = _weight(parts, component, module).shape
        a, b = torch.randn(rank, in_f, generator=gen), torch.randn(out_f, rank, generator=gen)
        state[f"{component}.{module}.lora_A.weight"], state[f"{component}.{module}.lora_B.weight"] = a, b
        factors[(component, module)] = (a, b)
    state |= extra or {}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "lora_weights.pt")
    torch.save({"rank": rank, "alpha": alpha, "target_modules": ["q", "k", "v", "o"]}, folder / "lora_config.pt")
    return folder / "lora_weights.pt", factors


def _apply_like_comfy(weight, weights_tuple, strength):
    """What ComfyUI's LoRA adapter adds for (up, down, alpha, ...): strength · alpha / down.shape[0] · up @ down."""
    up, down, alpha = weights_tuple[:3]
    return weight + strength * (alpha / down.shape[0]) * (up @ down)


def test_each_part_gets_its_components_under_the_patcher_keys(parts, tmp_path):
    path, factors = _write_accelerate_lora(tmp_path / "l", parts)
    strengths = {"video_dit": 0.7, "video_dit_2": 1.3, "audio_dit": -0.5, "dual_tower_bridge": 2.0}
    plan = plan_lora(read_lora(path), _shapes(parts), strengths)
    assert plan.misses == [] and plan.unknown == []
    assert plan.applied == {"video_dit": 2, "video_dit_2": 1, "audio_dit": 1, "dual_tower_bridge": 2}
    got = {slot: [(sorted(p), s) for p, s in entries] for slot, entries in plan.patches.items()}
    assert got == {
        "high_noise_expert": [(["blocks.0.self_attn.q.weight", "blocks.1.ffn.0.weight"], 0.7)],
        "low_noise_expert": [(["blocks.0.cross_attn.o.weight"], 1.3)],
        "audio_tower": [(["audio_dit.blocks.1.self_attn.v.weight"], -0.5),
                        (["bridge.audio_to_video_conditioners.0.inner.k.weight",
                          "bridge.video_to_audio_conditioners.0.inner.q.weight"], 2.0)],
    }
    for slot, entries in plan.patches.items():
        state = parts[slot].model.state_dict()
        for patches, strength in entries:
            for key, patch in patches.items():
                component = next(c for c, (s, prefix) in PARTS.items() if s == slot and key.startswith(prefix))
                a, b = factors[(component, key[len(PARTS[component][1]):-len(".weight")])]
                expected = state[key] + strength * (8.0 / 4) * (b @ a)  # W + s·(α/r)·B·A from the file itself
                assert torch.allclose(_apply_like_comfy(state[key], comfy_lora_weights(patch), strength),
                                      expected, atol=1e-5)


def test_patch_equals_the_core_merge(parts, tmp_path):
    """The node's patches and the plain-torch merge (mova_model.lora.merge_lora_) give the same weights."""
    path, _ = _write_accelerate_lora(tmp_path / "l", parts, alpha=2.0)
    lora = read_lora(path)
    plan = plan_lora(lora, _shapes(parts), ALL_ON | {"dual_tower_bridge": 0.6})
    bridge = copy.deepcopy(parts["audio_tower"].model.bridge)
    merge_lora_(bridge, lora.patches["dual_tower_bridge"], strength=0.6)
    (patches, strength), = [e for e in plan.patches["audio_tower"] if e[1] == 0.6]
    for key, patch in patches.items():
        original = parts["audio_tower"].model.state_dict()[key]
        merged = bridge.state_dict()[key[len("bridge."):]]
        assert torch.allclose(_apply_like_comfy(original, comfy_lora_weights(patch), strength), merged, atol=1e-5)
        assert not torch.allclose(original, merged)


def test_strength_zero_leaves_a_part_alone(parts, tmp_path):
    path, _ = _write_accelerate_lora(tmp_path / "l", parts)
    plan = plan_lora(read_lora(path), _shapes(parts), ALL_ON | {"video_dit_2": 0.0, "dual_tower_bridge": 0.0})
    assert "low_noise_expert" not in plan.patches
    assert [s for _, s in plan.patches["audio_tower"]] == [1.0]
    assert plan.report().startswith("lora_weights.pt: high-noise expert 2 weights at 1, audio DiT 1 weights at 1")
    nothing = plan_lora(read_lora(path), _shapes(parts), {c: 0.0 for c in ALL_ON})
    assert nothing.patches == {} and "nothing applied (all strengths 0)" in nothing.report()


def test_non_matching_and_unknown_keys_are_reported(parts, tmp_path):
    path, _ = _write_accelerate_lora(tmp_path / "l", parts, modules=MODULES[:1])
    state = torch.load(path, weights_only=True)
    state["video_dit.blocks.77.self_attn.q.lora_A.weight"] = torch.zeros(4, 8)
    state["video_dit.blocks.77.self_attn.q.lora_B.weight"] = torch.zeros(8, 4)
    ffn = _weight(parts, "audio_dit", "blocks.0.ffn.2").shape  # factors shaped for the transposed layer
    state["audio_dit.blocks.0.ffn.2.lora_A.weight"] = torch.zeros(4, ffn[0])
    state["audio_dit.blocks.0.ffn.2.lora_B.weight"] = torch.zeros(ffn[1], 4)
    state["text_encoder.block.0.lora_A.weight"] = torch.zeros(4, 8)
    torch.save(state, path)
    plan = plan_lora(read_lora(path), _shapes(parts), ALL_ON)
    assert plan.applied["video_dit"] == 1 and plan.applied["audio_dit"] == 0
    assert plan.misses == ["video_dit.blocks.77.self_attn.q.weight (no such weight)",
                           f"audio_dit.blocks.0.ffn.2.weight (LoRA {ffn[1]}x{ffn[0]}, weight {tuple(ffn)})"]
    assert plan.unknown == ["text_encoder.block.0.lora_A.weight"]
    report = plan.report()
    assert "2 LoRA weights do not fit this model and were skipped: video_dit.blocks.77" in report
    assert "1 keys are not MOVA LoRA weights and were skipped: text_encoder.block.0" in report
    assert "; nothing for the low-noise expert, audio DiT, bridge\n" in report  # their strengths do nothing


def test_long_problem_lists_are_cut_in_the_report(parts, tmp_path):
    extra = {f"unet.down.{i}.lora_A.weight": torch.zeros(1) for i in range(8)}
    path, _ = _write_accelerate_lora(tmp_path / "l", parts, modules=MODULES[:1], extra=extra)
    plan = plan_lora(read_lora(path), _shapes(parts), ALL_ON)
    assert len(plan.unknown) == 8
    assert "(and 3 more, see the log)" in plan.report()


def test_a_lora_that_fits_nothing_is_refused(parts, tmp_path):
    save_file({"video_dit.blocks.99.self_attn.q.lora_A.weight": torch.zeros(2, 8),
               "video_dit.blocks.99.self_attn.q.lora_B.weight": torch.zeros(8, 2)}, str(tmp_path / "big.safetensors"))
    with pytest.raises(ValueError, match=r"big.safetensors fits none of the loaded MOVA weights.*trained on this MOVA"):
        plan_lora(read_lora(tmp_path / "big.safetensors"), _shapes(parts), ALL_ON)
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(2, 8)}, str(tmp_path / "sdxl.safetensors"))
    with pytest.raises(ValueError, match=r"sdxl.safetensors holds no MOVA LoRA weights.*lora_unet_down_blocks_0"):
        plan_lora(read_lora(tmp_path / "sdxl.safetensors"), _shapes(parts), ALL_ON)


def test_swapped_experts_refused(parts):
    with pytest.raises(ValueError, match="high_noise_expert got the low-noise expert.*swap"):
        check_roles(parts["low_noise_expert"], parts["high_noise_expert"])
    check_roles(parts["high_noise_expert"], parts["low_noise_expert"])


def test_lora_choices_hide_the_config_file():
    names = ["a/lora_weights.pt", "a/lora_config.pt", "b.safetensors", "c\\lora_config.pt", "ckpt/step_100.pt"]
    assert lora_choices(names) == ["a/lora_weights.pt", "b.safetensors", "ckpt/step_100.pt"]


def test_an_empty_official_checkpoint_is_named(parts, tmp_path):
    """The official accelerate trainer without FSDP saves an empty lora_weights.pt (rank 16 in lora_config.pt)."""
    folder = tmp_path / "step-200"
    folder.mkdir()
    torch.save({}, folder / "lora_weights.pt")
    torch.save({"rank": 16, "alpha": 16.0, "target_modules": ["video_dit"]}, folder / "lora_config.pt")
    with pytest.raises(ValueError, match="is empty.*without FSDP"):
        plan_lora(read_lora(folder / "lora_weights.pt"), _shapes(parts), ALL_ON)
