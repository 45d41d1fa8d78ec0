"""End to end in a real ComfyUI (COMFYUI_PATH = a ComfyUI checkout; run pytest with ComfyUI's Python).

Starts ``main.py --cpu`` on 127.0.0.1 with a temporary base directory holding this pack, tiny random models
written here (a MOVA release, a random full-size Wan 2.1 VAE in ComfyUI's format) and a test-only text
node (UMT5-XXL has no tiny form ComfyUI can load), then runs the shipped mova_i2va.json through the
headless client and checks the MP4.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

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

TEXT_NODE = '''
import hashlib
import torch

class TestRandomTextStates:
    """Test only: deterministic random [1,16,4096] text states in place of UMT5-XXL."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    def encode(self, text):
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        states = torch.randn(1, 16, 4096, generator=torch.Generator().manual_seed(seed))
        return ([[states, {"pooled_output": None}]],)

NODE_CLASS_MAPPINGS = {"TestRandomTextStates": TestRandomTextStates}
'''

WAN_VAE = '''
import math, sys
OUT = sys.argv[1]
sys.argv = ["write_vae", "--cpu"]
sys.path.insert(0, ".")
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.ldm.wan.vae as wan_vae
from safetensors.torch import save_file
model = wan_vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                       temperal_downsample=[False, True, True], dropout=0.0)
gen = torch.Generator().manual_seed(0)
state = {}
for key, value in model.state_dict().items():
    if key.endswith("gamma"):
        state[key] = torch.ones(value.shape)
    elif value.dim() >= 2:
        fan_in = math.prod(value.shape[1:])
        state[key] = torch.randn(value.shape, generator=gen) * (0.5 / math.sqrt(fan_in))
    else:
        state[key] = torch.zeros(value.shape)
save_file({k: v.half().contiguous() for k, v in state.items()}, OUT)
'''


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
    models = root / "models"
    write_release(models / "diffusion_models" / "MOVA-360p",
                  ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"))
    write_release(models / "vae" / "MOVA-360p", ("audio_vae",))
    vae_file = models / "vae" / "wan_2.1_vae.safetensors"
    subprocess.run([sys.executable, "-c", WAN_VAE, str(vae_file)], cwd=COMFYUI, check=True, capture_output=True)
    (root / "input").mkdir()
    Image.new("RGB", (48, 40), (200, 120, 40)).save(root / "input" / "start.png")
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
    assert sorted(client.get_json("/workflow_templates")["comfyui-mova"]) == ["mova_i2va", "mova_t2va"]
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


def _run(client, prompt):
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
    return video_outputs(finished_history(client, prompt_id), prompt), progress


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
