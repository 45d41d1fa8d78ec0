"""Checks the pack's Comfy registry metadata (pyproject.toml's [project] and [tool.comfy]) against the registry's
rules, before `comfy node publish` would send it:

    python scripts/check_registry.py            # problems, then what publishing still waits for; exit 1 on a problem
    python scripts/check_registry.py --publish  # exit 1 also while anything publishing needs is missing

Problems: a node id the registry refuses, a version that is not X.Y.Z or not CHANGELOG.md's newest entry, a licence
file that is missing, a missing description, publisher id or display name, an icon file that is not a square of at
most 400 pixels, a URL that is not https. Pending (only --publish fails on them): the Repository URL and the Icon
URL, which need the pack's public repository. Standard library and Pillow only.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PACK = Path(__file__).resolve().parents[1]
ICON_FILE = "docs/icon.png"
NODE_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*")
PUBLISHER_ID = re.compile(r"[a-z][a-z0-9-]*")
SEMVER = re.compile(r"\d+\.\d+\.\d+")


def changelog_version(pack: Path) -> str | None:
    """The version of CHANGELOG.md's newest entry (its first ``## X.Y.Z`` heading), or None."""
    path = pack / "CHANGELOG.md"
    if not path.is_file():
        return None
    match = re.search(r"^## (\d+\.\d+\.\d+)\b", path.read_text(encoding="utf-8"), flags=re.M)
    return match.group(1) if match else None


def _icon_problems(pack: Path) -> list[str]:
    path = pack / ICON_FILE
    if not path.is_file():
        return [f"{ICON_FILE} is missing: the registry shows a square icon of at most 400x400 pixels"]
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    if width != height or width > 400:
        return [f"{ICON_FILE} is {width}x{height}: the registry wants a square of at most 400x400 pixels"]
    return []


def check(pack: Path = PACK) -> tuple[list[str], list[str]]:
    """(problems, pending): what is wrong now, and what publishing still waits for."""
    data = tomllib.loads((pack / "pyproject.toml").read_text(encoding="utf-8"))
    project, comfy = data.get("project", {}), data.get("tool", {}).get("comfy", {})
    problems, pending = [], []
    name = project.get("name", "")
    if not (NODE_ID.fullmatch(name) and len(name) < 100):
        problems.append(f"[project] name {name!r}: letters, digits and single - _ . between them, under 100 "
                        "characters, starting with a letter")
    version = project.get("version", "")
    if not SEMVER.fullmatch(version):
        problems.append(f"[project] version {version!r} is not X.Y.Z")
    elif changelog_version(pack) != version:
        problems.append(f"[project] version {version} is not CHANGELOG.md's newest entry "
                        f"({changelog_version(pack)}): add its entry, or set the version")
    licence = project.get("license", {})
    if not isinstance(licence, dict) or not (pack / licence.get("file", "")).is_file() or not licence.get("file"):
        problems.append('[project] license: license = { file = "LICENSE" } with that file in the pack')
    if not project.get("description"):
        problems.append("[project] description is empty")
    if not PUBLISHER_ID.fullmatch(comfy.get("PublisherId", "")):
        problems.append("[tool.comfy] PublisherId: lower-case letters, digits and -, the publisher's id")
    if not comfy.get("DisplayName"):
        problems.append("[tool.comfy] DisplayName is empty")
    problems += _icon_problems(pack)
    urls = project.get("urls", {})
    for key, url in {**urls, "Icon": comfy.get("Icon", "")}.items():
        if url and not url.startswith("https://"):
            problems.append(f"{key} URL {url!r} is not https")
    if not urls.get("Repository"):
        pending.append("[project.urls] Repository: the pack's public repository URL")
    if not comfy.get("Icon"):
        pending.append(f"[tool.comfy] Icon: the URL of {ICON_FILE} in the public repository")
    return problems, pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publish", action="store_true", help="also fail while something publishing needs is missing")
    parser.add_argument("--pack", type=Path, default=PACK, help="the pack folder (default: this one)")
    args = parser.parse_args(argv)
    problems, pending = check(args.pack)
    for line in problems:
        print(f"problem: {line}")
    for line in pending:
        print(f"pending: {line}")
    if not problems and not pending:
        print("ready to publish")
    elif not problems:
        print("metadata in order; publishing waits for the pending items")
    return 1 if problems or (args.publish and pending) else 0


if __name__ == "__main__":
    sys.exit(main())
