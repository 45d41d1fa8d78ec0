"""Runs the bad inputs of issue 20 against the pack with real parts and writes what happens to each into
docs/security-cases.md: one table per class (1 secrets, 2 deadlines, 3 HTTP layer and URLs, 4 training,
5 atomic saves, 6 paths, 7 input domains, 8 workflow files).

    /tmp/fresh/.venv/bin/python tests/support/tools/issue20_cases.py            # every case, writes the doc
    /tmp/fresh/.venv/bin/python tests/support/tools/issue20_cases.py --class 3  # one class, prints only

The parts are real: HTTP servers on 127.0.0.1 that misbehave on purpose (tests/support/fake_llm_server.py), real
files and clips, a full disk through RLIMIT_FSIZE in a child process, processes started at one moment, the golden
tiny release for training, LoRAs and the converter. Each case calls the pack's own functions (those the nodes'
execute methods call) and records the outcome (refused: stopped before doing anything; stopped: stopped part way
with a message; handled: went on and did the right thing), the message the pack gives and, where time matters,
the seconds it took. A case FAILs when the outcome is not the one expected, a fake key (or 8 characters of one)
shows in a message or log line, the error is a raw one from below the pack, or a check of its files, server or
timing does not hold. The cases themselves are in issue20_http.py (classes 1-3), issue20_training.py (4-5) and
issue20_files.py (6-8); tests/unit/test_security_cases.py runs the cheap ones.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TOOLS = Path(__file__).resolve().parent
SUPPORT = TOOLS.parent
ROOT = SUPPORT.parents[1]
for folder in (SUPPORT, TOOLS, ROOT / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import mova_pack  # noqa: E402,F401  (the pack, imported as ComfyUI imports it)

DOC = ROOT / "docs" / "security-cases.md"
CLASSES = {1: "Secrets", 2: "Deadlines", 3: "HTTP layer and URLs", 4: "Training", 5: "Atomic saves",
           6: "Paths", 7: "Input domains", 8: "Workflow files (scripts/workflow_api.py)"}
OUTCOMES = ("refused", "stopped", "handled")
SHOWN = 200

# fake keys: none of them (nor 8 characters of one in a row) may appear in any message or log line
KEY = "sk-test-Zq8Xw2Lm4Np6Rt0Vb1Yc3Hd5"
OTHER_KEY = "sk-other-Pp4Qq5Rr6Ss7Tt8Uu9Vv0Ww"
HEX_KEY = "3f9a1c0e7b2d4f6a8c0e2b4d6f8a0c2e"
HEX40_KEY = "abcdef0123456789abcdef0123456789abcdef01"
URL_PASSWORD = "sk-live-Qq1Ww2Ee3Rr4Tt5Yy6Uu7"
KEYS = (KEY, OTHER_KEY, HEX_KEY, HEX40_KEY, URL_PASSWORD)


def pieces(secret: str) -> set[str]:
    """Every 8 characters in a row of ``secret``."""
    return {secret[i:i + 8] for i in range(len(secret) - 7)}


def leaked(text: str) -> list[str]:
    """The fake keys of which ``text`` holds 8 characters in a row."""
    return [k for k in KEYS if any(p in text for p in pieces(k))]


def masked(text: str) -> str:
    """``text`` with every fake key (whole) written as <key>, for the input column."""
    for k in KEYS:
        text = text.replace(k, "<key>")
    return text


@dataclass
class Result:
    outcome: str            # refused / stopped / handled, or "raw error"
    message: str
    seconds: float | None = None
    problems: list[str] = field(default_factory=list)

    def check(self, condition: bool, problem: str) -> "Result":
        if not condition:
            self.problems.append(problem)
        return self


@dataclass
class Case:
    cls: int
    key: str                # stable name (tests/unit/test_security_cases.py picks cases by it)
    input: str
    expect: str
    run: Callable[["Lab"], Result]
    timed: bool = False     # the seconds go into the table
    cheap: bool = False     # runs in well under a second with nothing heavy loaded


# errors Python raises for code that met data it did not expect: raw wherever they come from
SLIPS = (TypeError, KeyError, IndexError, AttributeError, UnicodeError, AssertionError, ZeroDivisionError,
         RecursionError, NameError)


def _pack_frame(exc: BaseException) -> bool:
    """Whether ``exc`` is a message the pack wrote: raised by the pack's own code (its innermost frame), and not one
    of Python's own slips (a raw error that went through)."""
    if isinstance(exc, SLIPS) and not type(exc).__module__.startswith(("comfyui_mova", "workflow_")):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    path = Path(frames[-1].filename).resolve()
    return path.is_file() and path.is_relative_to(ROOT) and not path.is_relative_to(ROOT / "tests")


