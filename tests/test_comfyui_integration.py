"""End to end in a real ComfyUI (COMFYUI_PATH = a ComfyUI checkout; run pytest with ComfyUI's Python).

Starts ``main.py --cpu`` on 127.0.0.1 with a temporary base directory holding this pack, tiny random models
written here (a MOVA release, a random full-size Wan 2.1 VAE in ComfyUI's format, MOVA LoRAs), a test-only
text node (UMT5-XXL has no tiny form ComfyUI can load) and a weight probe node (tests/comfy_fixtures.py),
then runs the shipped workflows through the headless client and checks the MP4s, and checks ComfyUI's
application of MOVA LoRA patches weight by weight.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from comfy_fixtures import (CLIP_NODE, PROBE_NODE, PROBED, STRENGTHS, TEXT_NODE, WAN_VAE, lora_delta, lora_node,
                            loaders, original, probe_node, probed, write_test_loras)
from comfyui_mova.nodes import spec

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI, reason="COMFYUI_PATH is not set (point it at a ComfyUI checkout to run "
                       "the integration tests, with ComfyUI's Python)"),
]

PACK = Path(__file__).resolve().parents[1]
SCRIPTS = PACK / "scripts"
WIDTH, HEIGHT, FRAMES, FPS, STEPS = 32, 32, 25, 24.0, 4
TRAIN_FRAMES = 9

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """ComfyUI base directory: the pack, the test text node, tiny models, a start image."""
    from PIL import Image
    from tiny_release import write_release

    root = tmp_path_factory.mktemp("comfy_base")
    (root / "custom_nodes").mkdir()
    (root / "custom_nodes" / "comfyui-mova").symlink_to(PACK, target_is_directory=True)
    (root / "custom_nodes" / "test_text_states.py").write_text(TEXT_NODE)
    (root / "custom_nodes" / "test_weight_probe.py").write_text(PROBE_NODE)
    (root / "custom_nodes" / "test_random_clip.py").write_text(CLIP_NODE)
    models = root / "models"
    write_release(models / "diffusion_models" / "MOVA-360p",
                  ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"))
    write_release(models / "vae" / "MOVA-360p", ("audio_vae",))
    vae_file = models / "vae" / "wan_2.1_vae.safetensors"
    subprocess.run([sys.executable, "-c", WAN_VAE, str(vae_file)], cwd=COMFYUI, check=True, capture_output=True)
    write_test_loras(models / "loras")
    (root / "input").mkdir()
    Image.new("RGB", (48, 40), (200, 120, 40)).save(root / "input" / "start.png")
    from clip_files import write_clip
    for i in range(2):  # training clips: real H.264 + AAC files, a little larger and longer than needed
        write_clip(root / "input" / "mova_clips" / f"clip{i}.mp4", TRAIN_FRAMES + 3, FPS, WIDTH + 16, HEIGHT + 8,
                   sample_rate=16000, tone=330.0 * (i + 1), seed=i, caption=f"clip {i}. The audio shows a tone.")
    return root


@pytest.fixture(scope="module")
def server(base):
    """A ComfyUI server on a free port (stopped after the module); yields its URL."""
    import importlib.util
    if importlib.util.find_spec("aiohttp") is None:
        pytest.fail("COMFYUI_PATH is set but this Python lacks ComfyUI's requirements (aiohttp): "
                    "run pytest with the Python of ComfyUI's environment")
    port = _free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
         str(base), "--disable-auto-launch", "--preview-method", "auto", "--database-url", "sqlite:///:memory:"],
        cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    sys.path.insert(0, str(SCRIPTS))
    from comfy_client import ComfyClient, ServerError
    client = ComfyClient(url)
    deadline = time.monotonic() + 300
    while True:
        try:
            client.object_info()
            break
        except ServerError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("ComfyUI did not start:\n" + (base / "server.log").read_text()[-4000:])
            time.sleep(1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def client(server):
    from comfy_client import ComfyClient
    return ComfyClient(server, timeout=120)


def test_all_nodes_register(client, base):
    info = client.object_info()
    for node in spec.ALL_NODES:
        assert node.node_id in info, f"{node.node_id} missing; server log:\n{(base / 'server.log').read_text()[-3000:]}"
        entry = info[node.node_id]
        assert entry["category"] == "MOVA" and entry["display_name"] == node.display_name
        order = entry["input_order"]["required"] + entry["input_order"].get("optional", [])
        assert order == [i.name for i in node.inputs]
        for item in node.inputs:
            section = "optional" if getattr(item, "optional", False) else "required"
            assert entry["input"][section][item.name][1]["tooltip"] == item.tooltip
        assert entry["output"] == [o.type for o in node.outputs]
    from workflow_api import combo_options
    loader = combo_options(*info["MovaVideoExpertLoader"]["input"]["required"]["model_name"])
    assert {"MOVA-360p/video_dit", "MOVA-360p/video_dit_2", "MOVA-360p/audio_dit"} <= set(loader)
    assert combo_options(*info["MovaAudioVAELoader"]["input"]["required"]["vae_name"]) == \
        ["MOVA-360p/audio_vae", "wan_2.1_vae.safetensors"]


def test_workflows_served_as_templates(client):
    """ComfyUI's template browser lists the shipped workflows under the pack and serves them unchanged."""
    assert sorted(client.get_json("/workflow_templates")["comfyui-mova"]) == \
        ["mova_i2va", "mova_i2va_dual_cfg", "mova_i2va_lora", "mova_t2va", "mova_train_lora"]
    served = client.get_json("/api/workflow_templates/comfyui-mova/mova_i2va.json")
    assert served == json.loads((PACK / "workflows" / "mova_i2va.json").read_text())


