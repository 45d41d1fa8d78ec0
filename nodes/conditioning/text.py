"""MOVA Text Encode's logic (plain Python): the official prompt cleaning, literal text for ComfyUI's
tokenizer, the UMT5-XXL check, and the 512-token cut the official pipeline makes.

ComfyUI's tokenizers return ``{encoder name: [batch, ...]}`` with each batch a list of ``(token, weight)``
pairs; for UMT5-XXL (``umt5xxl``) one batch: the prompt's tokens, the end token, then padding up to 512.
"""

from __future__ import annotations

import html
import logging
import re

import torch

from ...mova_model.configs import TEXT_DIM

log = logging.getLogger(__name__)

MAX_TOKENS = 512          # the official pipeline tokenizes to at most 512 tokens (end token included)
ENCODER_KEY = "umt5xxl"   # ComfyUI's name for UMT5-XXL (Load CLIP, type wan)
END_TOKEN, PAD_TOKEN = 1, 0
ENCODER_NAMES = {"l": "CLIP-L", "g": "CLIP-G", "t5xxl": "T5-XXL (SD3 / Flux)", "t5base": "T5-base",
                 "umt5xxl": "UMT5-XXL", "pile_t5xl": "Pile-T5-XL", "llama": "Llama", "qwen25_7b": "Qwen2.5-VL"}
FIX_CLIP = ("load umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16.safetensors) with Load CLIP, "
            "type wan")
_notice_shown = False


def _fix_text(text: str) -> str:
    global _notice_shown
    try:
        import ftfy
    except ImportError:
        if not _notice_shown:
            log.warning("MOVA Text Encode: ftfy is not installed, so prompts are cleaned without its Unicode "
                        "repairs (HTML entities and whitespace are still cleaned): pip install ftfy")
            _notice_shown = True
        return text
    return ftfy.fix_text(text)


def clean_prompt(text: str) -> str:
    """The official cleaning: ftfy's text fix, HTML unescaped twice, whitespace runs collapsed to one space."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def literal_text(text: str) -> str:
    """``text`` for ``clip.tokenize(..., disable_weights=True)``: ComfyUI turns ``\\(`` / ``\\)`` into plain
    brackets even with weights off, so a backslash before a bracket is doubled to survive."""
    return text.replace("\\(", "\\\\(").replace("\\)", "\\\\)")


def syntax_notes(text: str) -> list[str]:
    """Warnings for text ComfyUI's tokenizer does not take literally."""
    if re.search(r"(^|\s)embedding:", text):
        return ["the prompt holds 'embedding:', which ComfyUI's tokenizer reads as a textual-inversion "
                "embedding name: reword it if it is meant as text"]
    return []


def check_text_encoder(tokens) -> None:
    """Refuse tokens of any text encoder but UMT5-XXL (before anything is encoded)."""
    keys = list(tokens) if isinstance(tokens, dict) else []
    if keys != [ENCODER_KEY]:
        names = ", ".join(ENCODER_NAMES.get(k, k) for k in keys) or type(tokens).__name__
        raise ValueError(f"clip: this CLIP is {names}, MOVA needs UMT5-XXL (4096 features): {FIX_CLIP}.")


def _is(token, value: int) -> bool:
    return isinstance(token, int) and token == value


def prompt_tokens(batches, end_token: int = END_TOKEN, pad_token: int = PAD_TOKEN) -> list:
    """The prompt's (token, weight, ...) entries of ComfyUI's batches: without end tokens and padding."""
    real = []
    for batch in batches:
        batch = list(batch)
        while batch and _is(batch[-1][0], pad_token):
            batch.pop()
        if batch and _is(batch[-1][0], end_token):
            batch.pop()
        real.extend(batch)
    return real


