"""Every file the pack writes goes through here: a fresh temporary file beside the target, flushed to disk,
then renamed over it, so a reader sees the old file or the new one, never half of one.

- The temporary name is unique per writer (``.<name>.<random>.tmp``, created with O_EXCL), so writers of one
  target never share a file: the last complete one wins (or, with ``overwrite=False``, the first and the others
  are told the file exists).
- On any failure (disk full, permission, Cancel, a crash inside the writer) the temporary file is removed and
  the old target is left as it was; an ``OSError`` becomes a ``WriteError`` naming the target and the fix.
- Standard library only (the scripts in ``scripts/`` use it without torch).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Iterator

TEMP_SUFFIX = ".tmp"
_PREFIX_CHARS = 80  # of the target's name in the temporary name (the temporary name must fit NAME_MAX too)


class WriteError(OSError):
    """A write that failed; the message names the file, the cause and the fix. ``errno`` / ``filename`` as in
    the OSError it came from."""

    def __init__(self, message: str, code: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = code, filename

    def __str__(self) -> str:
        return self.args[0]


def advice(code: int | None) -> str:
    """What to do about a failed write with this errno (one sentence, no full stop)."""
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk (or your quota) is full: free space there, or choose a folder on another disk"
    if code == errno.EFBIG:
        return ("the file is larger than this system allows (a file-size limit, or a file system such as FAT32 that "
                "holds at most 4 GiB per file): raise the limit, or choose a folder on another file system")
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied: make the folder writable for the user running this, or choose another folder"
    if code == errno.EROFS:
        return "the file system is read-only: choose a folder on a writable disk"
    if code == errno.ENAMETOOLONG:
        return "the name is too long for the file system: choose a shorter name"
    if code in (errno.EINVAL, getattr(errno, "EILSEQ", -1)):
        return ("the file system refuses this name (some, like NTFS or FAT, refuse characters such as < > : \" | ? *"
                "): choose a name without them")
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return ("a file stands where a folder is needed, or a folder where the file goes: move it away or choose "
                "another name")
    if code == errno.EIO:
        return "the disk reported an input/output error: check the disk"
    return "check the folder, the free space and the permissions"


def write_error(exc: OSError, target: str | os.PathLike, what: str = "", existed: bool = False) -> WriteError:
    """``exc`` from writing ``target`` as a WriteError: the file, the system's words, the fix, and what is left."""
    if isinstance(exc, WriteError):
        return exc
    label = f"{what} {target}" if what else str(target)
    cause = exc.strerror or str(exc) or type(exc).__name__
    kept = (f"the previous {Path(target).name} is unchanged" if existed
            else "no partial file was left")
    return WriteError(f"could not write {label}: {cause}; {advice(exc.errno)}. Nothing was saved; {kept}.",
                      exc.errno, str(target))


def exists_error(target: str | os.PathLike, what: str = "") -> FileExistsError:
    """The refusal to replace an existing ``target`` without overwrite (the message names it and the fix)."""
    label = f"{what} {target}" if what else str(target)
    return FileExistsError(f"{label} already exists: choose another name, or allow overwriting to replace it.")


def _new_temp(folder: Path, name: str) -> Path:
    """Create an empty, unique temporary file in ``folder`` (O_EXCL: never an existing file or link)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        path = folder / f".{name[:_PREFIX_CHARS]}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
        try:
            os.close(os.open(path, flags, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


def _sync_file(path: Path) -> None:
    with open(path, "r+b") as f:
        f.flush()
        os.fsync(f.fileno())


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); folders cannot be opened this way on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, target: Path, overwrite: bool, what: str) -> None:
    """Put ``tmp`` in place of ``target``: a rename; without ``overwrite`` a hard link that fails when the
    target appeared meanwhile (where hard links are not supported: a check, then the rename)."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise exists_error(target, what) from None
    except (OSError, NotImplementedError, AttributeError):
        if target.exists():
            raise exists_error(target, what) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, overwrite: bool = True, what: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``target`` to write into; when the block ends normally the file is flushed
    to disk and renamed to ``target`` (keeping the old target's permissions). The target's folder is created
    when missing. ``overwrite=False`` refuses (FileExistsError) when the target exists, also when another
    writer put it there meanwhile. ``what`` names the file in messages ("the training checkpoint")."""
    target = Path(target)
    existed = target.exists()
    if existed and not overwrite:
        raise exists_error(target, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_temp(target.parent, target.name)
    except OSError as exc:
        raise write_error(exc, target, what, existed) from exc
    try:
        yield tmp
        _sync_file(tmp)
        if existed:
            with contextlib.suppress(OSError):
                os.chmod(tmp, target.stat().st_mode & 0o7777)
        _commit(tmp, target, overwrite, what)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(exc, target, what, existed) from exc
    except BaseException:  # the writer failed, Cancel, Ctrl+C: the target stays as it was
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)


def write_bytes(target: str | os.PathLike, data: bytes, overwrite: bool = True, what: str = "") -> Path:
    """``data`` into ``target`` through ``atomic_write``."""
    with atomic_write(target, overwrite, what) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str, overwrite: bool = True, what: str = "") -> Path:
    """``text`` (UTF-8) into ``target`` through ``atomic_write``."""
    return write_bytes(target, text.encode("utf-8"), overwrite, what)
