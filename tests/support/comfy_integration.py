"""The real ComfyUI the integration tests (tests/comfyui/test_comfyui_*.py) run against, and their helpers.

A pytest plugin (tests/conftest.py loads it): the session fixtures ``base`` (a temporary ComfyUI base directory:
this pack, tiny random models written here — a MOVA release, its fp8 conversions in both layouts, a random
full-size Wan 2.1 VAE in ComfyUI's format, MOVA LoRAs — test-only nodes: a real ComfyUI CLIP at toy size with
UMT5-XXL's tokenizer and model settings in place of Load CLIP (UMT5-XXL has no tiny form ComfyUI can load;
tests/support/comfy_text_nodes.py) and probes (tests/support/comfy_fixtures.py), training clips and media for the conditioning
modes), ``server`` (``main.py --cpu`` from COMFYUI_PATH on 127.0.0.1, one for the whole session) and ``client``;
and the helpers the tests share: the shipped workflows as API prompts at the test size, running one to its
outputs, checking an MP4, cancelling a run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from comfy_fixtures import (CONCAT_PROBE_NODE, GOLDEN_INPUTS_NODE, INTEGER_MEDIA_NODE, LATENT_PROBE_NODE, PROBE_NODE,
                            write_mode_media, write_test_loras)
from comfy_server import COMFYUI, PACK, comfy_server, new_base, write_wan_vae
from gguf_files import GGUF_PROBE_NODE

# every integration test module: pytestmark = INTEGRATION
INTEGRATION = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI, reason="COMFYUI_PATH is not set (point it at a ComfyUI checkout to run "
                       "the integration tests, with ComfyUI's Python)"),
]

# The native path: SamplerCustomAdvanced with stock noise and samplers, the MOVA Guider and MOVA Scheduler, on the
# joint latent in core's audio-video form (ComfyUI 0.8 and later: comfy/nested_tensor.py).
NATIVE = bool(COMFYUI) and (Path(COMFYUI) / "comfy" / "nested_tensor.py").is_file()


# without COMFYUI_PATH the module's INTEGRATION mark says so; this one only speaks of a ComfyUI that is there
needs_native = pytest.mark.skipif(bool(COMFYUI) and not NATIVE,
                                  reason=f"the ComfyUI in COMFYUI_PATH ({COMFYUI}) has no nested (audio-video) "
                                  "latents (comfy/nested_tensor.py, ComfyUI 0.8 and later)")

WIDTH, HEIGHT, FRAMES, FPS, STEPS = 32, 32, 25, 24.0, 4
# The ComfyUI server's environment: the user's settings for MOVA Prompt Enhance (the test servers' host approved,
# the key for it) and a decoy secret no workflow may reach.
LLM_KEY, DECOY_ENV, DECOY = "sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5", "MOVA_TEST_DECOY_SECRET", "sk-decoy-Aa1Bb2Cc3Dd4Ee5Ff6Gg"
LLM_ENV = {"MOVA_LLM_HOSTS": "127.0.0.1", "MOVA_LLM_API_KEY": LLM_KEY, DECOY_ENV: DECOY}
FP8_LAYOUTS = ("comfy_quant", "scaled_fp8")
CONVERTED = {"MOVA-360p/video_dit": "video_dit_high", "MOVA-360p/video_dit_2": "video_dit_low",
             "MOVA-360p/audio_dit": "audio_dit", "MOVA-360p/dual_tower_bridge": "dual_tower_bridge"}
TRAIN_FRAMES = 9
RATE = 16000  # the tiny release's audio codec (tests/support/tiny_release.py)

# Test only: core's per-step CFG override (CFG Override puts this PREDICT_NOISE wrapper on a MODEL) put on a GUIDER:
# within [sigma_low, sigma_high] the guider's cfg is set for the call, as that wrapper sets CFGGuider's. Like CFG
# Override on its clone of the MODEL, the wrapper goes on a copy of the guider (ComfyUI may hand one cached guider
# to several nodes).
GUIDER_CFG_NODE = '''
import copy

import comfy.model_patcher
import comfy.patcher_extension


class TestGuiderCFGOverride:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"guider": ("GUIDER",), "cfg": ("FLOAT", {"default": 1.0}),
                             "sigma_low": ("FLOAT", {"default": 0.0}),
                             "sigma_high": ("FLOAT", {"default": 1.0, "max": 1000.0})}}
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "patch"
    CATEGORY = "testing"

    def patch(self, guider, cfg, sigma_low, sigma_high):
        def wrapper(executor, *args, **kwargs):
            sigma = float(args[1].flatten()[0])
            if not sigma_low <= sigma <= sigma_high:
                return executor(*args, **kwargs)
            target = executor.class_obj
            saved, target.cfg = target.cfg, cfg
            try:
                return executor(*args, **kwargs)
            finally:
                target.cfg = saved
        guider = copy.copy(guider)
        guider.model_options = comfy.model_patcher.create_model_options_clone(guider.model_options)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "test_cfg",
                                                     wrapper, guider.model_options, is_model_options=True)
        return (guider,)


NODE_CLASS_MAPPINGS = {"TestGuiderCFGOverride": TestGuiderCFGOverride}
'''


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """ComfyUI base directory: the pack, the test text node, tiny models, a start image."""
    from PIL import Image
    from tiny_release import DAC_16K, write_release

    assert DAC_16K.sample_rate == RATE, "RATE must be the tiny release's audio rate"
    root = new_base(tmp_path_factory.mktemp("comfy_base"))
    (root / "custom_nodes" / "test_text_nodes.py").write_text((Path(__file__).parent / "comfy_text_nodes.py").read_text())
    (root / "custom_nodes" / "test_weight_probe.py").write_text(PROBE_NODE)
    (root / "custom_nodes" / "test_gguf_probe.py").write_text(GGUF_PROBE_NODE)
    (root / "custom_nodes" / "test_concat_probe.py").write_text(CONCAT_PROBE_NODE)
    (root / "custom_nodes" / "test_latent_probe.py").write_text(LATENT_PROBE_NODE)
    (root / "custom_nodes" / "test_golden_inputs.py").write_text(GOLDEN_INPUTS_NODE)
    (root / "custom_nodes" / "test_integer_media.py").write_text(INTEGER_MEDIA_NODE)
    (root / "custom_nodes" / "test_guider_cfg.py").write_text(GUIDER_CFG_NODE)
    models = root / "models"
    write_release(models / "diffusion_models" / "MOVA-360p",
                  ("video_dit", "video_dit_2", "audio_dit", "dual_tower_bridge"))
    write_release(models / "vae" / "MOVA-360p", ("audio_vae",))
    write_wan_vae(models / "vae" / "wan_2.1_vae.safetensors")
    write_test_loras(models / "loras")
    release = models / "diffusion_models" / "MOVA-360p"
    for layout in FP8_LAYOUTS:  # the converter's fp8 files in both key layouts
        subprocess.run([sys.executable, "-m", "mova_model.convert", str(release), str(models / "diffusion_models" /
                        f"converted_{layout}"), "--prefix", "mova_tiny", "--components", "high", "low", "audio_dit",
                        "bridge", "--fp8-layout", layout], cwd=PACK, check=True, capture_output=True)
    Image.new("RGB", (48, 40), (200, 120, 40)).save(root / "input" / "start.png")
    from clip_files import write_clip
    for i in range(2):  # training clips: real H.264 + AAC files, a little larger and longer than needed
        write_clip(root / "input" / "mova_clips" / f"clip{i}.mp4", TRAIN_FRAMES + 3, FPS, WIDTH + 16, HEIGHT + 8,
                   sample_rate=RATE, tone=330.0 * (i + 1), seed=i, caption=f"clip {i}. The audio shows a tone.")
    write_mode_media(root / "input")
    return root


@pytest.fixture(scope="session")
def server(base):
    """A ComfyUI server on a free port, one for all the integration tests (stopped at the end); yields its
    URL."""
    with comfy_server(base, env=LLM_ENV) as url:
        yield url


@pytest.fixture(scope="session")
def client(server):
    from comfy_client import ComfyClient
    return ComfyClient(server, timeout=120)


def refusal(client, prompt) -> dict:
    """POST /prompt expecting a refusal: {node id: [error details]}."""
    import urllib.error
    import urllib.request
    request = urllib.request.Request(client.base + "/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    answer = json.loads(refused.value.read())
    return {key: [e["details"] for e in entry["errors"]] for key, entry in answer["node_errors"].items()}


def api_prompt(client, workflow: str, stock: dict | None = None, **params):
    """The shipped workflow as an API prompt, with the tiny real CLIP in place of Load CLIP (UMT5-XXL): its
    MOVA Text Encode nodes run as they are. ``stock``: {class_type: {input: value}} set on stock nodes (the test's
    own model files, sizes)."""
    from workflow_api import missing_models, set_parameters, ui_to_api
    info = client.object_info()
    prompt = ui_to_api(json.loads((PACK / "example_workflows" / workflow).read_text()), info)
    set_parameters(prompt, width=WIDTH, height=HEIGHT, frames=FRAMES, steps=STEPS, **params)
    for node in prompt.values():
        if node["class_type"] == "CLIPLoader":
            node["class_type"], node["inputs"] = "TestTinyUMT5Loader", {"kind": "umt5xxl"}
        node["inputs"].update((stock or {}).get(node["class_type"], {}))
    assert sum(n["class_type"] == "MovaTextEncode" for n in prompt.values()) >= 2
    assert missing_models(prompt, info) == []
    return prompt


def run_prompt(client, prompt, outputs: dict | None = None, previews: list | None = None):
    """(SaveVideo files, sampler progress) of one prompt run; ``outputs`` receives every node's UI output,
    ``previews`` the binary preview messages."""
    from run_workflow import finished_history, wait
    from workflow_api import video_outputs
    ws = client.websocket()
    if previews is not None:
        ws.on_binary = previews.append
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


def check_mp4(path: Path, frames_wanted: int = FRAMES, size: tuple[int, int] = (WIDTH, HEIGHT),
              fps: float = FPS) -> tuple[int, int]:
    """Checks an MP4's frames, size, rate (``fps``) and sound length (as long as the frames: frames / fps);
    returns (frames, audio samples) it holds."""
    import av
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = [f for f in container.decode(video=0)]
        assert len(frames) == frames_wanted and (frames[0].width, frames[0].height) == size
        assert video.average_rate == Fraction(fps).limit_denominator(1001), (video.average_rate, fps)
        # our AUDIO is mono; ComfyUI's muxer may store it as a stereo AAC track
        assert audio.codec_context.sample_rate == RATE and audio.channels in (1, 2)
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    expected = int(RATE * frames_wanted / fps)
    # AAC encodes whole 1024-sample frames: the track holds the audio, padded to at most one more frame.
    assert expected <= samples <= expected + 1024 + 1024, (samples, expected)
    duration = samples / RATE
    assert abs(duration - frames_wanted / fps) < 0.15
    return len(frames), samples


def cancel_during(client, prompt: dict, is_running, silent: str, timeout: float = 120) -> str:
    """Queue ``prompt``, cancel it at the first progress message for which ``is_running(data)`` holds (``silent``:
    the failure when none comes), and check ComfyUI reports it cancelled; returns the prompt id."""
    from comfy_client import ServerError
    from run_workflow import wait
    ws = client.websocket()
    try:
        prompt_id = client.queue(prompt)
        while True:
            message = ws.receive(timeout=timeout)
            assert message is not None, silent
            if message["type"] == "progress" and is_running(message.get("data", {})):
                break
        client.cancel(prompt_id)
        with pytest.raises(ServerError, match="cancelled"):
            wait(client, ws, prompt_id, prompt, timeout=120)
    finally:
        ws.close()
    return prompt_id


def log_after(base: Path, start: int) -> str:
    return (base / "server.log").read_text()[start:]


def saved_latent(base: Path, outputs: dict, node: str) -> torch.Tensor:
    from safetensors.torch import load_file
    entry = outputs[node]["latents"][0]
    return load_file(str(base / "output" / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def node_key(prompt: dict, class_type: str) -> str:
    (key,) = [k for k, n in prompt.items() if n["class_type"] == class_type]
    return key


def train_prompt(client, run_name: str, steps: int, filename: str, checkpoint_every: int = 2) -> dict:
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
