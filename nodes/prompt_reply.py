"""A language model's reply -> a caption MOVA can take: cleaned (reasoning, fences, labels, quotes, markdown)
and checked (empty, cut off, a model that could not see the image). Plain Python, no ComfyUI."""

from __future__ import annotations

import bisect
import re

from .llm_client import BadReply, NoVision

AUDIO_OPENING = "The audio shows"
# UMT5 reads at most 512 tokens; English prose averages about 1.3 tokens a word.
WORDS_THAT_FIT = 380

_REASONING_TAGS = ("think", "thinking", "reasoning", "reflection", "analysis")
_TAG = re.compile(r"<(/?)(%s)>" % "|".join(_REASONING_TAGS), re.IGNORECASE)
_OPEN_TAG = re.compile(r"<(%s)>" % "|".join(_REASONING_TAGS), re.IGNORECASE)
_CLOSE_TAG = re.compile(r"</(%s)>" % "|".join(_REASONING_TAGS), re.IGNORECASE)
_HARMONY_FINAL = "<|channel|>final<|message|>"  # gpt-oss style channels when a server passes them through
_FENCE = re.compile(r"```[^\n`]*\n(.*?)\n?```", re.DOTALL)
_LEAD_IN = re.compile(r"^(sure|certainly|okay|ok|of course|here(?:'s| is| are)|below is)\b[^\n]*:\s*\n",
                      re.IGNORECASE)
_LABEL = re.compile(r"^(?:\*\*|__)?(?:enhanced |final |rewritten |video )?(?:caption|prompt)(?:\*\*|__)?\s*:"
                    r"(?:\*\*|__)?[ \t]*\n?", re.IGNORECASE)
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t][^\n]*\n?", re.MULTILINE)  # a heading line is a label: dropped
_BULLET = re.compile(r"^[ \t]*(?:[-*•]|\d+[.)])[ \t]+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1", re.DOTALL)
_QUOTE_PAIRS = {'"': '"', "“": "”", "'": "'", "「": "」", "«": "»"}
_ENDINGS = tuple('.!?…"”’\')」』»。！？')
_CANNOT_SEE = re.compile(
    r"\bI (?:can ?not|can't|am unable to|'m unable to|am not able to|don't have the ability to|do not have the "
    r"ability to) (?:see|view|access|process|open|look at|analy[sz]e)\b[^.\n]{0,40}\b(?:image|picture|photo|frame)s?"
    r"|\bno (?:image|picture|photo|frame) (?:was|is|has been|were) (?:provided|attached|included|shared|uploaded)"
    r"|\b(?:don't|do not|can't|cannot) see (?:an|any|the) (?:image|picture|photo|attachment)",
    re.IGNORECASE)


def _drop_closed_blocks(text: str) -> str:
    """``text`` without <tag>…</tag> blocks (the first closing tag of the same name ends a block), in one pass
    over the tags: a hostile reply of many unclosed tags costs linear time, not quadratic as a regex would."""
    if "</" not in text:  # nothing can close: nothing to drop
        return text
    tags = list(_TAG.finditer(text))
    closes: dict[str, list[int]] = {}
    for index, tag in enumerate(tags):
        if tag.group(1):
            closes.setdefault(tag.group(2).lower(), []).append(index)
    kept, position, index = [], 0, 0
    while index < len(tags):
        tag = tags[index]
        if tag.group(1) or tag.start() < position:
            index += 1
            continue
        later = closes.get(tag.group(2).lower(), [])
        at = bisect.bisect_right(later, index)
        if at == len(later):  # never closed: the tag stays
            index += 1
            continue
        close = later[at]
        kept.append(text[position:tag.start()])
        position = tags[close].end()
        index = close + 1
    kept.append(text[position:])
    return "".join(kept)


