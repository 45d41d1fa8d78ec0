"""GGUF parts in a real ComfyUI: the loaders list the converter's .gguf files, the image-to-video workflow runs
to an MP4 on GGUF experts, audio DiT and bridge, and a LoRA on them is applied to the dequantised weights and
comes off again (the quantised bytes are never merged)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from comfy_fixtures import PROBED, STRENGTHS, lora_delta, lora_node, write_test_loras
from comfy_integration import INTEGRATION, PACK, api_prompt, check_mp4, run_prompt

pytestmark = INTEGRATION

FOLDER = "gguf_test"
TYPES = ("q8_0", "q4_k")  # the tiny release's widths take Q8_0, and Q4_K's fallback Q4_0
PARTS = {"high": "video_dit_high", "low": "video_dit_low", "audio_dit": "audio_dit", "bridge": "dual_tower_bridge"}


def _name(part: str, kind: str) -> str:
    return f"{FOLDER}/mova_tiny_{PARTS[part]}_{kind}.gguf"


@pytest.fixture(scope="module")
def gguf_models(base):
    """The tiny release converted to .gguf beside it in models/diffusion_models (removed afterwards, so that the
    other modules' lists stay as they expect)."""
    models = base / "models" / "diffusion_models"
    for kind in TYPES:
        subprocess.run([sys.executable, "-m", "mova_model.convert", str(models / "MOVA-360p"), str(models / FOLDER),
                        "--prefix", "mova_tiny", "--dtype", f"gguf_{kind}", "--components", *PARTS],
                       cwd=PACK, check=True, capture_output=True)
    yield models / FOLDER
    shutil.rmtree(models / FOLDER)


def _loaders(kind: str) -> dict:
    return {
        "1": {"class_type": "MovaVideoExpertLoader", "inputs": {"model_name": _name("high", kind),
                                                                "weight_dtype": "default"}},
        "2": {"class_type": "MovaVideoExpertLoader", "inputs": {"model_name": _name("low", kind),
                                                                "weight_dtype": "default"}},
        "3": {"class_type": "MovaAudioTowerLoader", "inputs": {"audio_dit_name": _name("audio_dit", kind),
                                                               "bridge_name": _name("bridge", kind),
                                                               "weight_dtype": "default"}},
    }


def _probe(expert: list, tower: list) -> dict:
    return {"class_type": "TestMovaGGUFProbe", "inputs": {"expert": expert, "audio_tower": tower,
                                                          "keys": ",".join(PROBED)}}


def _probed(outputs: dict, node: str) -> dict:
    found = json.loads(outputs[node]["weights"][0])
    return {k: (v["dtype"], v["bytes"], torch.tensor(v["values"])) for k, v in found.items()}


def _file_values(models, kind: str, entry: str) -> torch.Tensor:
    """A probed weight dequantised from the .gguf file by this process's reader."""
    from comfyui_mova.mova_model.gguf.files import open_gguf
    part, key = entry.split(":")
    if part == "expert":
        path = _name("high", kind)
    else:
        component, key = key.split(".", 1)
        path = _name("audio_dit" if component == "audio_dit" else "bridge", kind)
    return open_gguf(models.parent / path).dequantized(key).flatten()


def test_loaders_list_gguf_files(client, gguf_models):
    from workflow_api import combo_options
    info = client.object_info()
    lists = {(node, name): combo_options(*info[node]["input"]["required"][name]) for node, name in (
        ("MovaVideoExpertLoader", "model_name"), ("MovaAudioTowerLoader", "audio_dit_name"),
        ("MovaAudioTowerLoader", "bridge_name"))}
    for kind in TYPES:
        assert {_name("high", kind), _name("low", kind)} <= set(lists["MovaVideoExpertLoader", "model_name"])
        assert _name("audio_dit", kind) in lists["MovaAudioTowerLoader", "audio_dit_name"]
        assert _name("bridge", kind) in lists["MovaAudioTowerLoader", "bridge_name"]
        assert _name("bridge", kind) not in lists["MovaVideoExpertLoader", "model_name"]  # told apart by kind


def test_i2va_workflow_on_gguf_parts(client, base, gguf_models, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    for kind in TYPES:
        prompt = api_prompt(client, "mova_i2va.json", seed=5, image_name=name)
        for node in prompt.values():
            inputs = node["inputs"]
            if node["class_type"] == "MovaVideoExpertLoader":
                inputs["model_name"] = _name("high" if inputs["model_name"].endswith("video_dit") else "low", kind)
            elif node["class_type"] == "MovaAudioTowerLoader":
                inputs["audio_dit_name"], inputs["bridge_name"] = _name("audio_dit", kind), _name("bridge", kind)
        videos, _ = run_prompt(client, prompt)
        check_mp4(client.download(videos[0], tmp_path / f"gguf_{kind}.mp4"))
    log = (base / "server.log").read_text()
    for kind in TYPES:  # the loaders took the GGUF path: quantised layers, the patcher that keeps LoRA off the bytes
        line = next(x for x in log.splitlines() if f"{_name('high', kind)} loaded with" in x)
        assert "GGUF-quantised Linear weights dequantised on the fly" in line and "MovaGGUF" in line, line


def test_lora_on_gguf_parts_is_applied_on_the_fly_and_comes_off(client, base, gguf_models, tmp_path):
    factors = write_test_loras(tmp_path / "loras")  # the same seeded files the server has
    strengths = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    kind = "q8_0"
    plain = _loaders(kind) | {"30": _probe(["1", 0], ["3", 0])}
    before, patched, after = {}, {}, {}
    run_prompt(client, plain, before)
    run_prompt(client, _loaders(kind) | {"10": lora_node(None, "my_mova_lora/lora_weights.pt", strengths),
                                         "20": _probe(["10", 0], ["10", 2])}, patched)
    run_prompt(client, plain, after)
    applied = [("my_mova_lora/lora_weights.pt", strengths)]
    for entry, (qtype, stored, w0) in _probed(before, "30").items():
        assert qtype == "Q8_0" and stored == "torch.uint8", entry  # the bytes stayed quantised in ComfyUI
        original = _file_values(gguf_models, kind, entry)
        assert torch.equal(w0, original), entry
        qtype1, stored1, w1 = _probed(patched, "20")[entry]
        assert (qtype1, stored1) == (qtype, stored), entry  # the LoRA did not turn the weight into floats
        delta = lora_delta(factors, applied, entry, "video_dit")
        assert torch.allclose(w1, original + delta, atol=1e-5), entry
        assert torch.equal(_probed(after, "30")[entry][2], original), entry  # unplugged: exactly the file again
    assert any(lora_delta(factors, applied, e, "video_dit").abs().max() > 0 for e in PROBED)
