"""Cleaning and checking a language model's reply (plain text in, caption out)."""

import pytest

from comfyui_mova.nodes.llm_client import BadReply, NoVision
from comfyui_mova.nodes.prompt_reply import check_caption, clean_reply

CAPTION = ('A woman in a green raincoat waits under an awning.\n\nShe says, "Of course it pours today."\n\n'
           "The audio shows her voice over steady rain.")


@pytest.mark.parametrize("reply", [
    CAPTION,
    f"<think>\nShe is under an awning; plan the shot.\n</think>\n\n{CAPTION}",
    f"<thinking>plan</thinking>{CAPTION}",
    f"Okay, the user wants a caption.\nThe rain matters.\n</think>\n{CAPTION}",  # template opened the block
    f"```\n{CAPTION}\n```",
    f"```text\n{CAPTION}\n```",
    f"<think>x</think>\nHere is the caption:\n```markdown\n{CAPTION}\n```\nHope this helps!",
    f"Caption:\n{CAPTION}",
    f"**Caption:** {CAPTION}",
    f'"{CAPTION}"',
    f"“{CAPTION}”",
    f"  {CAPTION.replace(chr(10) * 2, chr(10) * 4)}  \r\n",
    f"<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>{CAPTION}<|return|>",
])
def test_reply_cleaned_to_the_caption(reply):
    assert clean_reply(reply) == CAPTION


def test_markdown_becomes_prose():
    reply = "# Scene\n**A woman** waits.\n\n- She lifts her cup.\n- She smiles.\n\nThe audio shows rain."
    assert clean_reply(reply) == "A woman waits.\n\nShe lifts her cup. She smiles.\n\nThe audio shows rain."


def test_speech_quotes_are_kept():
    text = '"Hello," she says. Then he replies, "Bye." The audio shows two voices.'
    assert clean_reply(text) == text  # starts with a quote but ends elsewhere: untouched
    wrapped = '"She says, "Hello." The audio shows her voice."'
    assert clean_reply(wrapped) == 'She says, "Hello." The audio shows her voice.'


def test_unfinished_reasoning_is_an_error():
    with pytest.raises(BadReply, match="only the model's reasoning.*max_tokens"):
        clean_reply("<think>The woman is under an awning and the")


def test_checks():
    assert check_caption(CAPTION, "stop", image_sent=True, max_tokens=100) == []
    with pytest.raises(BadReply, match="cut off at max_tokens \\(100\\)"):
        check_caption(CAPTION, "length", image_sent=False, max_tokens=100)
    with pytest.raises(BadReply, match="no caption"):
        check_caption("", "stop", image_sent=False, max_tokens=100)
    with pytest.raises(BadReply, match="mid-sentence"):
        check_caption("A woman waits under an", None, image_sent=False, max_tokens=100)
    assert check_caption("A woman waits under an", "stop", image_sent=False, max_tokens=100)  # warns: no audio
    with pytest.raises(NoVision):
        check_caption("I cannot see the image you attached. Please describe it.", "stop", image_sent=True,
                      max_tokens=100)
    # the same words about a picture inside a scene are fine without an image
    assert check_caption("I cannot see the image you attached. The audio shows rain.", "stop", image_sent=False,
                         max_tokens=100) == []


def test_long_caption_warns_about_the_token_limit():
    long = " ".join(["word"] * 400) + ". The audio shows rain."
    (warning,) = check_caption(long, "stop", image_sent=False, max_tokens=4000)
    assert "512 tokens" in warning
    chinese = "她说" * 100 + "。The audio shows rain."
    assert check_caption(chinese, "stop", image_sent=False, max_tokens=4000) == []


@pytest.mark.parametrize("hostile", ["x<think>" * 100000, "<think>x" * 100000, "<think></reasoning>" * 50000,
                                     "**a" * 200000, "```a\n" * 100000, "I cannot see " * 50000])
def test_hostile_replies_are_cleaned_in_linear_time(hostile):
    """800 kB of unclosed reasoning tags took hours with a back-referencing regex (quadratic); a reply is cleaned
    in one pass now, so the timeout bounds the whole node."""
    import time
    start = time.monotonic()
    try:
        check_caption(clean_reply(hostile), "stop", image_sent=True, max_tokens=100)
    except (BadReply, NoVision):
        pass
    assert time.monotonic() - start < 5


def test_reasoning_blocks_are_dropped_as_before():
    assert clean_reply("<think>a</think>b<THINK>c</Think>d <analysis>e") == "bd"
    assert clean_reply("<think>a<reasoning>b</think>c</reasoning>The caption.") == "The caption."
    with pytest.raises(BadReply, match="only the model's reasoning"):
        clean_reply("<think>never closed")
