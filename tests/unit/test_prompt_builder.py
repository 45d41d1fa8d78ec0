"""MOVA Prompt Builder: fields -> a caption in MOVA's style."""

import pytest

from comfyui_mova.nodes.prompts.spec import PROMPT_BUILDER, SPEECH_LINES
from comfyui_mova.nodes.prompts.builder import build_caption, speech_lines
from comfyui_mova.nodes.prompts.reply import check_caption

EMPTY_ROWS = [("", "", "")] * SPEECH_LINES


def test_full_caption():
    lines = speech_lines([("the woman", "English", "Of course it pours today."),
                          ("the barista", "French", "« Bonne soirée ! »"), ("", "", "")])
    caption = build_caption(
        "A woman in a green raincoat stands under a shop awning on a rainy street at dusk",
        "She sips her coffee and  looks up at the rain.",
        "a slow push-in from a medium shot to a close-up", lines,
        "a soft jazz piano", "rain drumming on the awning and a tram bell", "the low hum of evening traffic")
    assert caption == (
        "A woman in a green raincoat stands under a shop awning on a rainy street at dusk.\n\n"
        "She sips her coffee and looks up at the rain. The shot is a slow push-in from a medium shot to a close-up. "
        'The woman says, "Of course it pours today." Then the barista replies, "Bonne soirée !"\n\n'
        "The audio shows the woman speaking English, then the barista speaking French. The music is a soft jazz "
        "piano. The sound effects are rain drumming on the awning and a tram bell. The ambience is the low hum of "
        "evening traffic.")
    assert check_caption(caption, "stop", image_sent=False, max_tokens=1) == []


def test_speech_is_verbatim_in_its_language():
    words = "建筑的主体结构已经完成，但许多房间的管道和电气系统仍在安装中。"
    caption = build_caption("A woman in a hard hat stands before a glass building", "",
                            speech=speech_lines([("the woman", "Mandarin", f'"{words}"')] + EMPTY_ROWS[1:]))
    assert f'The woman says, "{words}"' in caption
    assert caption.endswith("The audio shows the woman speaking Mandarin.")


def test_words_without_an_ending_mark_stay_as_given():
    caption = build_caption("A man at a desk", "He looks up", speech=speech_lines(
        [("the man", "", "hello there"), ("the man", "", "anyone home?"), ("", "", "")]))
    assert 'The man says, "hello there". Then the man adds, "anyone home?"' in caption
    assert caption.endswith("The audio shows the man speaking.")


def test_no_speech_says_so_when_there_is_sound():
    caption = build_caption("Lightning over a city at night", "The clouds roll; lightning strikes twice",
                            effects="two cracks of thunder")
    assert caption.endswith("The audio shows no speech. The sound effects are two cracks of thunder.")
    assert "The audio" not in build_caption("A quiet room")


def test_half_filled_lines_and_empty_fields_are_errors():
    with pytest.raises(ValueError, match="speech line 2 has words but no speaker.*speaker_2"):
        speech_lines([("", "", ""), ("", "English", "Hi."), ("", "", "")])
    with pytest.raises(ValueError, match="speech line 1 names 'the woman' but has no words.*words_1"):
        speech_lines([("the woman", "", ""), ("", "", ""), ("", "", "")])
    with pytest.raises(ValueError, match="every field is empty"):
        build_caption(" ", "", "", [], "", "", "")


def test_builder_spec_has_the_fields():
    names = [w.name for w in PROMPT_BUILDER.widgets]
    assert names[:3] == ["scene", "action", "camera"] and names[-3:] == ["music", "effects", "ambience"]
    assert names[3:-3] == [f"{f}_{i}" for i in range(1, SPEECH_LINES + 1) for f in ("speaker", "language",
                                                                                          "words")]
