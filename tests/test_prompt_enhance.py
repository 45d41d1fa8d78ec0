"""MOVA Prompt Enhance against a real HTTP server on 127.0.0.1 (tests/fake_llm_server.py): what the request
holds, the cleaned caption and every error of the chat itself. The key and host settings are in
test_prompt_security.py, deadlines and the HTTP layer in test_prompt_http.py."""

import base64
import logging
import socket
import struct
import zlib

import pytest
import torch

from comfyui_mova.nodes.llm_client import (EnhanceError, NoVision, ServerTimeout, ServerUnreachable, UnknownModel,
                                           endpoint, list_models, normalise_base_url)
from comfyui_mova.nodes.prompt_enhance import EnhanceSettings
from comfyui_mova.nodes.prompt_enhance import enhance_prompt as _enhance_prompt
from comfyui_mova.nodes.prompt_image import frame_pixels, image_data_url
from comfyui_mova.nodes.prompt_instructions import system_instructions
from fake_llm_server import TEXT_MODEL, VISION_MODEL, FakeLLMServer, caption_for, completion

IDEA = 'She sips her coffee and says "Of course it pours today." A tram bell rings.'


def enhance_prompt(idea, image_url, settings, **kwargs):
    """The enhancer with no user settings (no approved hosts, no key): loopback servers only."""
    return _enhance_prompt(idea, image_url, settings, environ={}, **kwargs)


@pytest.fixture(scope="module")
def running_server():
    with FakeLLMServer() as s:
        yield s


@pytest.fixture()
def server(running_server):
    running_server.reset()
    return running_server


def _settings(server, **changes) -> EnhanceSettings:
    fields = dict(base_url=server.url, model=VISION_MODEL, api_key_env="", temperature=0.3, seed=1234,
                  max_tokens=900, timeout=30, retry_without_image=False)
    return EnhanceSettings(**(fields | changes))


def _frame(height=40, width=48, rgb=(200, 120, 40)) -> torch.Tensor:
    image = torch.empty(1, height, width, 3)
    image[...] = torch.tensor(rgb) / 255
    return image