def cut_tokens(tokens: dict, limit: int = MAX_TOKENS, end_token: int = END_TOKEN,
               pad_token: int = PAD_TOKEN) -> tuple[dict, int, list]:
    """(tokens to encode, the prompt's length in tokens with its end token, the entries cut off).

    A prompt longer than ``limit`` keeps its first ``limit - 1`` tokens and the end token (what the
    official tokenizer call with truncation to 512 gives); shorter ones are returned unchanged."""
    (key, batches), = tokens.items()
    real = prompt_tokens(batches, end_token, pad_token)
    length = len(real) + 1
    if length <= limit and len(batches) == 1:
        return tokens, length, []
    kept, dropped = real[:limit - 1], real[limit - 1:]
    batch = kept + [(end_token, 1.0)]
    batch += [(pad_token, 1.0)] * (limit - len(batch))
    return {key: [batch]}, length, dropped


def dropped_words(pieces: list[str], limit: int = 60) -> str:
    """The start of the cut-off text from SentencePiece pieces ('▁' marks a space)."""
    text = "".join(pieces).replace("\u2581", " ").strip()
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def cut_message(length: int, dropped_text: str, limit: int = MAX_TOKENS) -> str:
    where = f" (it drops: \"{dropped_text}\")" if dropped_text else ""
    return (f"the prompt is {length} tokens long; MOVA reads the first {limit} as the official pipeline does, "
            f"so the rest is ignored{where}: shorten the prompt")


def check_states(conditioning, name: str = "text") -> None:
    """Check every entry of an encoded prompt: states [B,L,4096] (UMT5-XXL), at most 512 rows, finite."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise ValueError(f"{name}: the text encoder returned no conditioning: {FIX_CLIP}.")
    for entry in conditioning:
        states = entry[0] if isinstance(entry, (list, tuple)) and entry else None
        if not isinstance(states, torch.Tensor) or states.dim() != 3:
            raise ValueError(f"{name}: the text encoder returned no states [B,L,D]: {FIX_CLIP}.")
        if states.shape[-1] != TEXT_DIM:
            raise ValueError(f"{name}: the text encoder gives {states.shape[-1]} features per token, MOVA needs "
                             f"{TEXT_DIM} (UMT5-XXL): {FIX_CLIP}.")
        if states.shape[1] > MAX_TOKENS:
            raise ValueError(f"{name}: {states.shape[1]} token states, more than the {MAX_TOKENS} MOVA reads")
        if not bool(torch.isfinite(states).all()):
            raise ValueError(f"{name}: the text encoder returned NaN or infinite states (an fp16 overflow or a "
                             "damaged text encoder file): load umt5_xxl_fp16 or the fp8_e4m3fn_scaled file again.")


def encode_prompt(clip, text: str) -> tuple[list, list[str]]:
    """(CONDITIONING, warnings) of ``text`` through ComfyUI's ``clip`` as the official pipeline encodes it:
    cleaned, literal (no emphasis weights), at most 512 tokens. The text encoder is checked before encoding."""
    if clip is None:
        raise ValueError(f"clip: no text encoder is connected: {FIX_CLIP}.")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    cleaned = clean_prompt(text)
    tokens = clip.tokenize(literal_text(cleaned), disable_weights=True)
    check_text_encoder(tokens)
    tokenizers = getattr(clip, "tokenizer", None)  # ComfyUI's SD1Tokenizer keeps the encoder's one as .clip_<name>
    tokenizer = getattr(tokenizers, str(getattr(tokenizers, "clip", "")), None)
    end = getattr(tokenizer, "end_token", None)
    pad = getattr(tokenizer, "pad_token", None)
    end, pad = (END_TOKEN if end is None else end), (PAD_TOKEN if pad is None else pad)
    tokens, length, dropped = cut_tokens(tokens, MAX_TOKENS, end, pad)
    warnings = syntax_notes(cleaned)
    if dropped:
        vocab = getattr(tokenizer, "inv_vocab", None) or {}
        pieces = [vocab.get(t, "") for t, *_ in dropped[:48] if isinstance(t, int)]
        warnings.append(cut_message(length, dropped_words(pieces)))
    conditioning = clip.encode_from_tokens_scheduled(tokens)
    check_states(conditioning)
    return conditioning, warnings
