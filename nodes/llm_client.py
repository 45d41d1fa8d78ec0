"""A small client for OpenAI-compatible chat servers (Ollama, LM Studio, llama.cpp's server, vLLM, hosted APIs).

Standard library only. Where a request may go and which key it carries is decided by ``llm_access`` (the user's
settings, never the workflow's); ``llm_http`` carries it out within a deadline. Every failure becomes an
``EnhanceError`` whose message says what to do; the key lives in the ``Endpoint`` (never in its repr), goes only
into the Authorization header, and is blanked out of any server text a message repeats. Nothing here logs headers
or bodies.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from .llm_access import HOSTS_VAR, KEY_VAR, Access, AccessError, access_for, excerpt, parse_base_url
from .llm_http import HTTPFailure, exchange

START_SERVERS = (
    "Start the server or fix base_url. Ollama: run 'ollama serve' (or open the Ollama app), then "
    "'ollama pull <model>'; base_url http://localhost:11434/v1. LM Studio: load a model and start the server in "
    "its Developer tab; base_url http://localhost:1234/v1. llama.cpp: 'llama-server -m model.gguf --mmproj "
    "mmproj.gguf'; base_url http://localhost:8080/v1."
)


class EnhanceError(RuntimeError):
    """The prompt could not be enhanced; the message says why and what to change."""


class ServerUnreachable(EnhanceError):
    pass


class ServerTimeout(EnhanceError):
    pass


class Cancelled(EnhanceError):
    """The user cancelled the run while a request was under way (the request was stopped)."""


class AuthError(EnhanceError):
    pass


class UnknownModel(EnhanceError):
    pass


class NoVision(EnhanceError):
    """The model cannot read the image it was given."""


class BadReply(EnhanceError):
    """The server answered, but not with a usable caption (malformed, empty, cut off, not HTTP)."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and with which key (``access``), the seconds they may take in all (``timeout``, counted
    from ``deadline`` when one is set: time.monotonic()), and ``should_stop`` (Cancel) polled while waiting."""

    access: Access
    timeout: float = 300.0
    deadline: float | None = None
    should_stop: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

    @property
    def base_url(self) -> str:
        return self.access.target.url

    @property
    def api_key(self) -> str | None:
        return self.access.key

    @property
    def key_env(self) -> str:
        return self.access.key_var


def endpoint(base_url: str, api_key_env: str = "", environ=None, timeout: float = 300.0,
             should_stop: Callable[[], bool] | None = None) -> Endpoint:
    """The checked endpoint for ``base_url`` under the user's settings in ``environ`` (os.environ by default);
    raises EnhanceError (AuthError for key problems) before any connection."""
    environ = os.environ if environ is None else environ
    try:
        access = access_for(base_url, api_key_env, environ)
    except AccessError as err:
        raise (AuthError if err.auth else EnhanceError)(str(err)) from None
    return Endpoint(access, float(timeout), None, should_stop)


def normalise_base_url(url: str) -> str:
    """``url`` checked (http/https with a host) and trimmed to the part before /chat/completions."""
    try:
        return parse_base_url(url).url
    except AccessError as err:
        raise EnhanceError(str(err)) from None


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, the decoded JSON body (None when it is not JSON) and the raw text."""

    status: int
    data: object
    text: str


def _decode(raw: bytes) -> tuple[object, str]:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text), text
    except (ValueError, RecursionError):
        return None, text


def request(endpoint: Endpoint, method: str, path: str, payload: dict | None = None) -> Reply:
    """One request to ``base_url + path``; HTTP error statuses come back as a Reply, transport failures raise."""
    access = endpoint.access
    target = replace(access.target, path=access.target.path + path)
    url, key = target.url, access.key
    headers = {"Accept": "application/json", "User-Agent": "comfyui-mova", "Connection": "close"}
    body = None
    if payload is not None:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    deadline = endpoint.deadline if endpoint.deadline is not None else time.monotonic() + endpoint.timeout
    try:
        response = exchange(target, access.route, method, headers, body, deadline=deadline,
                            should_stop=endpoint.should_stop)
    except HTTPFailure as failure:
        raise _transport_error(endpoint, url, failure) from None
    if 300 <= response.status < 400:
        target_text = excerpt(response.location, key, 160) if response.location else "(no Location given)"
        raise ServerUnreachable(
            f"{url} redirects (HTTP {response.status}) to {target_text}: set base_url to the address the server "
            "answers on (redirects are not followed, so neither the key nor your data goes elsewhere)")
    data, text = _decode(response.body)
    return Reply(response.status, data, text)


