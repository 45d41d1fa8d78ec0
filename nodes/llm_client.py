"""A small client for OpenAI-compatible chat servers (Ollama, LM Studio, llama.cpp's server, vLLM, hosted APIs).

Standard library only (urllib). Every failure becomes an ``EnhanceError`` whose message says what to do; the API
key lives in the ``Endpoint`` (never in its repr), goes only into the Authorization header, and is blanked out of
any server text a message repeats. Nothing here logs headers or bodies.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

MAX_REPLY_BYTES = 16 * 1024 * 1024
SERVER_TEXT_CHARS = 300  # how much of a server's own error text a message repeats

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


class AuthError(EnhanceError):
    pass


class UnknownModel(EnhanceError):
    pass


class NoVision(EnhanceError):
    """The model cannot read the image it was given."""


class BadReply(EnhanceError):
    """The server answered, but not with a usable caption (malformed, empty, cut off)."""


@dataclass(frozen=True)
class Endpoint:
    """Where to send requests: ``base_url`` up to /v1 (no trailing slash), the key (or None), the timeout in s."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    key_env: str = ""
    timeout: float = 300.0


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, the decoded JSON body (None when it is not JSON) and the raw text."""

    status: int
    data: object
    text: str


def normalise_base_url(url: str) -> str:
    """``url`` checked (http/https with a host) and trimmed to the part before /chat/completions."""
    url = (url or "").strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise EnhanceError(
            f"base_url {url!r} is not an http:// or https:// address: give the server's OpenAI-compatible URL, "
            "e.g. http://localhost:11434/v1 (Ollama)")
    if not parsed.hostname:
        raise EnhanceError(f"base_url {url!r} has no host name: e.g. http://localhost:11434/v1")
    if parsed.username or parsed.password:
        raise EnhanceError("base_url must not hold a user name or password: put the key in an environment "
                           "variable and name it in api_key_env")
    if parsed.query or parsed.fragment:
        raise EnhanceError(f"base_url {url!r} has a query or fragment: give only the address up to /v1")
    path = parsed.path.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if path.endswith(tail):
            path = path[: -len(tail)]
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _looks_like_a_key(text: str) -> bool:
    return len(text) >= 24 and any(c.isdigit() for c in text) and any(c.isupper() for c in text) and \
        any(c.islower() for c in text)


def api_key_from_env(name: str, environ=None) -> str | None:
    """The key held by environment variable ``name`` (None when ``name`` is empty). Never echoes a value."""
    environ = os.environ if environ is None else environ
    name = (name or "").strip()
    if not name:
        return None
    pasted = ("api_key_env looks like an API key, not the name of an environment variable: remove it from the "
              "node (widget values are saved in workflows, so replace that key if the workflow was shared), put "
              "the key in an environment variable before starting ComfyUI, and write the variable's NAME here")
    if not ENV_NAME.fullmatch(name):
        raise AuthError(pasted if len(name) >= 16 else
                        f"api_key_env {name!r} is not an environment variable name (letters, digits and _ only)")
    value = environ.get(name)
    if value is None or not value.strip():
        if _looks_like_a_key(name):
            raise AuthError(pasted)
        state = "is empty" if value is not None else "is not set"
        raise AuthError(
            f"environment variable {name} (api_key_env) {state}: set it to your API key before starting "
            f"ComfyUI (e.g. 'export {name}=...' on Linux/macOS, 'setx {name} ...' on Windows), then restart "
            "ComfyUI; or clear api_key_env for a local server that needs no key")
    return value.strip()


def is_local(url: str) -> bool:
    """True when ``url`` points at this machine (loopback)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact(text: str, key: str | None) -> str:
    """``text`` with the key blanked out and cut to a short excerpt (server text repeated in messages)."""
    text = " ".join(str(text).split())
    if key:
        text = text.replace(key, "***")
    return text if len(text) <= SERVER_TEXT_CHARS else text[:SERVER_TEXT_CHARS] + " …"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are refused: following one would send the key to wherever the server points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl}", headers, fp)


def _opener(url: str) -> urllib.request.OpenerDirector:
    # A local server is reached directly even when HTTP(S)_PROXY is set; remote ones follow the proxy settings.
    proxies = urllib.request.ProxyHandler({}) if is_local(url) else urllib.request.ProxyHandler()
    return urllib.request.build_opener(proxies, _NoRedirect())


def _decode(raw: bytes) -> tuple[object, str]:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text), text
    except ValueError:
        return None, text


