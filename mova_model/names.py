"""Names that come from a user or a workflow (run names, LoRA file names, the converter's prefix) made into
paths that stay inside their folder.

A name may hold sub/folders ('/' or '\\'); it may not go up ('..'), start at a root or drive ('/x', 'C:\\x',
'\\\\server\\x'), or hold control characters. Anything else the file system stores is accepted (Japanese,
spaces, punctuation); what it refuses (a name longer than its limit, a character it cannot store, a file where
a folder should be) gets a message naming the input, the problem and the fix before anything is written.
"""

from __future__ import annotations

import errno
import os
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

from .atomic_write import advice

NAME_MAX = 255  # bytes per file or folder name on the usual file systems (ext4, NTFS in UTF-16 units, APFS)
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
WINDOWS_REFUSED = '<>:"|?*'


class NameProblem(ValueError):
    """A name that cannot become a path inside its folder; the message names the input and the fix."""


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding ``folder`` (or its nearest existing parent) takes."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return int(os.pathconf(candidate, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):  # Windows, or a file system that does not say
                return NAME_MAX
    return NAME_MAX


def name_parts(name: str, what: str, example: str = "my_mova_lora", windows: bool | None = None) -> list[str]:
    """The parts of ``name`` ('sub/name' -> ['sub', 'name']) after the checks that keep it inside its folder.
    ``what`` names the input in messages ("MOVA Train LoRA's run_name"); ``windows`` applies Windows' own
    rules (default: when running on Windows)."""
    windows = os.name == "nt" if windows is None else windows
    shown = repr(name) if len(name) <= 80 else repr(name[:60] + "…") + f" ({len(name)} characters)"
    text = name.strip()

    def refuse(problem: str) -> NameProblem:
        return NameProblem(f"{what} {shown} {problem}: give a name inside the folder, e.g. {example!r} or "
                          f"'sub/{example}'.")

    if not text:
        raise refuse("is empty")
    bad = sorted({c for c in text if unicodedata.category(c) in ("Cc", "Cs")})
    if bad:
        kinds = ", ".join(f"U+{ord(c):04X}" for c in bad[:3])
        raise refuse(f"contains {kinds} (a line break, tab or other control character, or an unpaired "
                     "surrogate), which a name may not hold")
    windows_path = PureWindowsPath(text)  # 'C:\\x' and '\\\\server\\x' are refused on every system
    if PurePosixPath(text).is_absolute() or windows_path.is_absolute() or (windows and windows_path.anchor):
        raise refuse("is an absolute path (it starts at a root, drive or server)")
    parts = text.replace("\\", "/").split("/")
    if any(p == ".." for p in parts):
        raise refuse("goes up out of its folder ('..')")
    if any(p.strip(". ") == "" for p in parts):
        raise refuse("has an empty folder name ('//', a trailing '/', or a part made only of dots and spaces)")
    if windows:
        for part in parts:
            refused = sorted(set(part) & set(WINDOWS_REFUSED))
            if refused:
                raise refuse(f"contains {' '.join(refused)}, which Windows does not allow in a name")
            if part.split(".")[0].strip().upper() in WINDOWS_RESERVED:
                raise refuse(f"uses {part.split('.')[0]!r}, a device name Windows reserves")
    return [p.strip() for p in parts]


def path_inside(base: str | os.PathLike, name: str, what: str, suffixes: tuple[str, ...] = ("",),
                example: str = "my_mova_lora") -> Path:
    """``base/name`` (sub/folders allowed) after ``name_parts``' checks, and no part longer than the file
    system takes, counting the longest of ``suffixes`` appended to the last part (".safetensors", "_official")."""
    base = Path(base)
    parts = name_parts(name, what, example)
    limit = _name_max(base)
    longest = max(suffixes, key=lambda s: len(os.fsencode(s)))
    for i, part in enumerate(parts):
        size = len(os.fsencode(part + (longest if i == len(parts) - 1 else "")))
        if size > limit:
            extra = f" with {longest!r}" if i == len(parts) - 1 and longest else ""
            raise NameProblem(f"{what}: the name {part[:40]!r}… is {size} bytes long{extra}; the file system takes "
                              f"at most {limit} bytes per name ({advice(errno.ENAMETOOLONG)}).")
    return base.joinpath(*parts)


def make_folder(folder: str | os.PathLike, what: str, base: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` (and its parents); a message naming ``what`` when a file stands where a folder is
    needed or the system refuses (permission, read-only, a name it cannot store)."""
    folder = Path(folder)
    try:
        for candidate in (folder, *folder.parents):
            if candidate.exists() or candidate.is_symlink():
                if not candidate.is_dir():
                    raise NameProblem(f"{what}: {candidate} is a file (or a broken link), not a folder: choose "
                                      "another name, or move that file away.")
                break
            if base is not None and candidate == Path(base):
                break
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NameProblem(f"{what}: cannot create the folder {folder} ({exc.strerror or exc}): "
                          f"{advice(exc.errno)}.") from exc
    return folder
