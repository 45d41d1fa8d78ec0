"""Fields -> a caption in MOVA's style (no network): the scene; the action with the camera and the speech lines
quoted verbatim; then a closing paragraph opening with "The audio shows". Plain Python, no ComfyUI."""

from __future__ import annotations

from dataclasses import dataclass

_ENDINGS = tuple('.!?…"”’\')」』»。！？')
_QUOTES = {'"': '"', "“": "”", "「": "」", "«": "»"}


@dataclass(frozen=True)
class SpeechLine:
    speaker: str
    words: str
    language: str = ""


def _sentence(text: str) -> str:
    """``text`` with collapsed spaces inside lines and a closing full stop if it has no ending mark."""
    text = " ".join(text.split())
    return text if not text or text.endswith(_ENDINGS) else text + "."


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _words(text: str) -> str:
    """The spoken words as given, without one pair of quotes the user may have typed around them."""
    text = text.strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def speech_lines(rows: list[tuple[str, str, str]]) -> list[SpeechLine]:
    """(speaker, language, words) rows -> the filled lines; a half-filled row is an error naming the line."""
    lines = []
    for index, (speaker, language, words) in enumerate(rows, start=1):
        speaker, language, words = speaker.strip(), language.strip(), _words(words)
        if not words and not speaker and not language:
            continue
        if not words:
            raise ValueError(f"speech line {index} names {speaker or language!r} but has no words: write the exact "
                             f"words in words_{index}, or clear speaker_{index} and language_{index}")
        if not speaker:
            raise ValueError(f"speech line {index} has words but no speaker: say who speaks in speaker_{index} "
                             "(e.g. 'the woman in the green raincoat')")
        lines.append(SpeechLine(speaker, words, language))
    return lines


def _speech_sentences(lines: list[SpeechLine]) -> list[str]:
    sentences = []
    for i, line in enumerate(lines):
        if i == 0:
            lead = _capitalised(line.speaker) + " says"
        elif line.speaker == lines[i - 1].speaker:
            lead = "Then " + line.speaker + " adds"
        else:
            lead = "Then " + line.speaker + " replies" if len(lines) == 2 else "Then " + line.speaker + " says"
        closing = "" if line.words.endswith(_ENDINGS) else "."  # the words stay as given; the sentence ends
        sentences.append(f'{lead}, "{line.words}"{closing}')
    return sentences


def _voices(lines: list[SpeechLine]) -> str:
    seen, parts = set(), []
    for line in lines:
        key = (line.speaker, line.language)
        if key in seen:
            continue
        seen.add(key)
        parts.append(f"{line.speaker} speaking {line.language}" if line.language else f"{line.speaker} speaking")
    return ", then ".join(parts)


def build_caption(scene: str = "", action: str = "", camera: str = "", speech: list[SpeechLine] = (),
                  music: str = "", effects: str = "", ambience: str = "") -> str:
    """A caption with one paragraph per part that has content: scene; action, camera and speech; audio."""
    speech = list(speech)
    if not any(s.strip() for s in (scene, action, camera, music, effects, ambience)) and not speech:
        raise ValueError("every field is empty: describe at least the scene (who and what is in the shot)")
    paragraphs = [_sentence(scene)]
    middle = [_sentence(action)]
    if camera.strip():
        middle.append(_sentence("The shot is " + camera.strip()))
    middle += _speech_sentences(speech)
    paragraphs.append(" ".join(part for part in middle if part))
    audio = []
    if speech:
        audio.append(f"The audio shows {_voices(speech)}.")
    elif music.strip() or effects.strip() or ambience.strip():
        audio.append("The audio shows no speech.")
    for text, lead in ((music, "The music is "), (effects, "The sound effects are "),
                       (ambience, "The ambience is ")):
        if text.strip():
            audio.append(_sentence(lead + text.strip()))
    paragraphs.append(" ".join(audio))
    return "\n\n".join(p for p in paragraphs if p)
