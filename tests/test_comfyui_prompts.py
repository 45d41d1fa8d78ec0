"""Prompts in a real ComfyUI: MOVA Prompt Enhance and Prompt Builder against a local stand-in language model
server, the enhanced workflow end to end, what a workflow cannot make the enhancer do (read a variable it names,
send anything to a host the user did not list, outlive its timeout or a Cancel), and MOVA Text Encode (literal,
cleaned, cut at 512 tokens, the wrong text encoder refused before any VAE work).
"""

from __future__ import annotations

import json
import time

import pytest

from comfy_integration import (DECOY, DECOY_ENV, FPS, HEIGHT, INTEGRATION, LLM_KEY, STEPS, WIDTH, api_prompt,
                               check_mp4, run_prompt)
from comfy_server import PACK, free_port
from comfyui_mova.nodes import spec
from fake_llm_server import TEXT_MODEL, VISION_MODEL, FakeLLMServer, ScriptedServer, caption_for, wait_for_hangup

pytestmark = INTEGRATION


@pytest.fixture(scope="module")
def llm():
    """The language model server stand-in, in this process on 127.0.0.1 (ComfyUI's process calls it)."""
    with FakeLLMServer() as server:
        yield server


def _enhancer(prompt: dict, llm, **inputs) -> tuple[str, dict]:
    key, node = next((k, n) for k, n in prompt.items() if n["class_type"] == "MovaPromptEnhance")
    node["inputs"].update({"base_url": llm.url, "model": VISION_MODEL} | inputs)
    return key, node


def test_enhanced_workflow_end_to_end(client, base, llm, tmp_path):
    """Idea + first frame -> MOVA Prompt Enhance (the local test server) -> text encoder -> i2va -> MP4. The key
    comes from ComfyUI's environment (MOVA_LLM_API_KEY, for the hosts in MOVA_LLM_HOSTS: 127.0.0.1) into the request
    only, the workflow as shipped (api_key_env empty); a re-queue reuses the caption without a request."""
    import base64
    import io

    from PIL import Image

    llm.reset()
    llm.required_key = LLM_KEY
    Image.new("RGB", (48, 40), (30, 160, 90)).save(tmp_path / "enhanced_start.png")  # no other test uploads it
    name = client.upload_image(tmp_path / "enhanced_start.png")
    prompt = api_prompt(client, "mova_i2va_enhanced.json", seed=12, image_name=name)
    key, enhancer = _enhancer(prompt, llm)
    assert enhancer["inputs"]["api_key_env"] == ""
    outputs = {}
    videos, _ = run_prompt(client, prompt, outputs)
    check_mp4(client.download(videos[0], tmp_path / "enhanced.mp4"))

    (request,) = llm.chat_requests()
    assert request["headers"]["authorization"] == f"Bearer {LLM_KEY}"
    body = request["body"]
    assert body["model"] == VISION_MODEL and body["seed"] == 0 and body["max_tokens"] == 2048
    assert enhancer["inputs"]["idea"] in body["messages"][1]["content"][0]["text"]
    url = body["messages"][1]["content"][1]["image_url"]["url"]
    picture = Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
    assert picture.format == "PNG" and picture.size == (48, 40)
    assert [c for _, c in picture.convert("RGB").getcolors()] == [(30, 160, 90)]  # the frame MOVA starts from
    assert outputs[key]["text"][0] == caption_for(enhancer["inputs"]["idea"])  # cleaned: no think block, no fence
    positive = next(n for n in prompt.values() if n["class_type"] == "MovaTextEncode"
                    and isinstance(n["inputs"]["text"], list))
    assert positive["inputs"]["text"] == [key, 0]

    # re-queued with another sampler seed: the sampler runs again, the enhancer comes from ComfyUI's cache
    next(n for n in prompt.values() if n["class_type"] == "MovaSampler")["inputs"]["seed"] = 13
    videos, progress = run_prompt(client, prompt)
    assert videos and [v for k, v in progress if k == "MovaSampler"][-1] == STEPS
    assert len(llm.chat_requests()) == 1

    # the key appears nowhere that is saved or logged
    history = json.dumps(client.get_json("/history"))
    assert LLM_KEY not in history
    assert LLM_KEY not in (base / "server.log").read_text()
    assert LLM_KEY not in (PACK / "example_workflows" / "mova_i2va_enhanced.json").read_text()
    assert LLM_KEY not in json.dumps(client.object_info()["MovaPromptEnhance"])


