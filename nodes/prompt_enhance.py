"""An idea (and the first frame) -> a caption in MOVA's style, through an OpenAI-compatible chat server.

Plain Python (no ComfyUI): checks the inputs and the user's host and key settings before any request, builds the
request from our instructions, sends it (``timeout`` bounds the whole exchange; ``should_stop`` cancels it),
handles a model that cannot read images, then cleans and checks the reply. No text it returns, raises or logs
holds the API key.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass, replace
from typing import Callable

from .llm_access import blank_key
from .llm_client import BadReply, EnhanceError, Endpoint, NoVision, chat_completion, endpoint
from .prompt_instructions import system_instructions, user_message
from .prompt_reply import check_caption, clean_reply

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 16  # a token is rarely longer: a reply longer than max_tokens * 16 characters is no model's reply
MIN_REPLY_CHARS = 65536


@dataclass(frozen=True)
class EnhanceSettings:
    """The node's settings (everything but the idea and the image). ``api_key_env`` is the legacy widget: empty,
    or the name of the variable the user's settings already give the host (it is never read by name)."""

    base_url: str
    model: str
    api_key_env: str = ""
    temperature: float = 0.7
    seed: int = 0
    max_tokens: int = 2048
    timeout: float = 300.0
    retry_without_image: bool = False


@dataclass(frozen=True)
class Enhanced:
    """The caption and anything the user should know about it (shown on the node)."""

    caption: str
    warnings: tuple[str, ...] = ()


def chat_payload(idea: str, image_url: str | None, settings: EnhanceSettings) -> dict:
    """The /chat/completions request body: our instructions, the idea (with the PNG data URL beside it)."""
    text = user_message(idea, image_url is not None)
    if image_url is None:
        content = text
    else:
        content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": image_url}}]
    return {
        "model": settings.model.strip(),
        "messages": [
            {"role": "system", "content": system_instructions(image_url is not None)},
            {"role": "user", "content": content},
        ],
        "temperature": float(settings.temperature),
        "seed": int(settings.seed),
        "max_tokens": int(settings.max_tokens),
        "stream": False,
    }


def _check_numbers(settings: EnhanceSettings) -> None:
    try:
        timeout, temperature = float(settings.timeout), float(settings.temperature)
    except (TypeError, ValueError):
        raise EnhanceError(f"timeout and temperature must be numbers, got {settings.timeout!r} and "
                           f"{settings.temperature!r}") from None
    if not math.isfinite(timeout) or timeout <= 0:
        raise EnhanceError(f"timeout must be a number of seconds above 0, got {settings.timeout}")
    if not math.isfinite(temperature) or temperature < 0:
        raise EnhanceError(f"temperature must be a number from 0 to 2, got {settings.temperature}")
    for name in ("seed", "max_tokens"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise EnhanceError(f"{name} must be a whole number, got {value!r}")
    if int(settings.max_tokens) < 1:
        raise EnhanceError(f"max_tokens must be at least 1, got {settings.max_tokens}")


def endpoint_for(settings: EnhanceSettings, environ=None,
                 should_stop: Callable[[], bool] | None = None) -> Endpoint:
    """The checked endpoint (URL, host approval and key from the user's settings, timeout); raises EnhanceError
    before any request."""
    _check_numbers(settings)
    return endpoint(settings.base_url, settings.api_key_env, environ, float(settings.timeout), should_stop)


def enhance_prompt(idea: str, image_url: str | None, settings: EnhanceSettings, environ=None,
                   should_stop: Callable[[], bool] | None = None) -> Enhanced:
    """Ask the model for a caption of ``idea`` (true to the first frame at ``image_url``, a PNG data URL), within
    ``settings.timeout`` seconds in all; Cancelled when ``should_stop()`` turns true meanwhile."""
    if not isinstance(idea, str) or not idea.strip():
        raise EnhanceError("idea is empty: write in a few words what should happen in the clip (or connect MOVA "
                           "Prompt Builder's caption)")
    if not isinstance(settings.model, str) or not settings.model.strip():
        raise EnhanceError("model is empty: write the model's name as the server knows it (Ollama: see "
                           "'ollama list')")
    point = endpoint_for(settings, environ, should_stop)
    key = point.api_key
    point = replace(point, deadline=time.monotonic() + point.timeout)
    try:
        return _enhance(point, idea, image_url, settings)
    except EnhanceError as err:  # last line of defence: no message carries the key, whatever text it repeats
        message = str(err)
        cleaned = blank_key(message, key)
        if cleaned == message:
            raise
        raise type(err)(cleaned) from None


def _enhance(point: Endpoint, idea: str, image_url: str | None, settings: EnhanceSettings) -> Enhanced:
    key = point.api_key
    warnings = []
    start = time.monotonic()
    log.info("MOVA Prompt Enhance: asking %s at %s (%s)", blank_key(settings.model.strip(), key),
             blank_key(point.base_url, key), "with the first frame" if image_url else "text only")
    try:
        caption, extra = _ask(point, idea, image_url, settings)
    except NoVision as err:
        if image_url is None or not settings.retry_without_image:
            raise
        note = (f"model {settings.model!r} cannot read images, so the caption was written from the idea alone "
                "(retry_without_image is on): check it against the first frame")
        log.warning("MOVA Prompt Enhance: %s (%s)", blank_key(note, key), blank_key(str(err), key))
        warnings.append(note)
        caption, extra = _ask(point, idea, None, settings)
    fresh = list(extra)
    blanked = blank_key(caption, key)
    if blanked != caption:
        caption = blanked
        fresh.append(f"the reply from {point.access.target.netloc} contained (part of) your API key, blanked out "
                     "here as ***: a server should never repeat the key; check that base_url is the service you meant")
    fresh = [blank_key(w, key) for w in fresh]
    for warning in fresh:
        log.warning("MOVA Prompt Enhance: %s", warning)
    warnings.extend(fresh)
    log.info("MOVA Prompt Enhance: %d-character caption in %.1f s", len(caption), time.monotonic() - start)
    return Enhanced(caption, tuple(warnings))


def _ask(point: Endpoint, idea: str, image_url: str | None, settings: EnhanceSettings) -> tuple[str, list[str]]:
    payload = chat_payload(idea, image_url, settings)
    result = chat_completion(point, payload, image_sent=image_url is not None)
    limit = max(MIN_REPLY_CHARS, int(settings.max_tokens) * CHARS_PER_TOKEN)
    if len(result.content) > limit:
        raise BadReply(f"the reply is {len(result.content)} characters long, more than {settings.max_tokens} tokens "
                       "(max_tokens) can hold: the server ignored max_tokens or is not a chat model server; check "
                       "base_url and model")
    caption = clean_reply(result.content)
    warnings = check_caption(caption, result.finish_reason, image_sent=image_url is not None,
                             max_tokens=settings.max_tokens)
    return caption, warnings
