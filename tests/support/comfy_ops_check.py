"""Run from a ComfyUI checkout (cwd) with ComfyUI's Python: loads converted MOVA files through every comfy.ops
family this ComfyUI has and prints one JSON line comparing their joint forwards with plain torch layers.

    python tests/support/comfy_ops_check.py OUT_DIR [lazy]

OUT_DIR holds the converter's fp8 files in two sub-folders, comfy_quant/ and scaled_fp8/ (the two key layouts).
``lazy`` first switches on what ComfyUI's dynamic VRAM switches on at start (``comfy.memory_management.
aimdo_enabled``), under which newer comfy.ops create Linear layers without weights until they are loaded; it
reports {"skip": reason} when this ComfyUI has no such switch or its layers stay eager.
"""

import json
import sys
from pathlib import Path

OUT, LAZY = Path(sys.argv[1]), sys.argv[2:] == ["lazy"]
SUPPORT = Path(__file__).resolve().parent
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, ".")
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.ops  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(SUPPORT))
import mova_pack  # noqa: E402  (imports the pack as comfyui_mova)
from comfyui_mova.mova_model.sampling import joint  # noqa: E402
from comfyui_mova.mova_model.weights import loading  # noqa: E402
from mova_testing import rel_l2  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

PARTS = (("video_dit", "*video_dit_high"), ("audio_dit", "*audio_dit"), ("dual_tower_bridge", "*bridge"))


def towers(layout, ops, **kw):
    return [loading.load_component(next((OUT / layout).glob(name + "_fp8*")), kind, operations=ops, **kw)
            for kind, name in PARTS]


def forward(parts):
    g = load_file(str(mova_pack.golden_root() / "cases.safetensors"))
    x = torch.cat([g["noise_video"], g["condition"]], 1).bfloat16()
    return joint.joint_forward(*parts, x, g["noise_audio"].bfloat16(), g["context_pos"].bfloat16(),
                               torch.tensor([850.0]), torch.tensor([850.0]), 24.0, dtype=torch.bfloat16)


def errors(out, ref):
    return [rel_l2(out.video, ref.video), rel_l2(out.audio, ref.audio)]


def fp8_storage(model):
    """dtypes the block matrices are stored in (ComfyUI's QuantizedTensor reports its storage dtype)."""
    weight = model.blocks[0].ffn[0].weight
    return str(getattr(weight, "storage_dtype", weight.dtype))


def main():
    report = {"families": {}}
    if LAZY:
        memory = sys.modules.get("comfy.memory_management")
        if memory is None or not isinstance(getattr(memory, "aimdo_enabled", None), bool):
            print(json.dumps({"skip": "this ComfyUI has no comfy.memory_management.aimdo_enabled switch"}))
            return
        memory.aimdo_enabled = True
        if comfy.ops.manual_cast.Linear(4, 4, device="meta").weight is not None:
            print(json.dumps({"skip": "this ComfyUI's comfy.ops Linear layers keep creating their weights"}))
            return
    report["lazy"] = comfy.ops.manual_cast.Linear(4, 4, device="meta").weight is None
    plain = {layout: forward(towers(layout, loading.torch_ops, dtype=torch.bfloat16))
             for layout in ("comfy_quant", "scaled_fp8")}
    ours = {layout: forward(towers(layout, loading.torch_ops)) for layout in ("comfy_quant", "scaled_fp8")}
    families = {"manual_cast": (comfy.ops.manual_cast, {"dtype": torch.bfloat16}),
                "disable_weight_init": (comfy.ops.disable_weight_init, {"dtype": torch.bfloat16})}
    if hasattr(comfy.ops, "scaled_fp8_ops"):
        families["scaled_fp8_ops"] = (comfy.ops.scaled_fp8_ops(), {})
    if hasattr(comfy.ops, "mixed_precision_ops"):
        families["mixed_precision_ops"] = (comfy.ops.mixed_precision_ops(compute_dtype=torch.bfloat16),
                                           {"fp8_layout": "comfy_quant"})
    for family, (ops, kw) in families.items():
        for layout in ("comfy_quant", "scaled_fp8"):
            parts = towers(layout, ops, **kw)
            ref = plain[layout] if "dtype" in kw else ours[layout]
            report["families"][f"{family}/{layout}"] = {"errors": errors(forward(parts), ref),
                                                        "storage": fp8_storage(parts[0])}
    print(json.dumps(report))


main()
