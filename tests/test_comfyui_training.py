"""LoRA training in a real ComfyUI: a folder of clips to a LoRA file the MOVA LoRA Loader applies, resumed runs
that never overwrite a file, Cancel with a checkpoint to continue from, and training on fp8 weights.
"""

from __future__ import annotations

import json

import pytest
import torch

from comfy_fixtures import PROBED, STRENGTHS, lora_node, loaders, original, probe_node, probed
from comfy_integration import (FPS, HEIGHT, INTEGRATION, TRAIN_FRAMES, WIDTH, cancel_during, node_key, refusal,
                               run_prompt)
from comfy_server import PACK

pytestmark = INTEGRATION


def _train_prompt(client, run_name: str, steps: int, filename: str, checkpoint_every: int = 2) -> dict:
    """The shipped training workflow as an API prompt at test size, with the tiny real CLIP in place of UMT5-XXL."""
    from workflow_api import missing_models, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "example_workflows" / "mova_train_lora.json").read_text()), info)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CLIPLoader":
            node["class_type"], node["inputs"] = "TestTinyUMT5Loader", {"kind": "umt5xxl"}
        elif kind == "MovaDataset":
            inputs.update(width=WIDTH, height=HEIGHT, length=TRAIN_FRAMES, fps=FPS)
        elif kind == "MovaTrainLora":
            inputs.update(run_name=run_name, steps=steps, checkpoint_every=checkpoint_every, learning_rate=0.001)
        elif kind == "MovaSaveLora":
            inputs.update(filename=filename)
    assert missing_models(prompt, info) == []
    return prompt