def _transport_error(endpoint: Endpoint, url: str, failure: HTTPFailure) -> EnhanceError:
    detail = excerpt(str(failure), endpoint.api_key)
    local = endpoint.access.route.loopback_only
    if failure.kind == "cancelled":
        return Cancelled(f"cancelled while waiting for {url}; the request was stopped")
    if failure.kind == "timeout":
        return ServerTimeout(
            f"no complete reply from {url} within timeout ({endpoint.timeout:g} s; stopped {detail}): the model may "
            "still be loading (the first request loads it) or be too slow for this machine. Raise timeout, use a "
            "smaller model, or check the server's log")
    if failure.kind == "tls":
        return ServerUnreachable(f"TLS failed talking to {url}: {detail}. Check that base_url's scheme (http or "
                                 "https) matches the server and that its certificate is valid for that host")
    if failure.kind == "unreachable":
        fix = START_SERVERS if local else "Check base_url, this machine's network and proxy settings, and the " \
            "service's status page"
        return ServerUnreachable(f"cannot reach the language model server at {endpoint.base_url}: {detail}. {fix}")
    return BadReply(f"{url} did not give a usable HTTP reply: {detail}. Check that base_url points at the "
                    "OpenAI-compatible server (its host, port and /v1 path), not another service")


def server_message(reply: Reply, key: str | None) -> str:
    """The server's own error text (OpenAI's {"error": {"message"}}, Ollama's {"error": "..."}, or the body)."""
    data = reply.data
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or json.dumps(error)
        if error:
            return excerpt(error, key)
    return excerpt(reply.text or "(empty body)", key)


def list_models(endpoint: Endpoint) -> list[str]:
    """The model ids the server lists at /models (raises EnhanceError when it cannot say)."""
    reply = request(endpoint, "GET", "/models")
    if reply.status != 200:
        raise EnhanceError(f"HTTP {reply.status} from {endpoint.base_url}/models: "
                           f"{server_message(reply, endpoint.api_key)}")
    data = reply.data
    entries = data.get("data", data.get("models")) if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise BadReply(f"{endpoint.base_url}/models did not answer with a model list")
    names = [entry.get("id") or entry.get("name") if isinstance(entry, dict) else entry for entry in entries]
    return sorted(excerpt(n, endpoint.api_key, 120) for n in names if n)


NO_VISION = re.compile(
    r"(image|vision|multimodal|multi-modal|mmproj|image_url|projector).{0,80}"
    r"(not (be )?supported|unsupported|does not support|doesn't support|not support|missing data|only supported|"
    r"not enabled|not a multimodal|cannot|can't|is not allowed|not available)"
    r"|(not (be )?supported|unsupported|does not support|doesn't support|missing data|cannot|can't).{0,80}"
    r"(image|vision|multimodal)"
    r"|at most 0 image|not a multimodal model|vision (add-on|adapter) is not loaded",
    re.IGNORECASE)
ERROR_TEXT_SEARCHED = 8192  # an error body is searched for these phrases only this far (a hostile one can be 16 MiB)
MODEL_MISSING = re.compile(r"model.{0,120}(not found|does not exist|not exist|unknown|no such|not available|"
                           r"not loaded|invalid model|try pulling)|model_not_found|unknown model",
                           re.IGNORECASE)


@dataclass(frozen=True)
class ChatResult:
    """The assistant's text (reasoning kept, to be cleaned) and why it stopped ("stop", "length", or None)."""

    content: str
    finish_reason: str | None


def _unknown_model(endpoint: Endpoint, model: str, detail: str) -> UnknownModel:
    try:
        names = list_models(endpoint)
    except EnhanceError as err:
        return UnknownModel(f"model {model!r} is not on the server at {endpoint.base_url} ({detail}); its model "
                            f"list could not be read either: {err}")
    if not names:
        return UnknownModel(f"model {model!r} is not on the server at {endpoint.base_url}, which lists no models: "
                            "load or pull one (Ollama: 'ollama pull qwen2.5vl:7b'; LM Studio: load a model)")
    shown = ", ".join(names[:40]) + (f" and {len(names) - 40} more" if len(names) > 40 else "")
    return UnknownModel(f"model {model!r} is not on the server at {endpoint.base_url}. Set model to one it has: "
                        f"{shown}. (Ollama: 'ollama pull {model}' fetches it if it exists in Ollama's library.)")