def strip_reasoning(text: str) -> str:
    """``text`` without reasoning blocks (<think>…</think> and kin). Raises BadReply when only an unclosed
    reasoning block is left (the model ran out of tokens while thinking)."""
    if _HARMONY_FINAL in text:
        text = text.rsplit(_HARMONY_FINAL, 1)[1]
        text = text.split("<|end|>", 1)[0].split("<|return|>", 1)[0]
    text = _drop_closed_blocks(text)
    closing = list(_CLOSE_TAG.finditer(text))
    if closing:  # the opening tag was in the chat template, not the reply: drop everything up to the close
        text = text[closing[-1].end():]
    opening = _OPEN_TAG.search(text)
    if opening:
        before = text[: opening.start()].strip()
        if not before:
            raise BadReply("the reply is only the model's reasoning, which never finished: raise max_tokens "
                           "(reasoning models think before they write) or turn the model's thinking off")
        text = before
    return text


def _strip_outer_quotes(text: str) -> str:
    if len(text) < 2 or text[0] not in _QUOTE_PAIRS or text[-1] != _QUOTE_PAIRS[text[0]]:
        return text
    inner = text[1:-1]
    opening, closing = text[0], _QUOTE_PAIRS[text[0]]
    if opening == closing:
        balanced = inner.count(opening) % 2 == 0
    else:
        balanced = inner.count(opening) == inner.count(closing)
    return inner.strip() if balanced else text


def clean_reply(text: str) -> str:
    """The caption inside a model's reply: no reasoning, code fences, lead-in line, 'Caption:' label,
    surrounding quotes, heading lines, bullets or bold marks; paragraphs separated by one blank line."""
    text = strip_reasoning(text.replace("\r\n", "\n")).strip()
    fences = _FENCE.findall(text)
    if fences:
        text = max(fences, key=len).strip()
    text = _LEAD_IN.sub("", text, count=1).strip()
    text = _LABEL.sub("", text, count=1).strip()
    text = _strip_outer_quotes(text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    text = _EMPHASIS.sub(r"\2", text)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paragraphs if p)


def _word_count(text: str) -> int:
    # CJK text has no spaces: count its characters as words (a generous estimate of its tokens)
    cjk = len(re.findall(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", text))
    return len(re.findall(r"\S+", re.sub(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]", " ", text))) + cjk


def check_caption(caption: str, finish_reason: str | None, *, image_sent: bool, max_tokens: int) -> list[str]:
    """Raise BadReply / NoVision for an unusable caption; return warnings for a usable but doubtful one."""
    if finish_reason == "length":
        raise BadReply(f"the reply was cut off at max_tokens ({max_tokens}) before the caption was complete: raise "
                       "max_tokens (reasoning models spend tokens thinking first)")
    if not caption:
        raise BadReply("the model replied with no caption (empty after removing its reasoning and formatting): "
                       "queue again with another seed, or try another model")
    if image_sent and _CANNOT_SEE.search(caption):
        raise NoVision("the model says it cannot see the image, so it is probably not a vision model: pick one that "
                       "reads images (e.g. qwen2.5vl:7b or gemma3:12b in Ollama), disconnect the image, or turn on "
                       "retry_without_image")
    if finish_reason not in ("stop", "eos", "end_turn", "stop_sequence") and not caption.endswith(_ENDINGS):
        raise BadReply(f"the reply stops mid-sentence (finish reason {finish_reason!r}): it was probably cut off; "
                       "raise max_tokens or timeout and queue again")
    warnings = []
    if AUDIO_OPENING.lower() not in caption.lower():
        warnings.append(f"the caption has no paragraph starting '{AUDIO_OPENING}': MOVA's soundtrack follows that "
                        "paragraph; queue again with another seed or add one")
    words = _word_count(caption)
    if words > WORDS_THAT_FIT:
        warnings.append(f"the caption has about {words} words; the text encoder reads at most 512 tokens (about "
                        f"{WORDS_THAT_FIT} English words), so its end may be cut: ask for a shorter caption")
    return warnings