def attempt(call: Callable[[], object], expect_error: str = "refused") -> tuple[Result, object]:
    """Run ``call``: (its Result, its return value). An error the pack raised itself is ``expect_error`` (refused
    or stopped) with its message; an error raised below the pack is a "raw error"; no error is "handled"."""
    start = time.monotonic()
    try:
        value = call()
    except Exception as exc:  # noqa: BLE001 - every error is classified and recorded
        seconds = time.monotonic() - start
        message = str(exc)
        if _pack_frame(exc) and message:
            return Result(expect_error, message, seconds), None
        raw = f"{type(exc).__name__}: {message}"
        return Result("raw error", raw, seconds, [f"raw {type(exc).__name__} from below the pack"]), None
    return Result("handled", "", time.monotonic() - start), value


class Lab:
    """What the cases share: a scratch folder, and the heavy parts, made once when a case first asks."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self._made: dict[str, object] = {}
        self._count = 0

    def folder(self, name: str) -> Path:
        self._count += 1
        path = self.scratch / f"{self._count:03d}_{name}"
        path.mkdir(parents=True)
        return path

    def once(self, name: str, make: Callable[[], object]):
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]

    @property
    def golden_dir(self) -> Path:
        return mova_pack.golden_root()

    @property
    def golden_cases(self) -> dict:
        import json
        return self.once("cases", lambda: json.loads((self.golden_dir / "cases.json").read_text()))


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_case(case: Case, lab: Lab) -> Result:
    """One case, with every log line of the pack caught: the Result with the checks every case gets."""
    collect = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    try:
        try:
            result = case.run(lab)
        except Exception as exc:  # noqa: BLE001 - a broken case is a FAIL, not a crash of the run
            result = Result("raw error", f"{type(exc).__name__}: {exc}", None,
                            [f"the case itself failed: {traceback.format_exc(limit=3)}"])
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)
    for path, name in ((lab.scratch, "<tmp>"), (lab.golden_dir, "<golden>"), (ROOT, "<repo>")):
        result.message = result.message.replace(str(path), name)
    if result.outcome != case.expect:
        result.problems.append(f"outcome {result.outcome}, expected {case.expect}")
    for where, text in (("message", result.message), ("log", "\n".join(collect.lines))):
        if leaked(text):
            result.problems.append(f"a fake key (8+ characters of it) is in the {where}")
    if "Traceback (most recent call last)" in result.message:
        result.problems.append("a traceback in the message")
    if result.outcome != "handled" and not result.message.strip():
        result.problems.append("no message")
    return result


def all_cases() -> list[Case]:
    import issue20_files
    import issue20_http
    import issue20_training
    cases = issue20_http.cases() + issue20_training.cases() + issue20_files.cases()
    keys = [c.key for c in cases]
    assert len(keys) == len(set(keys)), "case keys must be unique"
    return sorted(cases, key=lambda c: c.cls)


def find_case(key: str) -> Case:
    return next(c for c in all_cases() if c.key == key)


# -- the report ----------------------------------------------------------------------------------------------------

def _cell(text: str) -> str:
    text = " ".join(str(text).split())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= SHOWN else message[:SHOWN] + "…"


def report(results: list[tuple[Case, Result]], command: str, machine: str) -> str:
    today = datetime.date.today().isoformat()
    fails = [(c, r) for c, r in results if r.problems]
    lines = [
        "# Issue 20's cases: what the pack does with each",
        "",
        "Every bad input issue 20 names, tried against the pack with real parts (HTTP servers on 127.0.0.1 that",
        "misbehave on purpose, real files and clips, a full disk through `RLIMIT_FSIZE` in a child process,",
        "processes started at one moment, the golden tiny release), and the message each gets now. **refused**: stopped",
        "before anything was sent, read or written; **stopped**: stopped part way, naming what and why, nothing lost;",
        "**handled**: taken and done right (the message column then says what happened). No message or log line of",
        "any case holds a fake key or 8 characters of one; seconds are given where a deadline is the point. In the",
        "messages, `<tmp>` is the run's scratch folder, `<golden>` the golden tiny release, `<repo>` this repository.",
        "The rules these cases check are in [SECURITY.md](../SECURITY.md).",
        "",
        f"Made by `{command}` on {today}; machine: {machine}.",
        "",
    ]
    counts = []
    for cls, title in CLASSES.items():
        mine = [r for c, r in results if c.cls == cls]
        if mine:
            tally = ", ".join(f"{sum(r.outcome == o for r in mine)} {o}" for o in OUTCOMES
                              if any(r.outcome == o for r in mine))
            counts.append(f"| {cls}. {title} | {len(mine)} | {tally} | {sum(bool(r.problems) for r in mine)} |")
    lines += ["| Class | Cases | Outcomes | FAIL |", "|---|---|---|---|", *counts,
              f"| all | {len(results)} | | {len(fails)} |", ""]
    for cls, title in CLASSES.items():
        mine = [(c, r) for c, r in results if c.cls == cls]
        if not mine:
            continue
        lines += [f"## {cls}. {title}", "", "| # | Input | Outcome | Message now | s | Check |",
                  "|---|---|---|---|---|---|"]
        for i, (case, result) in enumerate(mine, 1):
            seconds = f"{result.seconds:.2f}" if case.timed and result.seconds is not None else ""
            check = "ok" if not result.problems else "**FAIL**: " + "; ".join(result.problems)
            lines.append(f"| {cls}.{i} | {_cell(masked(case.input))} | {result.outcome} | "
                         f"{_cell(masked(_short(result.message)))} | {seconds} | {_cell(check)} |")
        lines.append("")
    return "\n".join(lines)


def machine_line() -> str:
    import os
    import torch
    return f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), Python " \
           f"{platform.python_version()}, torch {torch.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--class", dest="classes", type=int, action="append", choices=list(CLASSES),
                        help="run only this class (repeatable); the document is then not written")
    parser.add_argument("--case", dest="keys", action="append", help="run only the case with this key")
    parser.add_argument("--out", type=Path, default=DOC, help=f"the document (default {DOC.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if (not args.classes or c.cls in args.classes) and
             (not args.keys or c.key in args.keys)]
    results = []
    with tempfile.TemporaryDirectory(prefix="issue20_") as scratch:
        lab = Lab(Path(scratch))
        for case in cases:
            result = run_case(case, lab)
            results.append((case, result))
            verdict = "ok" if not result.problems else "FAIL " + "; ".join(result.problems)
            seconds = f" {result.seconds:.2f}s" if case.timed and result.seconds is not None else ""
            print(f"{case.cls} {case.key}: {result.outcome}{seconds} {verdict}\n    {masked(_short(result.message))}",
                  flush=True)
    fails = sum(bool(r.problems) for _, r in results)
    print(f"{len(results)} cases, {fails} FAIL")
    if not args.classes and not args.keys:
        from comfyui_mova.mova_model.files.atomic_write import write_text
        import os
        golden = os.environ.get("MOVA_GOLDEN_DIR")
        command = (f"MOVA_GOLDEN_DIR={golden} " if golden else "") + "python tests/support/tools/issue20_cases.py"
        write_text(args.out, report(results, command, machine_line()) + "\n", what="the cases document")
        print(f"wrote {args.out}")
    return 1 if fails else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