def _decode_png(data: bytes) -> torch.Tensor:
    """[H, W, 3] uint8 from an 8-bit RGB PNG without filters (what prompt_image writes), checking every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    assert len(raw) == stride * height and all(raw[y * stride] == 0 for y in range(height))
    rows = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(height, stride)
    return rows[:, 1:].reshape(height, width, 3)


def test_request_holds_model_instructions_image_and_sampling(server):
    image_url = image_data_url(_frame())
    result = enhance_prompt(IDEA, image_url, _settings(server))
    (request,) = server.chat_requests()
    body = request["body"]
    assert request["method"] == "POST" and request["path"] == "/v1/chat/completions"
    assert body["model"] == VISION_MODEL
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.3, 1234, 900)
    system, user = body["messages"]
    assert system == {"role": "system", "content": system_instructions(with_image=True)}
    text, picture = user["content"]
    assert user["role"] == "user" and IDEA in text["text"]
    assert picture["type"] == "image_url" and picture["image_url"]["url"] == image_url
    assert image_url.startswith("data:image/png;base64,")
    pixels = _decode_png(base64.b64decode(image_url.split(",", 1)[1]))
    assert pixels.shape == (40, 48, 3) and pixels.reshape(-1, 3).unique(dim=0).tolist() == [[200, 120, 40]]
    assert "authorization" not in request["headers"]  # no key named: none sent
    # the reply's reasoning block, lead-in line and markdown fence are gone
    assert result.caption == caption_for(IDEA) and result.warnings == ()


def test_text_only_request_has_no_image(server):
    result = enhance_prompt(IDEA, None, _settings(server, model=TEXT_MODEL))
    body = server.chat_requests()[0]["body"]
    assert body["messages"][0]["content"] == system_instructions(with_image=False)
    assert isinstance(body["messages"][1]["content"], str) and IDEA in body["messages"][1]["content"]
    assert result.caption == caption_for(IDEA)


def test_instructions_cover_the_caption_facts():
    for with_image in (True, False):
        text = system_instructions(with_image)
        for needle in ('"The audio shows"', "double quotes", "language they are spoken", "character for character",
                       "no title, headings, lists", "markdown"):
            assert needle.lower() in text.lower(), needle
    assert "first frame" in system_instructions(True) and "follow the picture" in system_instructions(True)
    assert "no picture" in system_instructions(False)


def test_first_frame_png_is_downscaled_and_first_of_batch():
    batch = torch.cat([_frame(1200, 2400, (10, 20, 30)), _frame(1200, 2400, (250, 250, 250))])
    assert frame_pixels(batch).shape == (512, 1024, 3)  # the longer side capped at 1024
    assert frame_pixels(_frame(30, 20)).shape == (30, 20, 3)  # never scaled up
    url = image_data_url(batch, max_side=64)
    pixels = _decode_png(base64.b64decode(url.split(",", 1)[1]))
    assert pixels.shape == (32, 64, 3)
    assert pixels.reshape(-1, 3).unique(dim=0).tolist() == [[10, 20, 30]]


def test_server_not_reachable_names_url_and_how_to_start():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = EnhanceSettings(f"http://127.0.0.1:{port}/v1", VISION_MODEL, timeout=5)
    with pytest.raises(ServerUnreachable) as err:
        enhance_prompt(IDEA, None, settings)
    message = str(err.value)
    assert f"http://127.0.0.1:{port}/v1" in message and "ollama serve" in message and "LM Studio" in message


@pytest.mark.parametrize("url", ["ftp://localhost/v1", "file:///etc/passwd", "localhost:11434/v1", "", "http:///v1"])
def test_only_http_urls(url):
    with pytest.raises(EnhanceError, match="base_url"):
        normalise_base_url(url)


def test_url_forms_accepted():
    assert normalise_base_url(" http://localhost:11434/v1/ ") == "http://localhost:11434/v1"
    assert normalise_base_url("https://api.example.com/v1/chat/completions") == "https://api.example.com/v1"


def test_unknown_model_lists_the_servers_models(server):
    with pytest.raises(UnknownModel) as err:
        enhance_prompt(IDEA, None, _settings(server, model="llama9:70b"))
    message = str(err.value)
    assert "'llama9:70b'" in message and f"{TEXT_MODEL}, {VISION_MODEL}" in message
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions", "/v1/models"]
    assert list_models(endpoint(server.url, environ={})) == sorted([VISION_MODEL, TEXT_MODEL])


def test_timeout_says_what_to_do(server):
    server.delay = 2.0
    with pytest.raises(ServerTimeout, match="within timeout \\(0.5 s; stopped while waiting for the reply's headers"
                       ".*Raise timeout"):
        enhance_prompt(IDEA, None, _settings(server, timeout=0.5))


def test_non_vision_model_with_an_image(server, caplog):
    image_url = image_data_url(_frame())
    with pytest.raises(NoVision, match=f"'{TEXT_MODEL}' cannot read images.*retry_without_image"):
        enhance_prompt(IDEA, image_url, _settings(server, model=TEXT_MODEL))
    caplog.set_level(logging.WARNING)
    result = enhance_prompt(IDEA, image_url, _settings(server, model=TEXT_MODEL, retry_without_image=True))
    first, second = server.chat_requests()[-2:]
    assert isinstance(first["body"]["messages"][1]["content"], list)
    assert isinstance(second["body"]["messages"][1]["content"], str)  # asked again without the picture
    assert result.caption == caption_for(IDEA)
    assert "cannot read images" in result.warnings[0] and "cannot read images" in caplog.text


def test_a_model_that_ignores_the_image_is_caught(server):
    server.respond = lambda r: (200, completion("I'm sorry, but I can't see the image you mentioned. Could you "
                                                "describe it?"))
    with pytest.raises(NoVision, match="cannot see the image"):
        enhance_prompt(IDEA, image_data_url(_frame()), _settings(server))


@pytest.mark.parametrize("status, body, match", [
    (200, "<html>hello</html>", "not JSON"),
    (200, {"object": "list", "data": []}, "without any choices"),
    (200, {"choices": [{"index": 0}]}, "without a message"),
    (200, completion(""), "no caption"),
    (200, completion("<think>Let me think about the woman, the rain, the"), "only the model's reasoning"),
    (200, completion("A woman stands in the rain and", finish_reason="length"), "cut off at max_tokens \\(900\\)"),
    (200, completion("A woman stands in the rain and", finish_reason=None), "stops mid-sentence"),
    (200, {"error": {"message": "upstream model crashed"}}, "reported an error: upstream model crashed"),
    (404, "404 page not found", "HTTP 404.*should end in /v1"),
    (429, {"error": {"message": "Rate limit reached"}}, "HTTP 429.*rate limited"),
    (500, {"error": "CUDA out of memory"}, "HTTP 500.*CUDA out of memory"),
])
def test_malformed_or_failed_replies_are_errors(server, status, body, match):
    server.respond = lambda r: (status, body)
    with pytest.raises(EnhanceError, match=match):
        enhance_prompt(IDEA, None, _settings(server))


def test_doubtful_caption_warns(server):
    server.respond = lambda r: (200, completion("A woman stands in the rain. " * 100))
    result = enhance_prompt(IDEA, None, _settings(server))
    assert any("The audio shows" in w for w in result.warnings)
    assert any("512 tokens" in w for w in result.warnings)


def test_max_completion_tokens_when_the_server_asks(server):
    def respond(request):
        if "max_tokens" in request["body"]:
            return 400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this "
                                              "model. Use 'max_completion_tokens' instead."}}
        return None
    server.respond = respond
    result = enhance_prompt(IDEA, None, _settings(server))
    assert server.chat_requests()[-1]["body"]["max_completion_tokens"] == 900
    assert result.caption == caption_for(IDEA)


def test_empty_inputs_are_refused_before_any_request(server):
    with pytest.raises(EnhanceError, match="idea is empty"):
        enhance_prompt("  ", None, _settings(server))
    with pytest.raises(EnhanceError, match="model is empty"):
        enhance_prompt(IDEA, None, _settings(server, model=" "))
    assert server.requests == []
