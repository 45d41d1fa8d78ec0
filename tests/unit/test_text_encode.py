"""MOVA Text Encode's logic: the official prompt cleaning, literal brackets, the UMT5-XXL check, the 512-token
cut, and the state checks (the node itself runs against a real ComfyUI CLIP in the integration test)."""

import sys

import pytest
import torch

from comfyui_mova.nodes.conditioning import text
from comfyui_mova.nodes.conditioning.condition import text_states
from comfyui_mova.nodes.conditioning.text import (MAX_TOKENS, check_states, check_text_encoder, clean_prompt, cut_message,
                                     cut_tokens, dropped_words, literal_text, syntax_notes)


def umt5_tokens(ids, min_length=MAX_TOKENS):
    """Tokens shaped as ComfyUI's UMT5-XXL tokenizer returns them: the prompt, the end token 1, pads 0 to 512."""
    batch = [(t, 1.0) for t in ids] + [(1, 1.0)]
    batch += [(0, 1.0)] * max(0, min_length - len(batch))
    return {"umt5xxl": [batch]}


@pytest.mark.parametrize("raw,clean", [
    ("  A man  says,\n\n\"hello\"\t(softly).  ", "A man says, \"hello\" (softly)."),
    ("fish &amp;amp; chips &lt;b&gt;", "fish & chips <b>"),          # unescaped twice, as the official code
    ("caf\u00c3\u00a9 au lait", "caf\u00e9 au lait"),               # ftfy repairs mojibake
    ("\u201cquoted\u201d", "\"quoted\""),                            # ftfy straightens curly quotes
    ("", ""),
])
def test_official_cleaning(raw, clean):
    assert clean_prompt(raw) == clean


def test_cleaning_without_ftfy_still_unescapes_and_collapses(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy now raises ImportError
    monkeypatch.setattr(text, "_notice_shown", False)
    assert clean_prompt("a &amp;amp;  b\n") == "a & b"
    assert "ftfy is not installed" in caplog.text and "pip install ftfy" in caplog.text


def test_literal_text_keeps_backslashes_before_brackets():
    assert literal_text("laughs (softly)") == "laughs (softly)"
    # ComfyUI's tokenizer turns "\(" into "(": a backslash that belongs to the prompt is doubled
    assert literal_text("a \\(b\\)") == "a \\\\(b\\\\)"


def test_embedding_syntax_is_named():
    assert syntax_notes("the embedding: layer") and syntax_notes("embedding:foo")
    assert not syntax_notes("an embedding of words") and not syntax_notes("(softly)")


@pytest.mark.parametrize("keys,named", [(["l"], "CLIP-L"), (["g", "l"], "CLIP-G, CLIP-L"),
                                        (["t5xxl"], r"T5-XXL \(SD3 / Flux\)"), (["qwen3_4b"], "qwen3_4b")])
def test_other_text_encoders_are_refused(keys, named):
    with pytest.raises(ValueError, match=f"clip: this CLIP is {named}, MOVA needs UMT5-XXL.*type wan"):
        check_text_encoder({k: [[(1, 1.0)]] for k in keys})
    check_text_encoder(umt5_tokens([5, 6]))


def test_short_prompt_is_untouched():
    tokens = umt5_tokens(range(2, 40))
    out, length, dropped = cut_tokens(tokens)
    assert out is tokens and length == 39 and dropped == []


@pytest.mark.parametrize("real", [MAX_TOKENS - 1, MAX_TOKENS, 700])
def test_long_prompt_is_cut_like_the_official_tokenizer(real):
    tokens = umt5_tokens(range(2, 2 + real))
    out, length, dropped = cut_tokens(tokens)
    (batch,) = out["umt5xxl"]
    assert length == real + 1 and len(batch) == MAX_TOKENS
    # the official call (truncation to 512, end token added) keeps the first 511 tokens and the end token
    assert [t for t, _ in batch] == list(range(2, 2 + min(real, MAX_TOKENS - 1))) + [1]
    assert [t for t, _ in dropped] == list(range(2 + MAX_TOKENS - 1, 2 + real))


def test_cut_message_names_the_lost_text():
    pieces = ["\u2581The", "\u2581audio", "\u2581shows", "\u2581rain"]
    assert dropped_words(pieces) == "The audio shows rain"
    message = cut_message(700, dropped_words(pieces))
    assert "700 tokens long" in message and "first 512" in message and '"The audio shows rain"' in message


def test_states_are_checked():
    good = [[torch.zeros(1, MAX_TOKENS, 4096), {}]]
    check_states(good)
    with pytest.raises(ValueError, match="768 features per token, MOVA needs 4096.*type wan"):
        check_states([[torch.zeros(1, 77, 768), {}]])
    with pytest.raises(ValueError, match="600 token states, more than the 512"):
        check_states([[torch.zeros(1, 600, 4096), {}]])
    bad = torch.zeros(1, 8, 4096)
    bad[0, 3, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite states.*fp16"):
        check_states([[bad, {}]])
    with pytest.raises(ValueError, match="no conditioning"):
        check_states([])


def test_conditioning_cuts_long_states_with_a_warning():
    states = torch.randn(1, 700, 4096)
    warnings = []
    out = text_states([[states, {}]], "positive", warnings)
    assert torch.equal(out, states[:, :MAX_TOKENS])
    (warning,) = warnings
    assert "positive: 700 text states" in warning and "cut to the first 512" in warning and "MOVA Text Encode" in warning
    out = text_states([[states[:, :MAX_TOKENS], {}]], "positive", warnings)
    assert out.shape[1] == MAX_TOKENS and len(warnings) == 1


def test_conditioning_refuses_non_finite_states():
    states = torch.zeros(1, 16, 4096)
    states[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="negative: the text states hold NaN or infinite"):
        text_states([[states, {}]], "negative")
