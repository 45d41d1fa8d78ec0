"""Real write failures for the tests: a full disk (a file-size limit through RLIMIT_FSIZE in a child process, with
SIGXFSZ ignored so the write fails with EFBIG like a full disk fails with ENOSPC), an unprivileged user, several
processes started at one moment, and what a folder holds besides its files (temporary files left behind)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PACK_ROOT

TESTS = Path(__file__).resolve().parent
NO_RLIMIT = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX only")

PREAMBLE = f"""
import resource, signal, sys
sys.path.insert(0, {str(TESTS)!r})
import conftest  # the pack, imported the way ComfyUI imports it (as comfyui_mova)


def limit_file_size(nbytes):
    '''From here on no file of this process may grow past nbytes: writes fail with EFBIG (SIGXFSZ ignored).'''
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def python(code: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` (after the preamble: the pack imported, ``limit_file_size`` defined) in a fresh Python."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)], cwd=PACK_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def start_together(codes: list[str], folder: Path, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Start one process per code; each imports what it needs, says it is ready, and waits until all are, so
    the interesting parts (``codes``) run at the same moment. Returns their results in order."""
    go = folder / "go"
    procs = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for i, code in enumerate(codes):
        ready = folder / f"ready_{i}"
        script = PREAMBLE + textwrap.dedent(f"""
            import os, time
            from pathlib import Path
            Path({str(ready)!r}).touch()
            while not os.path.exists({str(go)!r}):
                time.sleep(0.001)
        """) + textwrap.dedent(code)
        procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=PACK_ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + timeout
    while not all((folder / f"ready_{i}").exists() for i in range(len(codes))):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            break
        time.sleep(0.01)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    for name in ["go", *(f"ready_{i}" for i in range(len(codes)))]:
        (folder / name).unlink(missing_ok=True)
    return results


def leftovers(folder: Path) -> list[str]:
    """Temporary files under ``folder`` (what an interrupted or failed write might leave)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")))


@contextlib.contextmanager
def open_folder():
    """A temporary folder every user may enter (pytest's own are private to root, so an unprivileged test user
    could not even reach a file in them)."""
    folder = Path(tempfile.mkdtemp(prefix="mova_writes_"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


@contextlib.contextmanager
def unprivileged():
    """Act as an ordinary user (root ignores permissions): the effective uid 'nobody' for the duration."""
    if os.name != "posix" or os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