def test_prompt_tools_errors_reach_the_user(client, base, llm):
    """Builder -> Enhance -> Preview: the builder's caption is the idea; a text-only model given the first frame
    and a server that is down stop the run with messages that say what to do."""
    from comfy_client import ServerError
    llm.reset()
    builder = {w.name: "" for w in spec.PROMPT_BUILDER.widgets}
    builder |= {"scene": "A lighthouse on a cliff at night", "speaker_1": "the keeper", "language_1": "English",
                "words_1": "Storm's coming.", "effects": "waves crashing"}
    enhance = {w.name: w.default for w in spec.PROMPT_ENHANCE.widgets}
    enhance |= {"idea": ["1", 0], "base_url": llm.url, "model": VISION_MODEL}
    prompt = {"1": {"class_type": "MovaPromptBuilder", "inputs": builder},
              "2": {"class_type": "MovaPromptEnhance", "inputs": enhance},
              "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    outputs = {}
    run_prompt(client, prompt, outputs)
    (request,) = llm.chat_requests()
    assert 'The keeper says, "Storm\'s coming."' in request["body"]["messages"][1]["content"]
    assert outputs["3"]["text"][0].startswith("A woman waits under an awning")

    name = client.upload_image(base / "input" / "start.png")
    prompt["4"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    prompt["2"]["inputs"] |= {"model": TEXT_MODEL, "image": ["4", 0]}
    with pytest.raises(ServerError, match=f"'{TEXT_MODEL}' cannot read images.*retry_without_image"):
        run_prompt(client, prompt)
    prompt["2"]["inputs"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match="cannot reach the language model server at http://127.0.0.1:.*ollama serve"):
        run_prompt(client, prompt)


def _enhance_graph(llm, **inputs) -> dict:
    """MOVA Prompt Enhance (its defaults, the test server) -> Preview Any."""
    enhance = {w.name: w.default for w in spec.PROMPT_ENHANCE.widgets}
    enhance |= {"idea": "A tram passes in the rain.", "base_url": llm.url, "model": VISION_MODEL} | inputs
    return {"2": {"class_type": "MovaPromptEnhance", "inputs": enhance},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def test_a_workflow_cannot_reach_a_secret_or_an_unlisted_host(client, base, llm):
    """The server's environment holds a decoy secret: a workflow naming it in api_key_env is refused before any
    request, a host the user did not list gets nothing, a loopback host the user did not list gets no key; neither
    secret shows up in the history or the log."""
    from comfy_client import ServerError
    llm.reset()
    log_start = len((base / "server.log").read_text())
    with pytest.raises(ServerError, match=f"api_key_env names {DECOY_ENV}, but MOVA Prompt Enhance no longer reads "
                       "a variable a workflow names.*clear api_key_env"):
        run_prompt(client, _enhance_graph(llm, api_key_env=DECOY_ENV))
    with pytest.raises(ServerError, match="collector.example is not on this machine and not in your MOVA_LLM_HOSTS "
                       "list, so MOVA Prompt Enhance sends nothing there"):
        run_prompt(client, _enhance_graph(llm, base_url="https://collector.example/v1", api_key_env="HOME"))
    with pytest.raises(ServerError, match="api_key_env holds text that is not shaped like an environment variable's "
                       "name"):
        run_prompt(client, _enhance_graph(llm, api_key_env="3f9a1c0e7b2d4f6a8c0e2b4d6f8a0c2e"))
    assert llm.requests == []
    outputs = {}
    run_prompt(client, _enhance_graph(llm, base_url=llm.url.replace("127.0.0.1", "localhost")), outputs)
    (request,) = llm.chat_requests()
    assert "authorization" not in request["headers"]  # localhost is not in MOVA_LLM_HOSTS: no key
    assert outputs["3"]["text"][0].startswith("A woman waits under an awning")
    history = json.dumps(client.get_json("/history"))
    log = (base / "server.log").read_text()[log_start:]
    for secret in (DECOY, LLM_KEY):
        assert secret not in history and secret not in log


def test_a_reply_that_echoes_the_key_is_blanked_on_the_node(client, base, llm):
    llm.reset()
    llm.respond = lambda r: (200, {"choices": [{"message": {"content": "A tram, sign " + r["headers"].get(
        "authorization", "") + ".\n\nThe audio shows rain."}, "finish_reason": "stop"}]})
    outputs = {}
    run_prompt(client, _enhance_graph(llm), outputs)
    shown = outputs["2"]["text"][0]
    assert "contained (part of) your API key, blanked out here as ***" in shown and "sign Bearer ***." in shown
    assert outputs["3"]["text"][0] == "A tram, sign Bearer ***.\n\nThe audio shows rain."
    assert LLM_KEY[8:20] not in json.dumps(client.get_json("/history")) + (base / "server.log").read_text()


def test_cancel_stops_a_request_at_once(client, base):
    """A server that never answers, timeout 600 s: Cancel ends the run within a second or two, and the server sees
    the connection closed."""
    from comfy_client import ServerError
    from run_workflow import wait
    with ScriptedServer(lambda conn, request: wait_for_hangup(conn, 60)) as silent:
        prompt = _enhance_graph(silent, timeout=600)
        ws = client.websocket()
        try:
            prompt_id = client.queue(prompt)
            deadline = time.monotonic() + 120
            while not silent.requests:
                assert time.monotonic() < deadline, "the enhancer never sent its request"
                time.sleep(0.05)
            cancelled_at = time.monotonic()
            client.cancel(prompt_id)
            with pytest.raises(ServerError, match="cancelled"):
                wait(client, ws, prompt_id, prompt, timeout=60)
            ended = time.monotonic() - cancelled_at
        finally:
            ws.close()
        while not silent.hangups and time.monotonic() - cancelled_at < 10:
            time.sleep(0.05)
        hung_up = silent.requests[0]["at"] + silent.hangups[0] - cancelled_at
    assert hung_up < 1.5 and ended < 5, (hung_up, ended)


def test_timeout_cuts_a_trickling_server(client):
    """A byte every 0.2 s: each read succeeds, the run still stops at timeout (5 s, the widget's least)."""
    from comfy_client import ServerError

    def trickle(conn, request):
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b" " * 100:
            conn.sendall(bytes([byte]))
            time.sleep(0.2)
    with ScriptedServer(trickle) as slow:
        start = time.monotonic()
        with pytest.raises(ServerError, match="no complete reply from .* within timeout \\(5 s; stopped while"):
            run_prompt(client, _enhance_graph(slow, timeout=5))
        elapsed = time.monotonic() - start
    assert 5 <= elapsed < 9, elapsed


def _text_graph(encoders: dict) -> dict:
    """A tiny UMT5 CLIP (node 1) feeding text nodes {id: (class_type, text)}, each probed (node id + 100)."""
    prompt = {"1": {"class_type": "TestTinyUMT5Loader", "inputs": {"kind": "umt5xxl"}}}
    for key, (kind, text) in encoders.items():
        prompt[key] = {"class_type": kind, "inputs": {"clip": ["1", 0], "text": text}}
        prompt[str(int(key) + 100)] = {"class_type": "TestConditioningProbe", "inputs": {"conditioning": [key, 0]}}
    return prompt


def test_text_encode_is_literal_and_cleaned(client):
    """MOVA Text Encode through a real ComfyUI CLIP: the official cleaning, brackets as plain text (what stock CLIP
    Text Encode gives only with escaped brackets), padded to 512 states with the padding zeroed."""
    spoken = 'He laughs (softly) and says, "Fish & chips?"'
    prompt = _text_graph({
        "10": ("MovaTextEncode", '  He laughs (softly)\n\n and says,  "Fish &amp;amp; chips?" '),
        "11": ("CLIPTextEncode", spoken.replace("(", "\\(").replace(")", "\\)")),  # stock, escaped: literal
        "12": ("CLIPTextEncode", spoken),  # stock: (softly) is emphasis, weighted 1.1
        "13": ("MovaTextEncode", "a \\(b\\)"), "14": ("CLIPTextEncode", "a \\\\(b\\\\)"),
    })
    outputs = {}
    run_prompt(client, prompt, outputs)
    found = {key: json.loads(outputs[str(int(key) + 100)]["states"][0]) for key in ("10", "11", "12", "13", "14")}
    assert found["10"]["shape"] == [1, 512, 4096]
    assert found["10"]["rows"] == len(spoken) + 1  # one token per byte, and the end token
    assert found["10"]["sha256"] == found["11"]["sha256"]
    assert found["12"]["sha256"] != found["10"]["sha256"]
    assert found["13"]["sha256"] == found["14"]["sha256"] and found["13"]["rows"] == len("a \\(b\\)") + 1
    assert "10" not in outputs  # nothing to warn about


def test_long_prompt_is_cut_at_512_tokens_with_a_warning(client, base):
    long_text = "The audio shows " + "rain on the roof, " * 40  # 736 bytes: a token each for the byte tokenizer
    prompt = _text_graph({"10": ("MovaTextEncode", long_text), "11": ("MovaTextEncode", long_text[:511]),
                          "12": ("CLIPTextEncode", long_text)})
    outputs = {}
    run_prompt(client, prompt, outputs)
    found = {key: json.loads(outputs[str(int(key) + 100)]["states"][0]) for key in ("10", "11", "12")}
    assert found["10"]["shape"] == [1, 512, 4096] and found["10"]["rows"] == 512
    assert found["10"]["sha256"] == found["11"]["sha256"]  # the first 511 tokens and the end token
    assert found["12"]["shape"][1] == len(long_text) + 1  # stock: no cleaning (the last space stays), no cut
    text = outputs["10"]["text"][0]
    assert text.startswith(f"warning: the prompt is {len(long_text.rstrip()) + 1} tokens long; MOVA reads the "
                           "first 512 as the official pipeline does")
    assert f'it drops: "{long_text[511:511 + 20].strip()}' in text
    assert "MOVA Text Encode: the prompt is" in (base / "server.log").read_text()


def test_conditioning_cuts_long_stock_states_with_a_warning(client):
    """Stock CLIP Text Encode does not cut: MOVA Conditioning cuts its states to 512 and says so on the node."""
    long_text = "rain on the roof, " * 40
    prompt = _text_graph({"10": ("CLIPTextEncode", long_text), "11": ("MovaTextEncode", "blurry")})
    del prompt["110"], prompt["111"]
    prompt |= {
        "20": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "21": {"class_type": "MovaAudioVAELoader", "inputs": {"vae_name": "MOVA-360p/audio_vae",
                                                              "weight_dtype": "default"}},
        "22": {"class_type": "MovaConditioning", "inputs": {
            "positive": ["10", 0], "negative": ["11", 0], "vae": ["20", 0], "audio_vae": ["21", 0],
            "width": WIDTH, "height": HEIGHT, "length": 5, "fps": FPS}},
        "23": {"class_type": "PreviewAny", "inputs": {"source": ["22", 2]}},
    }
    outputs = {}
    run_prompt(client, prompt, outputs)
    assert outputs["22"]["text"][0].startswith(
        f"warning: positive: {len(long_text) + 1} text states, MOVA reads at most 512")


def test_wrong_text_encoder_stops_before_any_vae_work(client):
    from comfy_client import ServerError
    prompt = api_prompt(client, "mova_t2va.json", seed=12)
    loader = next(n for n in prompt.values() if n["class_type"] == "TestTinyUMT5Loader")
    loader["inputs"]["kind"] = "t5xxl"
    with pytest.raises(ServerError, match=r"this CLIP is T5-XXL \(SD3 / Flux\), MOVA needs UMT5-XXL.*type wan"):
        run_prompt(client, prompt)