def _content(message: dict) -> str:
    """The message's text: a string, or a list of parts whose text parts are joined (other parts skipped)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):  # a list of parts
        texts = []
        for index, part in enumerate(content, start=1):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and "text" in part:
                if not isinstance(part["text"], str):
                    raise BadReply(f"part {index} of the reply's message has text that is "
                                   f"{_kind(part['text'])}, not a string: the server is not speaking the OpenAI "
                                   "chat format; try another server or model")
                texts.append(part["text"])
            elif not isinstance(part, dict):
                raise BadReply(f"part {index} of the reply's message is {_kind(part)}, not a text part: the server "
                               "is not speaking the OpenAI chat format; try another server or model")
        return "".join(texts)
    if not isinstance(content, str):
        raise BadReply(f"the reply's message content is {_kind(content)}, not text: the server is not speaking the "
                       "OpenAI chat format; try another server or model")
    return content


def _kind(value: object) -> str:
    """A JSON value's kind in words ("null", "a number", "an object"...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), f"a {type(value).__name__}")


def chat_completion(endpoint: Endpoint, payload: dict, *, image_sent: bool = False) -> ChatResult:
    """POST ``payload`` to /chat/completions; the first choice's text, or an EnhanceError saying what to do."""
    url = endpoint.base_url + "/chat/completions"
    key = endpoint.api_key
    reply = request(endpoint, "POST", "/chat/completions", payload)
    if reply.status == 400 and isinstance(payload.get("max_tokens"), int) and \
            "max_completion_tokens" in reply.text:
        # OpenAI's newer models take the limit under another name: ask once more with it.
        payload = {k: v for k, v in payload.items() if k != "max_tokens"} | \
            {"max_completion_tokens": payload["max_tokens"]}
        reply = request(endpoint, "POST", "/chat/completions", payload)
    if reply.status != 200:
        detail = server_message(reply, key)
        if reply.status in (401, 403):
            host = endpoint.access.target.netloc
            if endpoint.api_key:
                fix = (f"the key in environment variable {endpoint.key_env} was refused: set {endpoint.key_env} to "
                       f"a valid key for {host} and restart ComfyUI")
            elif endpoint.access.listed:
                fix = (f"the server needs an API key: set {KEY_VAR} to it before starting ComfyUI (it goes only to "
                       f"the hosts in {HOSTS_VAR}, which lists {host})")
            else:
                fix = (f"the server needs an API key, and a host on this machine gets none unless you list it: set "
                       f"{HOSTS_VAR}={host} and {KEY_VAR}=<the key> before starting ComfyUI")
            raise AuthError(f"HTTP {reply.status} from {url} ({detail}): {fix}")
        head = reply.text[:ERROR_TEXT_SEARCHED]
        if image_sent and reply.status in (400, 415, 422, 500, 501) and NO_VISION.search(head):
            raise NoVision(f"model {payload.get('model')!r} cannot read images ({detail}): pick a vision model "
                           "(e.g. qwen2.5vl:7b or gemma3:12b in Ollama; for llama-server load the model's mmproj), "
                           "disconnect the image, or turn on retry_without_image")
        if reply.status in (400, 404, 422) and MODEL_MISSING.search(head):
            raise _unknown_model(endpoint, str(payload.get("model")), detail)
        if reply.status == 404:
            raise EnhanceError(f"HTTP 404 from {url} ({detail}): the server has no chat endpoint there; base_url "
                               "should end in /v1 (e.g. http://localhost:11434/v1)")
        if reply.status == 429:
            raise EnhanceError(f"HTTP 429 from {url} ({detail}): rate limited or out of credit; wait and queue "
                               "again, or check the account's plan")
        if reply.status in (408, 504):
            raise ServerTimeout(f"HTTP {reply.status} from {url} ({detail}): the server gave up waiting for the "
                                "model; try again, use a smaller model, or lower max_tokens")
        raise EnhanceError(f"HTTP {reply.status} from {url}: {detail}")
    data = reply.data
    if not isinstance(data, dict):
        raise BadReply(f"{url} answered with something that is not JSON ({excerpt(reply.text, key) or 'empty'}): "
                       "is base_url an OpenAI-compatible server?")
    if data.get("error"):
        raise EnhanceError(f"{url} reported an error: {server_message(reply, key)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadReply(f"{url} answered without any choices ({excerpt(reply.text, key)}): is base_url an "
                       "OpenAI-compatible server?")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadReply(f"{url} answered without a message in its first choice ({excerpt(reply.text, key)})")
    return ChatResult(_content(message), choice.get("finish_reason"))