def request(endpoint: Endpoint, method: str, path: str, payload: dict | None = None) -> Reply:
    """One request to ``base_url + path``; HTTP error statuses come back as a Reply, transport failures raise."""
    url = endpoint.base_url + path
    headers = {"Accept": "application/json", "User-Agent": "comfyui-mova"}
    body = None
    if payload is not None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if endpoint.api_key:
        if urllib.parse.urlsplit(url).scheme != "https" and not is_local(url):
            raise AuthError(f"refusing to send the API key from {endpoint.key_env} over plain http to {url}: use "
                            "the server's https:// address (or clear api_key_env if it needs no key)")
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with _opener(url).open(req, timeout=endpoint.timeout) as response:
            data, text = _decode(response.read(MAX_REPLY_BYTES))
            return Reply(response.status, data, text)
    except urllib.error.HTTPError as err:
        if 300 <= err.code < 400:
            target = err.headers.get("Location", "?") if err.headers else "?"
            raise ServerUnreachable(
                f"{url} redirects (HTTP {err.code}) to {target}: set base_url to the address the server "
                "answers on (redirects are not followed, so the key cannot go elsewhere)") from None
        raw = err.read(MAX_REPLY_BYTES) if err.fp else b""
        data, text = _decode(raw)
        return Reply(err.code, data, text)
    except (TimeoutError, socket.timeout) as err:
        raise _timeout(endpoint, url) from err
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _timeout(endpoint, url) from None
        if isinstance(reason, ssl.SSLError):
            raise ServerUnreachable(f"TLS failed talking to {url}: {reason}. Check that base_url's scheme "
                                    "(http/https) matches the server") from None
        if isinstance(reason, socket.gaierror):
            raise ServerUnreachable(f"cannot reach the language model server at {endpoint.base_url}: host "
                                    f"'{urllib.parse.urlsplit(url).hostname}' not found. {START_SERVERS}") from None
        raise ServerUnreachable(f"cannot reach the language model server at {endpoint.base_url} ({reason}). "
                                f"{START_SERVERS}") from None
    except (ConnectionError, OSError) as err:  # reset or closed mid-reply
        raise ServerUnreachable(f"the connection to {endpoint.base_url} broke ({err}). {START_SERVERS}") from None


def _timeout(endpoint: Endpoint, url: str) -> ServerTimeout:
    return ServerTimeout(
        f"no reply from {url} within {endpoint.timeout:g} s: the model may still be loading (the first request "
        "loads it) or be too slow for this machine. Raise timeout, use a smaller model, or check the server's log")


def server_message(reply: Reply, key: str | None) -> str:
    """The server's own error text (OpenAI's {"error": {"message"}}, Ollama's {"error": "..."}, or the body)."""
    data = reply.data
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or json.dumps(error)
        if error:
            return redact(error, key)
    return redact(reply.text or "(empty body)", key)


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
    return sorted(str(n) for n in names if n)


NO_VISION = re.compile(
    r"(image|vision|multimodal|multi-modal|mmproj|image_url|projector).{0,80}"
    r"(not (be )?supported|unsupported|does not support|doesn't support|not support|missing data|only supported|"
    r"not enabled|not a multimodal|cannot|can't|is not allowed|not available)"
    r"|(not (be )?supported|unsupported|does not support|doesn't support|missing data|cannot|can't).{0,80}"
    r"(image|vision|multimodal)"
    r"|at most 0 image|not a multimodal model|vision (add-on|adapter) is not loaded",
    re.IGNORECASE)
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
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):  # a list of parts
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if not isinstance(content, str):
        raise BadReply(f"the reply's message content is a {type(content).__name__}, not text")
    return content


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
            if endpoint.api_key:
                fix = (f"the key in environment variable {endpoint.key_env} was refused: set {endpoint.key_env} to "
                       "a valid key for this server and restart ComfyUI")
            else:
                fix = ("the server needs an API key: put it in an environment variable (e.g. OPENAI_API_KEY) "
                       "before starting ComfyUI and write that variable's name in api_key_env")
            raise AuthError(f"HTTP {reply.status} from {url} ({detail}): {fix}")
        if image_sent and reply.status in (400, 415, 422, 500, 501) and NO_VISION.search(reply.text):
            raise NoVision(f"model {payload.get('model')!r} cannot read images ({detail}): pick a vision model "
                           "(e.g. qwen2.5vl:7b or gemma3:12b in Ollama; for llama-server load the model's mmproj), "
                           "disconnect the image, or turn on retry_without_image")
        if reply.status in (400, 404, 422) and MODEL_MISSING.search(reply.text):
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
        raise BadReply(f"{url} answered with something that is not JSON ({redact(reply.text, key) or 'empty'}): "
                       "is base_url an OpenAI-compatible server?")
    if data.get("error"):
        raise EnhanceError(f"{url} reported an error: {server_message(reply, key)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadReply(f"{url} answered without any choices ({redact(reply.text, key)}): is base_url an "
                       "OpenAI-compatible server?")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadReply(f"{url} answered without a message in its first choice ({redact(reply.text, key)})")
    return ChatResult(_content(message), choice.get("finish_reason"))
