"""The official LoRA recipes by name: layer selection on the golden towers, MOVA Train LoRA's recipe widget, and
the loader's scale when lora_config.pt names another rank than the factors have (the accelerate FSDP save)."""

import pytest
import torch

from comfyui_mova.mova_model.lora.load import lora_from_tensors
from comfyui_mova.mova_model.lora.recipes import ACCELERATE, LOW_RESOURCE, RECIPES, select_layers
from comfyui_mova.mova_model.lora.adapters import make_lora_set
from comfyui_mova.mova_model.training.trainer import TrainSettings
from comfyui_mova.nodes.training.run import RECIPE_CHOICES, recipe_settings
from mova_testing import load_golden_towers


@pytest.fixture(scope="module")
def parts(golden_dir):
    towers = load_golden_towers(golden_dir)
    return dict(zip(("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"),
                    (*towers.video_experts, towers.audio_dit, towers.bridge)))


def test_selections_on_the_golden_towers(parts, golden_cases):
    """low-resource: q, k, v, o of each attention; 8-GPU: those and both FFN layers of every block, the bridge's
    projections, never the time embedding / projection, the text embedding or the head."""
    for component, model in parts.items():
        low, wide = select_layers(model, LOW_RESOURCE), select_layers(model, ACCELERATE)
        assert low and set(low) <= set(wide)
        assert all(name.rsplit(".", 1)[-1] in "qkvo" for name in low)
        assert not any(w in name for name in wide for w in ("time_", "text_embedding", "head"))
        if component == "dual_tower_bridge":
            assert wide == low
        else:
            layers = golden_cases["audio_dit" if component == "audio_dit" else "video_dit"]["num_layers"]
            assert len(low) == 8 * layers
            assert sorted(set(wide) - set(low)) == sorted(f"blocks.{i}.ffn.{j}" for i in range(layers) for j in (0, 2))


def test_lora_set_follows_the_selection(parts):
    lora = make_lora_set(parts, 2, 2.0, seed=0, layers=ACCELERATE)
    keys = {k for k, _ in lora.named_parameters()}
    assert "video_dit.blocks.0.ffn.0.lora_A.weight" in keys and "audio_dit.blocks.0.ffn.2.lora_B.weight" in keys
    assert lora.adapters["video_dit"]["blocks.0.ffn.0"].lora_A.shape == (2, parts["video_dit"].config.dim)


def test_recipe_widget():
    assert recipe_settings("custom", 32, 4.0) == {"layers": LOW_RESOURCE, "rank": 32, "alpha": 4.0}
    assert recipe_settings("low-resource", 32, 4.0) == {"layers": LOW_RESOURCE, "rank": 8, "alpha": 8.0}
    assert recipe_settings("8-GPU", 32, 4.0) == {"layers": ACCELERATE, "rank": 16, "alpha": 16.0}
    assert (RECIPES[LOW_RESOURCE].rank, RECIPES[ACCELERATE].rank) == (8, 16)
    with pytest.raises(ValueError, match="recipe 'big' is not one of custom, low-resource, 8-GPU"):
        recipe_settings("big", 8, 8.0)
    from comfyui_mova.nodes.training.spec import LORA_RECIPES, TRAIN_LORA
    assert tuple(RECIPE_CHOICES) == LORA_RECIPES
    assert TRAIN_LORA.inputs[-1].name == "recipe" and TRAIN_LORA.inputs[-1].default == "custom"
    assert TrainSettings(layers="everything").problems() == [
        "unknown layer selection 'everything': choose low_resource or accelerate"]


def test_scale_divides_by_the_rank_the_config_names():
    """MOVA's LoRA pipeline scales by lora_config.pt's alpha / rank (the accelerate trainer's FSDP save writes
    16 / 16 whatever it trained): so does the loader; a rank that is no number (its non-FSDP save writes a class
    name) falls back to the factors' rank."""
    a, b = torch.ones(2, 4), torch.ones(3, 2)
    tensors = {"video_dit.blocks.0.self_attn.q.lora_A.weight": a, "video_dit.blocks.0.self_attn.q.lora_B.weight": b}
    scale = lambda settings: lora_from_tensors(tensors, settings, "x").patches["video_dit"][  # noqa: E731
        "blocks.0.self_attn.q.weight"].scale
    assert scale({"rank": 16, "alpha": 16.0}) == 1.0
    assert scale({"rank": "MOVATrain", "alpha": 16.0}) == 8.0
    assert scale({"alpha": 3.0}) == 1.5 and scale({}) == 1.0
