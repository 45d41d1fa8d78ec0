"""Where MOVA Dataset may read clips: inside ComfyUI's input folder, or inside a folder the user listed in the
environment variable ``MOVA_DATASET_FOLDERS`` (never a folder a workflow alone chooses). Plain Python."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

FOLDERS_ENV = "MOVA_DATASET_FOLDERS"


class ClipFolderError(ValueError):
    """The folder widget names a place MOVA Dataset may not read; the message says what to do."""


def allowed_roots(input_dir: str | os.PathLike, env: Mapping[str, str] | None = None) -> list[Path]:
    """ComfyUI's input folder, then every absolute folder in ``MOVA_DATASET_FOLDERS`` (os.pathsep-separated)."""
    env = os.environ if env is None else env
    roots = [Path(input_dir)]
    for entry in env.get(FOLDERS_ENV, "").split(os.pathsep):
        entry = entry.strip()
        if entry:
            path = Path(entry).expanduser()
            if not path.is_absolute():
                raise ClipFolderError(f"{FOLDERS_ENV} entry '{entry}' is not a full path: list whole paths such as "
                                      f"/data/clips (separated by '{os.pathsep}'), then restart ComfyUI")
            roots.append(path)
    return roots


def _inside(path: Path, root: Path) -> bool:
    return os.path.commonpath([os.path.abspath(path), os.path.abspath(root)]) == os.path.abspath(root)


def resolve_clip_folder(folder: str, input_dir: str | os.PathLike,
                        env: Mapping[str, str] | None = None) -> Path:
    """The clip folder a workflow's ``folder`` names: relative to ComfyUI/input, or a full path inside one of the
    allowed roots. A name that goes up out of its root or starts elsewhere is refused before anything is read."""
    text = folder.strip()
    if not text:
        raise ClipFolderError("MOVA Dataset's folder is empty: give a folder inside ComfyUI/input, e.g. 'mova_clips'")
    if any(ord(c) < 32 for c in text):
        raise ClipFolderError(f"MOVA Dataset's folder {text!r} holds a line break or another control character: "
                              "give the folder's name alone, e.g. 'mova_clips'")
    if text.startswith("~"):
        raise ClipFolderError(f"MOVA Dataset's folder '{text}' starts with '~' (a home folder): give a folder inside "
                              f"ComfyUI/input, or its full path if it is inside a folder listed in {FOLDERS_ENV}")
    roots = allowed_roots(input_dir, env)
    given = Path(text)
    path = given if given.is_absolute() else roots[0] / given
    if ".." in given.parts:
        raise ClipFolderError(f"MOVA Dataset's folder '{text}' goes up out of its folder ('..'): give a folder inside "
                              "ComfyUI/input (or a link there to the folder you mean)")
    if not any(_inside(path, root) for root in roots):
        listed = "" if len(roots) == 1 else f" or the folders in {FOLDERS_ENV} ({', '.join(map(str, roots[1:]))})"
        raise ClipFolderError(
            f"MOVA Dataset's folder '{text}' is outside ComfyUI/input{listed}: a workflow may only read clips from "
            f"there, so that a shared workflow cannot read your other files. Move the clips (or a link to their "
            f"folder) into {roots[0]}, or add the folder above them to {FOLDERS_ENV} before starting ComfyUI "
            f"(e.g. {FOLDERS_ENV}={given.parent})")
    return path
