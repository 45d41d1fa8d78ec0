"""MOVA Dataset reads clips only inside ComfyUI/input or a folder the user listed in MOVA_DATASET_FOLDERS."""

import os

import pytest

from comfyui_mova.nodes.clip_folder import FOLDERS_ENV, ClipFolderError, resolve_clip_folder


def test_relative_folders_stay_inside_input(tmp_path):
    inp = tmp_path / "input"
    assert resolve_clip_folder("mova_clips", inp, {}) == inp / "mova_clips"
    assert resolve_clip_folder(" sub/歌う猫 ", inp, {}) == inp / "sub" / "歌う猫"
    assert resolve_clip_folder(str(inp / "clips"), inp, {}) == inp / "clips"  # a full path inside input


@pytest.mark.parametrize("folder, message", [
    ("../secrets", r"goes up out of its folder"),
    ("clips/../../x", r"goes up out of its folder"),
    ("/etc", r"is outside ComfyUI/input: a workflow may only read clips from there"),
    ("~/Videos", r"starts with '~'"),
    ("", r"is empty"),
    ("a\nb", r"control character"),
])
def test_folders_a_workflow_may_not_name(tmp_path, folder, message):
    with pytest.raises(ClipFolderError, match=message):
        resolve_clip_folder(folder, tmp_path / "input", {})


def test_folders_the_user_listed(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    env = {FOLDERS_ENV: f"{data}{os.pathsep} {tmp_path / 'more'} "}
    assert resolve_clip_folder(str(data / "clips"), tmp_path / "input", env) == data / "clips"
    with pytest.raises(ClipFolderError, match=rf"or the folders in {FOLDERS_ENV} \({data}, {tmp_path / 'more'}\)"):
        resolve_clip_folder(str(other), tmp_path / "input", env)
    with pytest.raises(ClipFolderError, match=r"goes up"):
        resolve_clip_folder(str(data / ".." / "other"), tmp_path / "input", env)
    with pytest.raises(ClipFolderError, match=rf"{FOLDERS_ENV} entry 'relative' is not a full path"):
        resolve_clip_folder("clips", tmp_path / "input", {FOLDERS_ENV: "relative"})
