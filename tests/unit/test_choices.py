"""Every list of choices a node offers comes from the registry that checks it: each COMBO widget with fixed options
is tied here to its registry (equal to it, or a named subset of it), and a new one without a registry fails."""

import subprocess
import sys

import pytest

from comfyui_mova.mova_model.lora.save import SAVE_DTYPES
from comfyui_mova.mova_model.memory.speed import COMPILE_MODES, FP8_COMPUTE, check_speed_options
from comfyui_mova.mova_model.networks import attention
from comfyui_mova.mova_model.parallel.plan import MODES as PARALLEL_MODES
from comfyui_mova.nodes.catalog import NODES_BY_ID
from comfyui_mova.nodes.loaders.model_files import WEIGHT_DTYPES, weight_dtype
from comfyui_mova.nodes.native.spec import OFFICIAL_SCHEDULE, STOCK_SCHEDULERS
from comfyui_mova.nodes.sampling.run import GIVEN_MODALITIES
from comfyui_mova.nodes.sampling.spec import COMFY_ATTENTION
from comfyui_mova.nodes.training.dataset import FPS_MODES
from comfyui_mova.nodes.training.run import RECIPE_CHOICES
from mova_pack import PACK_ROOT

# (node id, widget) -> (registry, "equal" or "subset")
REGISTRIES = {
    ("MovaVideoExpertLoader", "weight_dtype"): (tuple(WEIGHT_DTYPES), "subset"),
    ("MovaAudioTowerLoader", "weight_dtype"): (tuple(WEIGHT_DTYPES), "subset"),
    ("MovaAudioVAELoader", "weight_dtype"): (tuple(WEIGHT_DTYPES), "subset"),
    ("MovaSamplerOptions", "attention"): (("auto", *attention.BUILT_IN_BACKENDS, COMFY_ATTENTION), "equal"),
    ("MovaSamplerOptions", "compile"): (tuple(COMPILE_MODES), "equal"),
    ("MovaSamplerOptions", "fp8_compute"): (FP8_COMPUTE, "equal"),
    ("MovaSamplerOptions", "given_modality"): (GIVEN_MODALITIES, "equal"),
    ("MovaDataset", "fps_mode"): (FPS_MODES, "equal"),
    ("MovaTrainLora", "recipe"): (tuple(RECIPE_CHOICES), "equal"),
    ("MovaSaveLora", "dtype"): (tuple(SAVE_DTYPES), "subset"),
    # ComfyUI's stock schedulers: comfy.samplers.SCHEDULER_NAMES (checked against a real server in
    # tests/comfyui/test_comfyui_native.py)
    ("MovaScheduler", "scheduler"): ((OFFICIAL_SCHEDULE, *STOCK_SCHEDULERS), "equal"),
    ("MovaParallel", "mode"): (PARALLEL_MODES, "equal"),
}


def _fixed_combos():
    return {(node_id, w.name): w.options for node_id, node in NODES_BY_ID.items() for w in node.widgets
            if w.kind == "COMBO" and w.options is not None}


def test_every_fixed_choice_list_has_a_registry():
    assert set(_fixed_combos()) == set(REGISTRIES)


@pytest.mark.parametrize("key", sorted(REGISTRIES), ids=lambda k: f"{k[0]}.{k[1]}")
def test_widget_choices_come_from_their_registry(key):
    options = _fixed_combos()[key]
    registry, relation = REGISTRIES[key]
    if relation == "equal":
        assert options == tuple(registry)
    else:
        assert set(options) < set(registry) and options == tuple(o for o in registry if o in options)


def test_attention_choices_are_the_backends_the_registry_knows():
    """In a fresh interpreter (no backend registered by a test): every choice but ComfyUI's own is one
    ``attention_backends()`` lists, in its order; ComfyUI's is registered under COMFY_ATTENTION inside ComfyUI."""
    code = (f"import sys; sys.path.insert(0, {str(PACK_ROOT / 'tests' / 'support')!r}); import mova_pack\n"
            "from comfyui_mova.mova_model.networks.attention import attention_backends\n"
            "print(' '.join(attention_backends()))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    options = _fixed_combos()[("MovaSamplerOptions", "attention")]
    assert list(options) == fresh + [COMFY_ATTENTION]
    registered = (PACK_ROOT / "nodes" / "comfy_attention.py").read_text()
    assert "register_attention_backend(COMFY_ATTENTION," in registered


def test_every_choice_passes_its_runtime_check():
    """What a widget offers, the code behind it takes."""
    for node_id in ("MovaVideoExpertLoader", "MovaAudioTowerLoader", "MovaAudioVAELoader"):
        for choice in _fixed_combos()[(node_id, "weight_dtype")]:
            weight_dtype(choice)
    for compile_mode in _fixed_combos()[("MovaSamplerOptions", "compile")]:
        for fp8 in _fixed_combos()[("MovaSamplerOptions", "fp8_compute")]:
            check_speed_options(compile_mode, fp8)
    for name in _fixed_combos()[("MovaSamplerOptions", "attention")]:
        if name != COMFY_ATTENTION:  # registered by ComfyUI's side at start
            assert name in attention.attention_backends()
    for dtype in _fixed_combos()[("MovaSaveLora", "dtype")]:
        assert SAVE_DTYPES[dtype].is_floating_point
