"""The one way the pack writes a file (atomic_write: a unique temporary file beside the target, fsync, rename) and
the one way a name from a user or a workflow becomes a path (names): real files, a real full disk (RLIMIT_FSIZE),
real permissions, a real Ctrl+C, and processes writing one target at the same moment."""

import os
import signal
import subprocess
import sys
import time

import pytest

from comfyui_mova.mova_model.files.atomic_write import WriteError, atomic_write, write_bytes
from comfyui_mova.mova_model.files.names import NameProblem, make_folder, name_parts, path_inside
from write_faults import NO_RLIMIT, PREAMBLE, leftovers, open_folder, python, start_together, unprivileged


def test_the_new_file_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "sub" / "file.bin"
    write_bytes(target, b"old")
    os.chmod(target, 0o640)
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".file.bin.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    with pytest.raises(FileExistsError, match=r"the thing .*file.bin already exists: choose another name, or allow"):
        write_bytes(target, b"newer", overwrite=False, what="the thing")
    assert target.read_bytes() == b"new"


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    target = write_bytes(tmp_path / "file.bin", b"old")
    for error in (ValueError("the writer broke"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_write(target) as tmp:
                tmp.write_bytes(b"half")
                raise error
        assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


@NO_RLIMIT
def test_disk_full_names_the_file_and_keeps_the_old_one(tmp_path):
    target = write_bytes(tmp_path / "file.bin", b"old")
    run = python(f"""
        from comfyui_mova.mova_model.files.atomic_write import write_bytes
        limit_file_size(1000)
        for name in ("file.bin", "fresh.bin"):
            try:
                write_bytes({str(tmp_path)!r} + "/" + name, b"x" * 5000, what="the test file")
            except OSError as exc:
                print(type(exc).__name__, exc)
    """)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == (f"WriteError could not write the test file {target}: File too large; the file is larger than "
                        "this system allows (a file-size limit, or a file system such as FAT32 that holds at most "
                        "4 GiB per file): raise the limit, or choose a folder on another file system. Nothing was "
                        "saved; the previous file.bin is unchanged.")
    assert lines[1].endswith("Nothing was saved; no partial file was left.")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_read_only_folder():
    with open_folder() as base:
        folder = base / "ro"
        target = write_bytes(folder / "file.bin", b"old")
        folder.chmod(0o555)
        with unprivileged(), pytest.raises(WriteError) as caught:
            write_bytes(target, b"new")
        kept, names = target.read_bytes(), sorted(p.name for p in folder.iterdir())
    assert str(caught.value) == (f"could not write {target}: Permission denied; permission denied: make the folder "
                                 "writable for the user running this, or choose another folder. Nothing was saved; "
                                 "the previous file.bin is unchanged.")
    assert kept == b"old" and names == ["file.bin"]


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_while_writing_keeps_the_old_file(tmp_path):
    target = write_bytes(tmp_path / "file.bin", b"old")
    ready = tmp_path / "writing"
    script = PREAMBLE + f"""
import signal
import time
from pathlib import Path
from comfyui_mova.mova_model.files.atomic_write import atomic_write
# a shell's background job starts with Ctrl+C ignored, and Python keeps that: take the usual Ctrl+C back
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    with atomic_write({str(target)!r}) as tmp:
        tmp.write_bytes(b"half of the new")
        Path({str(ready)!r}).touch()
        time.sleep(60)
except KeyboardInterrupt:
    print("interrupted")
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert len(list(tmp_path.glob(".file.bin.*.tmp"))) == 1  # the temporary file, while it is being written
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "interrupted", err
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_three_processes_writing_one_file_at_once(tmp_path):
    """Each writes its own 4 MiB pattern 10 times into the same target: no error, and the file is always one
    writer's whole pattern (never a mix, never cut short)."""
    target = tmp_path / "shared.bin"
    codes = [f"""
        from comfyui_mova.mova_model.files.atomic_write import write_bytes
        for _ in range(10):
            write_bytes({str(target)!r}, bytes([{i}]) * (4 << 20))
            data = open({str(target)!r}, "rb").read()
            assert len(data) == 4 << 20 and data == data[:1] * len(data), "mixed or short"
        print("ok")
    """ for i in range(3)]
    for run in start_together(codes, tmp_path):
        assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    data = target.read_bytes()
    assert len(data) == 4 << 20 and data[0] in (0, 1, 2) and data == data[:1] * len(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.bin"]


def test_names_inside_their_folder(tmp_path):
    what = "MOVA Train LoRA's run_name"
    for good, parts in (("my_lora", ["my_lora"]), ("猫の歌 v2", ["猫の歌 v2"]), ("sub/run-1", ["sub", "run-1"]),
                        ("win\\style", ["win", "style"]), (" padded ", ["padded"]), (".hidden", [".hidden"]),
                        ("a:b", ["a:b"])):
        assert name_parts(good, what, windows=False) == parts
        assert path_inside(tmp_path, good, what) == tmp_path.joinpath(*parts)
    made = make_folder(path_inside(tmp_path, "猫の歌 v2", what), what)
    assert made.is_dir() and made.name == "猫の歌 v2"
    refused = {
        "../escape": "goes up out of its folder ('..')",
        "a/../../b": "goes up out of its folder ('..')",
        "/etc/x": "is an absolute path (it starts at a root, drive or server)",
        "C:\\Users\\x": "is an absolute path (it starts at a root, drive or server)",
        "\\\\server\\share": "is an absolute path (it starts at a root, drive or server)",
        "": "is empty",
        "a//b": "has an empty folder name ('//', a trailing '/', or a part made only of dots and spaces)",
        "run\nname": "contains U+000A (a line break, tab or other control character, or an unpaired surrogate)",
        "bad\ud800": "contains U+D800 (a line break, tab or other control character, or an unpaired surrogate)",
    }
    for bad, problem in refused.items():
        with pytest.raises(NameProblem) as caught:
            path_inside(tmp_path, bad, what)
        message = str(caught.value)
        assert message.startswith(f"{what} {bad!r} {problem}") and "give a name inside the folder" in message, message
    for bad, problem in (("a<b", "contains <, which Windows does not allow in a name"),
                         ("sub/CON.txt", "uses 'CON', a device name Windows reserves")):
        with pytest.raises(NameProblem, match=problem):
            name_parts(bad, what, windows=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "猫の歌 v2"]


def test_names_the_file_system_refuses(tmp_path):
    what = "MOVA Train LoRA's run_name"
    with pytest.raises(NameProblem) as caught:
        path_inside(tmp_path, "x" * 300, what)
    assert str(caught.value) == (f"{what}: the name {'x' * 40!r}… is 300 bytes long; the file system takes at most "
                                 "255 bytes per name (the name is too long for the file system: choose a shorter "
                                 "name).")
    with pytest.raises(NameProblem, match=r"is 262 bytes long with '.safetensors'; the file system takes at most 255"):
        path_inside(tmp_path, "x" * 250, "MOVA Save LoRA's filename", suffixes=(".safetensors", "_official"))
    assert path_inside(tmp_path, "猫" * 85, what).name == "猫" * 85  # 255 bytes in UTF-8: fits exactly
    (tmp_path / "taken").write_text("a file")
    for folder in (tmp_path / "taken", tmp_path / "taken" / "deeper"):
        with pytest.raises(NameProblem) as caught:
            make_folder(folder, f"{what} 'taken'")
        assert str(caught.value) == (f"{what} 'taken': {tmp_path / 'taken'} is a file (or a broken link), not a "
                                     "folder: choose another name, or move that file away.")
    with open_folder() as base:
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        with unprivileged(), pytest.raises(NameProblem) as caught:
            make_folder(locked / "run", f"{what} 'run'")
    assert str(caught.value) == (f"{what} 'run': cannot create the folder {locked / 'run'} (Permission denied): "
                                 "permission denied: make the folder writable for the user running this, or choose "
                                 "another folder.")