def test_cli_refuses_missing_text_encoder(server, base, tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), "--server", server, "--image",
                          str(tmp_path / "none.png"), "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--image" in run.stderr and "does not exist" in run.stderr
    run = subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), "--server", server, "--image",
                          str(base / "input" / "start.png"), "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 3, run.stderr
    assert "umt5_xxl_fp8_e4m3fn_scaled.safetensors" in run.stderr and "models/text_encoders" in run.stderr
    assert "MOVA-360p" not in run.stderr  # the MOVA files are all there


def test_cli_server_down(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPTS / "run_workflow.py"), "--server",
                          f"http://127.0.0.1:{_free_port()}", "--prompt", "x", "--output", str(tmp_path / "x.mp4")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "cannot reach ComfyUI" in run.stderr and "start it first" in run.stderr


def _prompt(client, workflow: str, **params):
    """The shipped workflow as an API prompt, with the test text node in place of the UMT5 encoder."""
    from workflow_api import missing_models, set_parameters, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "workflows" / workflow).read_text()), info)
    set_parameters(prompt, width=WIDTH, height=HEIGHT, frames=FRAMES, steps=STEPS, **params)
    for key in [k for k, n in prompt.items() if n["class_type"] == "CLIPLoader"]:
        del prompt[key]
    for node in prompt.values():
        if node["class_type"] == "CLIPTextEncode":
            node["class_type"] = "TestRandomTextStates"
            del node["inputs"]["clip"]
    assert missing_models(prompt, info) == []
    return prompt


def _run(client, prompt, outputs: dict | None = None):
    """(SaveVideo files, sampler progress) of one prompt run; ``outputs`` receives every node's UI output."""
    from run_workflow import finished_history, wait
    from workflow_api import video_outputs
    ws = client.websocket()
    progress = []
    receive = ws.receive

    def spy(timeout=None):
        message = receive(timeout)
        if message and message.get("type") == "progress":
            progress.append((prompt.get(message["data"]["node"], {}).get("class_type"), message["data"]["value"]))
        return message

    ws.receive = spy
    try:
        prompt_id = client.queue(prompt)
        wait(client, ws, prompt_id, prompt, timeout=600)
    finally:
        ws.close()
    history = finished_history(client, prompt_id)
    if outputs is not None:
        outputs.update(history.get("outputs", {}))
    return video_outputs(history, prompt), progress


def _check_mp4(path: Path):
    import av
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = [f for f in container.decode(video=0)]
        assert len(frames) == FRAMES and (frames[0].width, frames[0].height) == (WIDTH, HEIGHT)
        assert video.average_rate == Fraction(int(FPS))
        # our AUDIO is mono; ComfyUI's muxer may store it as a stereo AAC track
        assert audio.codec_context.sample_rate == 16000 and audio.channels in (1, 2)
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    expected = int(16000 * FRAMES / FPS)
    # AAC encodes whole 1024-sample frames: the track holds the audio, padded to at most one more frame.
    assert expected <= samples <= expected + 1024 + 1024, (samples, expected)
    duration = samples / 16000
    assert abs(duration - FRAMES / FPS) < 0.15


