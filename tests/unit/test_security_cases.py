"""The cheap cases of tests/support/tools/issue20_cases.py (the script behind docs/security-cases.md), run through
the script's own functions so that it cannot rot: each gives the outcome it records, with no fake key in its
message or log and no raw error. The checks the script applies to every case are tried on cases made to fail."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support" / "tools"))

from comfyui_mova.nodes.native.checks import check_native_sigmas  # noqa: E402
from issue20_cases import KEY, Case, Lab, Result, all_cases, attempt, find_case, report, run_case  # noqa: E402

CHEAP = ["env-aws", "pasted-hex32", "key-typographic-quotes", "echo-401", "caption-echo", "url-space", "long-header",
         "part-null", "run-japanese", "run-up", "lora-up", "clips-absolute", "audio-int16", "sigmas-karras",
         "extend-crossfade-nan", "widgets-dict", "widgets-one-too-many", "link-short"]


@pytest.fixture()
def lab(tmp_path):
    return Lab(tmp_path)


@pytest.mark.parametrize("key", CHEAP)
def test_a_cheap_case_gives_the_outcome_it_records(lab, key):
    case = find_case(key)
    assert case.cheap
    result = run_case(case, lab)
    assert result.problems == [] and result.outcome == case.expect, (result.outcome, result.message, result.problems)
    assert result.message.strip()


def test_a_deadline_case_is_timed(lab):
    case = find_case("silent")
    result = run_case(case, lab)
    assert case.timed and result.outcome == "stopped" and result.problems == []
    assert 1.0 <= result.seconds < 2.0


def test_every_class_has_cases_and_every_expectation_is_an_outcome():
    cases = all_cases()
    assert {c.cls for c in cases} == set(range(1, 9))
    assert {c.expect for c in cases} <= {"refused", "stopped", "handled"}


def _made_up(run) -> Case:
    return Case(1, "made-up", f"an input with {KEY}", "refused", run)


def test_the_checks_catch_a_leak_a_raw_error_and_a_wrong_outcome(lab):
    leak = run_case(_made_up(lambda lab: Result("refused", f"bad key {KEY[3:12]}")), lab)
    assert leak.problems == ["a fake key (8+ characters of it) is in the message"]
    raw = run_case(_made_up(lambda lab: {}["x"]), lab)
    assert raw.outcome == "raw error" and any("the case itself failed" in p for p in raw.problems)
    below, _ = attempt(lambda: int("x"))  # Python's own ValueError, not a message of the pack
    assert below.outcome == "raw error" and below.problems == ["raw ValueError from below the pack"]
    own, _ = attempt(lambda: check_native_sigmas(torch.tensor([14.6, 0.0])))  # the pack's own message
    assert own.outcome == "refused" and own.message.startswith("MOVA Guider: ") and own.problems == []
    wrong = run_case(_made_up(lambda lab: Result("handled", "went on")), lab)
    assert wrong.problems == ["outcome handled, expected refused"]


def test_the_report_never_shows_a_fake_key():
    case = _made_up(lambda lab: None)
    text = report([(case, Result("refused", f"echoed {KEY}"))], "cmd", "machine")
    assert KEY not in text and "&lt;key&gt;" in text and "**FAIL**" not in text
