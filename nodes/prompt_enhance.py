"""An idea (and the first frame) -> a caption in MOVA's style, through an OpenAI-compatible chat server.

Plain Python (no ComfyUI): checks the inputs before any request, builds the request from our instructions,
sends it, handles a model that cannot read images, then cleans and checks the reply.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .llm_client import EnhanceError, Endpoint, NoVision, api_key_from_env, chat_completion, normalise_base_url
from .prompt_instructions import system_instructions, user_message
from .prompt_reply import check_caption, clean_reply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnhanceSettings:
    """The node's settings (everything but the idea and the image); ``api_key_env`` names the key's variable."""

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


def endpoint_for(settings: EnhanceSettings, environ=None) -> Endpoint:
    """The checked endpoint (URL, key from the environment, timeout); raises EnhanceError before any request."""
    if settings.timeout <= 0:
        raise EnhanceError(f"timeout must be above 0 seconds, got {settings.timeout}")
    url = normalise_base_url(settings.base_url)
    key = api_key_from_env(settings.api_key_env, environ)
    return Endpoint(url, key, (settings.api_key_env or "").strip(), float(settings.timeout))


def enhance_prompt(idea: str, image_url: str | None, settings: EnhanceSettings, environ=None) -> Enhanced:
    """Ask the model for a caption of ``idea`` (true to the first frame at ``image_url``, a PNG data URL)."""
    if not (idea or "").strip():
        raise EnhanceError("idea is empty: write in a few words what should happen in the clip (or connect MOVA "
                           "Prompt Builder's caption)")
    if not settings.model.strip():
        raise EnhanceError("model is empty: write the model's name as the server knows it (Ollama: see "
                           "'ollama list')")
    endpoint = endpoint_for(settings, environ)
    warnings = []
    start = time.monotonic()
    log.info("MOVA Prompt Enhance: asking %s at %s (%s)", settings.model, endpoint.base_url,
             "with the first frame" if image_url else "text only")
    try:
        caption, extra = _ask(endpoint, idea, image_url, settings)
    except NoVision as err:
        if image_url is None or not settings.retry_without_image:
            raise
        note = (f"model {settings.model!r} cannot read images, so the caption was written from the idea alone "
                "(retry_without_image is on): check it against the first frame")
        log.warning("MOVA Prompt Enhance: %s (%s)", note, err)
        warnings.append(note)
        caption, extra = _ask(endpoint, idea, None, settings)
    warnings.extend(extra)
    for warning in extra:
        log.warning("MOVA Prompt Enhance: %s", warning)
    log.info("MOVA Prompt Enhance: %d-character caption in %.1f s", len(caption), time.monotonic() - start)
    return Enhanced(caption, tuple(warnings))


def _ask(endpoint: Endpoint, idea: str, image_url: str | None, settings: EnhanceSettings) -> tuple[str, list[str]]:
    payload = chat_payload(idea, image_url, settings)
    result = chat_completion(endpoint, payload, image_sent=image_url is not None)
    caption = clean_reply(result.content)
    warnings = check_caption(caption, result.finish_reason, image_sent=image_url is not None,
                             max_tokens=settings.max_tokens)
    return caption, warnings