def test_i2va_workflow_end_to_end(client, base, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    videos, progress = _run(client, _prompt(client, "mova_i2va.json", seed=3, image_name=name))
    assert len(videos) == 1
    sampler_steps = [value for kind, value in progress if kind == "MovaSampler"]
    assert sampler_steps[-1] == STEPS and sampler_steps == sorted(sampler_steps)
    target = client.download(videos[0], tmp_path / "i2va.mp4")
    _check_mp4(target)
    assert (base / "output" / videos[0]["subfolder"] / videos[0]["filename"]).is_file()


def test_t2va_workflow_end_to_end(client, tmp_path):
    videos, _ = _run(client, _prompt(client, "mova_t2va.json", seed=4))
    _check_mp4(client.download(videos[0], tmp_path / "t2va.mp4"))


def test_wrong_wiring_reaches_the_user(client):
    """Experts swapped: the run stops with the node's message (what to change), not a stack of shapes."""
    from comfy_client import ServerError
    prompt = _prompt(client, "mova_t2va.json", seed=5)
    sampler = next(n for n in prompt.values() if n["class_type"] == "MovaSampler")
    inputs = sampler["inputs"]
    inputs["high_noise_expert"], inputs["low_noise_expert"] = inputs["low_noise_expert"], inputs["high_noise_expert"]
    with pytest.raises(ServerError, match="high_noise_expert got the low-noise expert.*swap"):
        _run(client, prompt)


def test_fp8_weights_run(client, tmp_path):
    """weight_dtype fp8_e4m3fn on every MOVA loader: built with ComfyUI's scaled-fp8 layers, runs to an MP4."""
    prompt = _prompt(client, "mova_t2va.json", seed=6)
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    videos, progress = _run(client, prompt)
    assert [v for k, v in progress if k == "MovaSampler"][-1] == STEPS
    _check_mp4(client.download(videos[0], tmp_path / "fp8.mp4"))


def test_cancel_stops_the_sampler(client):
    """Cancel (POST /interrupt) during sampling stops the MOVA Sampler between steps."""
    from comfy_client import ServerError
    from run_workflow import wait
    prompt = _prompt(client, "mova_t2va.json", seed=7)
    next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]["steps"] = 1000
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt)
        steps = []
        while not steps:
            message = ws.receive(timeout=120)
            assert message is not None, "no progress from the sampler"
            data = message.get("data", {})
            if message["type"] == "progress" and prompt.get(data.get("node"), {}).get("class_type") == "MovaSampler":
                steps.append(data["value"])
        client.cancel(prompt_id)
        with pytest.raises(ServerError, match="cancelled"):
            wait(client, ws, prompt_id, prompt, timeout=120)
    finally:
        ws.close()
    deadline = time.monotonic() + 60
    while not client.history(prompt_id) and time.monotonic() < deadline:  # filed just after the last message
        time.sleep(0.2)
    status = client.history(prompt_id).get("status", {})
    assert status and not status.get("completed")
    assert any(event[0] == "execution_interrupted" for event in status.get("messages", []))


def test_same_file_loaded_once(client, tmp_path):
    """Two loader nodes with the same file and settings: ComfyUI's cache runs one, the other reuses it."""
    prompt = _prompt(client, "mova_t2va.json", seed=8)
    loader_key = next(k for k, n in prompt.items() if n["class_type"] == "MovaAudioVAELoader")
    prompt[loader_key]["inputs"]["weight_dtype"] = "fp16"  # settings no earlier test used: nothing cached yet
    prompt["9001"] = json.loads(json.dumps(prompt[loader_key]))
    decoder = next(n for n in prompt.values() if n["class_type"] == "MovaAudioDecode")
    decoder["inputs"]["audio_vae"] = ["9001", 0]
    ws = client.websocket()
    executed = []
    receive = ws.receive

    def spy(timeout=None):
        message = receive(timeout)
        if message and message.get("type") == "executing" and message["data"].get("node") in (loader_key, "9001"):
            executed.append(message["data"]["node"])
        return message

    ws.receive = spy
    try:
        from run_workflow import wait
        wait(client, ws, client.queue(prompt), prompt, timeout=600)
    finally:
        ws.close()
    assert len(executed) == 1, executed


