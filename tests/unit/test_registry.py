"""The registry metadata (scripts/check_registry.py): the pack's own is in order, publishing waits exactly for the
public URLs, and each rule catches what it is for, on copies of the pack's metadata."""

import shutil
import sys

import pytest
from PIL import Image

from mova_pack import PACK_ROOT

sys.path.insert(0, str(PACK_ROOT / "scripts"))

import check_registry  # noqa: E402

FILES = ("pyproject.toml", "CHANGELOG.md", "LICENSE", check_registry.ICON_FILE)


@pytest.fixture
def pack(tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACK_ROOT / name, tmp_path / name)
    return tmp_path


def _edit(pack, old, new):
    path = pack / "pyproject.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_packs_metadata_is_in_order():
    problems, pending = check_registry.check(PACK_ROOT)
    assert problems == []
    assert check_registry.main(["--pack", str(PACK_ROOT)]) == 0


def test_publishing_waits_for_the_public_urls_only(pack):
    _, pending = check_registry.check(pack)
    assert check_registry.main(["--pack", str(pack), "--publish"]) == (1 if pending else 0)
    _edit(pack, "[project.urls]\n", '[project.urls]\nRepository = "https://example.org/comfyui-mova"\n')
    _edit(pack, 'Icon = ""', 'Icon = "https://example.org/comfyui-mova/icon.png"')
    assert check_registry.check(pack) == ([], [])
    assert check_registry.main(["--pack", str(pack), "--publish"]) == 0


def test_version_must_be_the_changelogs_newest(pack):
    version = check_registry.changelog_version(pack)
    major, minor, patch = version.split(".")
    _edit(pack, f'version = "{version}"', f'version = "{major}.{minor}.{int(patch) + 1}"')
    problems, _ = check_registry.check(pack)
    assert len(problems) == 1 and "CHANGELOG.md" in problems[0]
    assert check_registry.main(["--pack", str(pack)]) == 1


@pytest.mark.parametrize("size", [(400, 300), (512, 512)])
def test_icon_must_be_a_small_square(pack, size):
    Image.new("RGB", size).save(pack / check_registry.ICON_FILE)
    problems, _ = check_registry.check(pack)
    assert problems == [f"{check_registry.ICON_FILE} is {size[0]}x{size[1]}: the registry wants a square of at most "
                        "400x400 pixels"]


def test_missing_licence_file_and_bad_ids(pack):
    (pack / "LICENSE").unlink()
    _edit(pack, 'PublisherId = "', 'PublisherId = "Not Valid')
    _edit(pack, 'name = "', 'name = "-')
    problems, _ = check_registry.check(pack)
    assert [p.split(" ")[0:2] for p in problems] == [["[project]", "name"], ["[project]", "license:"],
                                                     ["[tool.comfy]", "PublisherId:"]]