def test_training_workflow_clips_to_a_lora_the_loader_applies(client, base):
    """Folder of clips -> MOVA Dataset -> MOVA Train LoRA (progress per step) -> MOVA Save LoRA in models/loras;
    the saved file then goes through the MOVA LoRA Loader as W + s·(alpha/rank)·B·A."""
    from safetensors import safe_open
    prompt = _train_prompt(client, "itest", steps=4, filename="mova/itest_lora")
    outputs = {}
    _, progress = run_prompt(client, prompt, outputs)
    assert [v for k, v in progress if k == "MovaTrainLora"][-1] == 4
    train_text = outputs[node_key(prompt, "MovaTrainLora")]["text"][0]
    assert train_text.startswith("trained steps 1-4") and "high-noise loss" in train_text, train_text
    assert outputs[node_key(prompt, "MovaDataset")]["text"][0].startswith("2 clips encoded to mova_clips_32x32x9_24fps_")
    assert outputs[node_key(prompt, "PreviewImage")]["images"]  # the loss curve
    saved = base / "models" / "loras" / "mova" / "itest_lora.safetensors"
    assert outputs[node_key(prompt, "MovaSaveLora")]["text"][0].startswith(f"saved {saved}")
    assert sorted(p.name for p in (base / "output" / "mova_training" / "itest").iterdir()) == \
        ["step_000002.safetensors", "step_000004.safetensors"]
    with safe_open(str(saved), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    rank, alpha = int(meta["rank"]), float(meta["alpha"])
    assert (rank, alpha) == (8, 8.0) and "video_dit.blocks.0.self_attn.q.lora_A.weight" in tensors
    strengths = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    loader = lora_node(None, "mova/itest_lora.safetensors", strengths)
    outputs = {}
    run_prompt(client, loaders() | {"10": loader, "20": probe_node(["10", 0], ["10", 2]),
                              "21": probe_node(["10", 1], ["10", 2])}, outputs)
    assert outputs["10"]["text"][0].startswith("mova/itest_lora.safetensors: high-noise expert 16 weights at 0.5")
    component_strength = dict(zip(("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"),
                                  (0.5, 1.5, -1.0, 2.0)))
    changed = 0
    for node, expert in (("20", "video_dit"), ("21", "video_dit_2")):
        for entry, (_, values) in probed(outputs, node).items():
            component, module = PROBED[entry]
            component = expert if entry.startswith("expert:") else component
            w = original(base / "models", entry, expert)
            delta = torch.zeros_like(w)
            if f"{component}.{module}.lora_A.weight" in tensors:
                a, b = tensors[f"{component}.{module}.lora_A.weight"], tensors[f"{component}.{module}.lora_B.weight"]
                delta = (component_strength[component] * alpha / rank * (b @ a)).flatten()
                changed += int(delta.abs().max() > 0)
            assert torch.allclose(values, w + delta, atol=1e-5), (node, entry)
    assert changed >= 4  # the trained B matrices are not zero: the LoRA changes the weights
    # the trained LoRA straight into the loader's lora input (queued again, the run finds its final checkpoint
    # and has nothing left to train): the same weights as through the saved file
    prompt = _train_prompt(client, "itest", steps=4, filename="mova/itest_lora")
    for key in (node_key(prompt, "MovaSaveLora"), node_key(prompt, "PreviewImage")):
        del prompt[key]
    experts = sorted((k for k, n in prompt.items() if n["class_type"] == "MovaVideoExpertLoader"),
                     key=lambda k: prompt[k]["inputs"]["model_name"])
    parts = [[experts[0], 0], [experts[1], 0], [node_key(prompt, "MovaAudioTowerLoader"), 0]]
    direct = lora_node(None, "not_saved.safetensors", strengths)  # a lora_name that is not there: not needed
    direct["inputs"].update(zip(("high_noise_expert", "low_noise_expert", "audio_tower"), parts),
                            lora=[node_key(prompt, "MovaTrainLora"), 0])
    prompt |= {"30": direct, "31": probe_node(["30", 0], ["30", 2])}
    direct_outputs = {}
    run_prompt(client, prompt, direct_outputs)
    assert direct_outputs["30"]["text"][0].startswith("itest (trained, 4 steps): high-noise expert 16 weights at 0.5")
    assert "MOVA Train LoRA itest: nothing to train: the run already has 4 steps" in (base / "server.log").read_text()
    for entry, (_, values) in probed(direct_outputs, "31").items():
        assert torch.allclose(values, probed(outputs, "20")[entry][1], atol=1e-6), entry


def test_training_continues_and_never_overwrites_a_lora(client, base):
    """Queued again with more steps, training continues from the last checkpoint; a taken file name stops the
    run at MOVA Save LoRA and the file is kept; another name then saves the continued LoRA."""
    from comfy_client import ServerError
    from safetensors.torch import load_file
    taken = base / "models" / "loras" / "itest_again.safetensors"
    taken.write_bytes(b"taken")
    with pytest.raises(ServerError, match="itest_again.safetensors already exists: switch overwrite on"):
        run_prompt(client, _train_prompt(client, "itest", steps=6, filename="itest_again"))
    assert taken.read_bytes() == b"taken"
    log = (base / "server.log").read_text()
    assert "trained steps 5-6 (continued from the checkpoint at step 4)" in log
    run_prompt(client, _train_prompt(client, "itest", steps=6, filename="itest_6"))
    # nothing was trained twice: ComfyUI kept the trained LoRA of the failed run, or the run found its final
    # checkpoint
    assert (base / "server.log").read_text().count("trained steps 5-6") == 1
    saved = load_file(str(base / "models" / "loras" / "itest_6.safetensors"))
    checkpoint = load_file(str(base / "output" / "mova_training" / "itest" / "step_000006.safetensors"))
    assert saved.keys() == {k for k in checkpoint if not k.startswith("optimizer.")}
    assert all(torch.equal(saved[k], checkpoint[k]) for k in saved)


def test_cancel_stops_training_and_the_checkpoint_continues(client, base):
    prompt = _train_prompt(client, "icancel", steps=1000, filename="icancel", checkpoint_every=2)
    cancel_during(client, prompt, lambda data: data.get("node") == node_key(prompt, "MovaTrainLora") and data["value"] >= 3,
                   "no progress from MOVA Train LoRA", timeout=300)
    run = base / "output" / "mova_training" / "icancel"
    last = max(int(p.stem.split("_")[1]) for p in run.glob("step_*.safetensors"))
    assert last >= 2 and not list(run.glob("*.tmp"))
    prompt = _train_prompt(client, "icancel", steps=last + 1, filename="icancel")
    outputs = {}
    run_prompt(client, prompt, outputs)
    text = outputs[node_key(prompt, "MovaTrainLora")]["text"][0]
    assert text.startswith(f"trained steps {last + 1}-{last + 1} (continued from the checkpoint at step {last})"), text


def test_training_on_fp8_weights(client, base):
    """Experts and audio tower loaded as fp8_e4m3fn (ComfyUI's scaled-fp8 layers): a float32 LoRA trains on them."""
    from safetensors.torch import load_file
    prompt = _train_prompt(client, "ifp8", steps=2, filename="ifp8")
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    outputs = {}
    run_prompt(client, prompt, outputs)
    text = outputs[node_key(prompt, "MovaTrainLora")]["text"][0]
    assert text.startswith("trained steps 1-2"), text
    saved = load_file(str(base / "models" / "loras" / "ifp8.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())
    assert any(t.abs().max() > 0 for k, t in saved.items() if "lora_B" in k)


def test_run_and_file_names_from_the_widgets(client, base):
    """Names the file system takes train and save (Japanese, sub/folders); names it refuses, or a file where the run
    folder goes, stop the run with a message naming the widget, the problem and the fix."""
    from comfy_client import ServerError
    runs = base / "output" / "mova_training"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "taken").write_text("a file where the run folder goes")
    with pytest.raises(ServerError, match=r"MOVA Train LoRA's run_name 'taken': .*taken is a file \(or a broken "
                                          r"link\), not a folder: choose another name, or move that file away"):
        run_prompt(client, _train_prompt(client, "taken", steps=2, filename="unused"))
    with pytest.raises(ServerError, match=r"MOVA Train LoRA's run_name: the name 'x+'… is 300 bytes long; the file "
                                          r"system takes at most 255 bytes per name"):
        run_prompt(client, _train_prompt(client, "x" * 300, steps=2, filename="unused"))
    with pytest.raises(ServerError, match=r"MOVA Save LoRA's filename '\.\./outside' goes up out of its folder"):
        run_prompt(client, _train_prompt(client, "猫の歌", steps=2, filename="../outside"))
    assert not (base / "models" / "outside.safetensors").exists()
    outputs = {}
    prompt = _train_prompt(client, "猫の歌", steps=2, filename="猫/歌")
    run_prompt(client, prompt, outputs)
    saved = base / "models" / "loras" / "猫" / "歌.safetensors"
    assert outputs[node_key(prompt, "MovaSaveLora")]["text"][0].startswith(f"saved {saved}")
    assert sorted(p.name for p in (runs / "猫の歌").iterdir()) == ["step_000002.safetensors"]
    assert (runs / "taken").read_text() == "a file where the run folder goes"


def test_clip_folders_a_workflow_may_not_name(client, base):
    """MOVA Dataset's folder outside ComfyUI/input (a full path elsewhere, '..') is refused at queue time, naming
    the widget and the fix, before any clip is read."""
    for folder, message in (("/etc", "is outside ComfyUI/input: a workflow may only read clips from there"),
                            ("../models", "goes up out of its folder ('..')")):
        prompt = _train_prompt(client, "refused", steps=2, filename="unused")
        key = node_key(prompt, "MovaDataset")
        prompt[key]["inputs"]["folder"] = folder
        errors = refusal(client, prompt)
        assert any(f"MOVA Dataset's folder '{folder}' {message}" in e for e in errors[key]), errors
    assert not (base / "output" / "mova_training" / "refused").exists()