def test_lora_patches_stack_and_come_off(client, base, tmp_path):
    """A LoRA at strength s: W + s·(alpha/rank)·B·A on each part's weights (ComfyUI applying the patches);
    a second loader stacks; the loaders' own outputs keep the exact original weights."""
    factors = write_test_loras(tmp_path / "loras")  # the same seeded files the server has
    first = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    second = dict(zip(STRENGTHS, (0.75, 1.0, 1.0, 1.0)))
    prompt = loaders() | {
        "10": lora_node(None, "my_mova_lora/lora_weights.pt", first),
        "11": lora_node("10", "second.safetensors", second),
        "20": probe_node(["10", 0], ["10", 2]), "21": probe_node(["10", 1], ["10", 2]),
        "22": probe_node(["11", 0], ["11", 2]),
    }
    outputs = {}
    _run(client, prompt, outputs)
    one = [("my_mova_lora/lora_weights.pt", first)]
    both = one + [("second.safetensors", second)]
    models = base / "models"
    for node, expert, applied in (("20", "video_dit", one), ("21", "video_dit_2", one), ("22", "video_dit", both)):
        for entry, (dtype, values) in probed(outputs, node).items():
            w = original(models, entry, expert)
            delta = lora_delta(factors, applied, entry, expert)
            assert dtype == "torch.float32"
            assert torch.allclose(values, w + delta, atol=1e-5), (node, entry)
    assert not torch.equal(probed(outputs, "22")["expert:blocks.0.self_attn.q.weight"][1],
                           probed(outputs, "20")["expert:blocks.0.self_attn.q.weight"][1])
    assert outputs["10"]["text"][0].startswith(
        "my_mova_lora/lora_weights.pt: high-noise expert 2 weights at 0.5, low-noise expert 1 weights at 1.5, "
        "audio DiT 1 weights at -1, bridge 1 weights at 2")
    # unplugged: the loaders' outputs, after the patched clones ran, hold the file's weights exactly
    outputs = {}
    _run(client, loaders() | {"30": probe_node(["1", 0], ["3", 0]), "31": probe_node(["2", 0], ["3", 0])}, outputs)
    for node, expert in (("30", "video_dit"), ("31", "video_dit_2")):
        for entry, (_, values) in probed(outputs, node).items():
            assert torch.equal(values, original(models, entry, expert)), (node, entry)


def test_lora_on_fp8_weights(client, base, tmp_path):
    """Scaled-fp8 experts: ComfyUI dequantises, adds the LoRA, requantises with the weight's own scale (stays
    fp8, so the range cannot grow: |W'| <= max|W|, README says so); unplugging is exact."""
    factors = write_test_loras(tmp_path / "loras")
    strengths = dict.fromkeys(STRENGTHS, 0.5)  # a small update, as real LoRAs make: little is clipped
    plain = loaders("fp8_e4m3fn") | {"30": probe_node(["1", 0], ["3", 0])}
    before, patched, after = {}, {}, {}
    _run(client, plain, before)
    _run(client, loaders("fp8_e4m3fn") | {"10": lora_node(None, "my_mova_lora/lora_weights.pt", strengths),
                                          "20": probe_node(["10", 0], ["10", 2])}, patched)
    _run(client, plain, after)
    applied = [("my_mova_lora/lora_weights.pt", strengths)]
    for entry, (dtype, w0) in probed(before, "30").items():
        dtype1, w1 = probed(patched, "20")[entry]
        assert dtype == dtype1 == "torch.float8_e4m3fn", entry
        delta = lora_delta(factors, applied, entry, "video_dit")
        if delta.abs().max() > 0:
            assert (w1 - (w0 + delta)).norm() < 0.1 * (w0 + delta).norm(), entry  # fp8 rounding
            assert torch.cosine_similarity(w1 - w0, delta, dim=0) > 0.8, entry  # the change is the LoRA
        assert w1.abs().max() <= w0.abs().max(), entry
        assert torch.equal(probed(after, "30")[entry][1], w0), entry


def test_lora_problems_reach_the_user(client, base):
    """Keys that do not fit are named on the node and in the log; a LoRA fitting nothing stops the run."""
    from comfy_client import ServerError
    outputs = {}
    prompt = loaders() | {"10": lora_node(None, "partial.safetensors", dict.fromkeys(STRENGTHS, 1.0)),
                          "20": probe_node(["10", 0], ["10", 2])}
    _run(client, prompt, outputs)
    text = outputs["10"]["text"][0]
    assert "high-noise expert 1 weights at 1" in text
    assert "1 LoRA weights do not fit this model and were skipped: video_dit.blocks.9.self_attn.q.weight" in text
    assert "1 keys are not MOVA LoRA weights and were skipped: vae.decoder.conv_in.lora_A.weight" in text
    assert "MOVA LoRA partial.safetensors: 1 keys do not fit" in (base / "server.log").read_text()
    prompt["10"]["inputs"]["lora_name"] = "mova_720p.safetensors"
    with pytest.raises(ServerError, match="fits none of the loaded MOVA weights.*trained on this MOVA release"):
        _run(client, prompt)


def test_lora_workflow_end_to_end(client, base, tmp_path):
    name = client.upload_image(base / "input" / "start.png")
    prompt = _prompt(client, "mova_i2va_lora.json", seed=10, image_name=name)
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    _check_mp4(client.download(videos[0], tmp_path / "lora.mp4"))
    key = next(k for k, n in prompt.items() if n["class_type"] == "MovaLoraLoader")
    assert outputs[key]["text"][0].startswith("my_mova_lora/lora_weights.pt: high-noise expert 2 weights at 1")


def test_dual_cfg_workflow_with_step_caching(client, base, tmp_path):
    """The shipped dual-CFG workflow runs; with step caching on, the sampler says how many steps it skipped."""
    name = client.upload_image(base / "input" / "start.png")
    prompt = _prompt(client, "mova_i2va_dual_cfg.json", seed=11, image_name=name)
    outputs = {}
    videos, _ = _run(client, prompt, outputs)
    _check_mp4(client.download(videos[0], tmp_path / "dual.mp4"))
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "MovaSampler")
    assert sampler not in outputs  # no caching, nothing to report
    next(n for n in prompt.values() if n["class_type"] == "MovaSamplerOptions")["inputs"]["cache_threshold"] = 0.5
    prompt[sampler]["inputs"]["steps"] = 10
    _run(client, prompt, outputs)
    assert re.fullmatch(r"step caching skipped [1-9] of 10 steps \(\d+%\)", outputs[sampler]["text"][0])
    assert "MOVA Sampler: step caching skipped" in (base / "server.log").read_text()


def _train_prompt(client, run_name: str, steps: int, filename: str, checkpoint_every: int = 2) -> dict:
    """The shipped training workflow as an API prompt at test size, with the test CLIP stand-in."""
    from workflow_api import missing_models, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "workflows" / "mova_train_lora.json").read_text()), info)
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CLIPLoader":
            node["class_type"], node["inputs"] = "TestRandomClip", {}
        elif kind == "MovaDataset":
            inputs.update(width=WIDTH, height=HEIGHT, length=TRAIN_FRAMES, fps=FPS)
        elif kind == "MovaTrainLora":
            inputs.update(run_name=run_name, steps=steps, checkpoint_every=checkpoint_every, learning_rate=0.001)
        elif kind == "MovaSaveLora":
            inputs.update(filename=filename)
    assert missing_models(prompt, info) == []
    return prompt


def _key(prompt: dict, class_type: str) -> str:
    return next(k for k, n in prompt.items() if n["class_type"] == class_type)


def test_training_workflow_clips_to_a_lora_the_loader_applies(client, base):
    """Folder of clips -> MOVA Dataset -> MOVA Train LoRA (progress per step) -> MOVA Save LoRA in models/loras;
    the saved file then goes through the MOVA LoRA Loader as W + s·(alpha/rank)·B·A."""
    from safetensors import safe_open
    prompt = _train_prompt(client, "itest", steps=4, filename="mova/itest_lora")
    outputs = {}
    _, progress = _run(client, prompt, outputs)
    assert [v for k, v in progress if k == "MovaTrainLora"][-1] == 4
    train_text = outputs[_key(prompt, "MovaTrainLora")]["text"][0]
    assert train_text.startswith("trained steps 1-4") and "high-noise loss" in train_text, train_text
    assert outputs[_key(prompt, "MovaDataset")]["text"][0].startswith("2 clips encoded to mova_clips_32x32x9_24fps_")
    assert outputs[_key(prompt, "PreviewImage")]["images"]  # the loss curve
    saved = base / "models" / "loras" / "mova" / "itest_lora.safetensors"
    assert outputs[_key(prompt, "MovaSaveLora")]["text"][0].startswith(f"saved {saved}")
    assert sorted(p.name for p in (base / "output" / "mova_training" / "itest").iterdir()) == \
        ["step_000002.safetensors", "step_000004.safetensors"]
    with safe_open(str(saved), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    rank, alpha = int(meta["rank"]), float(meta["alpha"])
    assert (rank, alpha) == (8, 8.0) and "video_dit.blocks.0.self_attn.q.lora_A.weight" in tensors
    strengths = dict(zip(STRENGTHS, (0.5, 1.5, -1.0, 2.0)))
    loader = lora_node(None, "mova/itest_lora.safetensors", strengths)
    outputs = {}
    _run(client, loaders() | {"10": loader, "20": probe_node(["10", 0], ["10", 2]),
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
    for key in (_key(prompt, "MovaSaveLora"), _key(prompt, "PreviewImage")):
        del prompt[key]
    experts = sorted((k for k, n in prompt.items() if n["class_type"] == "MovaVideoExpertLoader"),
                     key=lambda k: prompt[k]["inputs"]["model_name"])
    parts = [[experts[0], 0], [experts[1], 0], [_key(prompt, "MovaAudioTowerLoader"), 0]]
    direct = lora_node(None, "mova/itest_lora.safetensors", strengths)
    direct["inputs"].update(zip(("high_noise_expert", "low_noise_expert", "audio_tower"), parts),
                            lora=[_key(prompt, "MovaTrainLora"), 0])
    prompt |= {"30": direct, "31": probe_node(["30", 0], ["30", 2])}
    direct_outputs = {}
    _run(client, prompt, direct_outputs)
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
        _run(client, _train_prompt(client, "itest", steps=6, filename="itest_again"))
    assert taken.read_bytes() == b"taken"
    log = (base / "server.log").read_text()
    assert "trained steps 5-6 (continued from the checkpoint at step 4)" in log
    _run(client, _train_prompt(client, "itest", steps=6, filename="itest_6"))
    # nothing was trained twice: ComfyUI kept the trained LoRA of the failed run, or the run found its final
    # checkpoint
    assert (base / "server.log").read_text().count("trained steps 5-6") == 1
    saved = load_file(str(base / "models" / "loras" / "itest_6.safetensors"))
    checkpoint = load_file(str(base / "output" / "mova_training" / "itest" / "step_000006.safetensors"))
    assert saved.keys() == {k for k in checkpoint if not k.startswith("optimizer.")}
    assert all(torch.equal(saved[k], checkpoint[k]) for k in saved)


def test_cancel_stops_training_and_the_checkpoint_continues(client, base):
    from comfy_client import ServerError
    from run_workflow import wait
    prompt = _train_prompt(client, "icancel", steps=1000, filename="icancel", checkpoint_every=2)
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt)
        while True:
            message = ws.receive(timeout=300)
            assert message is not None, "no progress from MOVA Train LoRA"
            data = message.get("data", {})
            trainer = data.get("node") == _key(prompt, "MovaTrainLora")
            if message["type"] == "progress" and trainer and data["value"] >= 3:
                break
        client.cancel(prompt_id)
        with pytest.raises(ServerError, match="cancelled"):
            wait(client, ws, prompt_id, prompt, timeout=120)
    finally:
        ws.close()
    run = base / "output" / "mova_training" / "icancel"
    last = max(int(p.stem.split("_")[1]) for p in run.glob("step_*.safetensors"))
    assert last >= 2 and not list(run.glob("*.tmp"))
    prompt = _train_prompt(client, "icancel", steps=last + 1, filename="icancel")
    outputs = {}
    _run(client, prompt, outputs)
    text = outputs[_key(prompt, "MovaTrainLora")]["text"][0]
    assert text.startswith(f"trained steps {last + 1}-{last + 1} (continued from the checkpoint at step {last})"), text


def test_training_on_fp8_weights(client, base):
    """Experts and audio tower loaded as fp8_e4m3fn (ComfyUI's scaled-fp8 layers): a float32 LoRA trains on them."""
    from safetensors.torch import load_file
    prompt = _train_prompt(client, "ifp8", steps=2, filename="ifp8")
    for node in prompt.values():
        if node["class_type"] in ("MovaVideoExpertLoader", "MovaAudioTowerLoader"):
            node["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    outputs = {}
    _run(client, prompt, outputs)
    text = outputs[_key(prompt, "MovaTrainLora")]["text"][0]
    assert text.startswith("trained steps 1-2"), text
    saved = load_file(str(base / "models" / "loras" / "ifp8.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())
    assert any(t.abs().max() > 0 for k, t in saved.items() if "lora_B" in k)
