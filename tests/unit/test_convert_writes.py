"""The converter's writes (python -m mova_model.convert): --prefix cannot leave the output folder, a full disk
names the file and keeps the old one, and three converters writing into one folder at the same moment all finish
with whole, verified files."""

import pytest
from safetensors.torch import load_file

from comfyui_mova.mova_model import convert
from write_faults import NO_RLIMIT, leftovers, python, start_together

PARTS = ["--components", "bridge", "audio_vae"]


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("prefix, problem", [
    ("../../x", "--prefix '../../x' holds a folder separator; it is the start of each file name, not a path: give "
                "the folder as the output argument (e.g. out/sub) and a plain --prefix (e.g. mova_360p)."),
    ("/tmp/x", "--prefix '/tmp/x' holds a folder separator"),
    ("sub/name", "--prefix 'sub/name' holds a folder separator"),
    ("C:\\x", "--prefix 'C:\\\\x' holds a folder separator"),
    ("..", "--prefix '..' goes up out of its folder ('..'): give a name inside the folder, e.g. 'mova_360p'"),
    ("a\tb", "--prefix 'a\\tb' contains U+0009 (a line break, tab or other control character"),
    ("x" * 300, "--prefix: the name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'… is 348 bytes long; the file system "
                "takes at most 255 bytes per name"),
])
def test_prefix_stays_a_file_name(golden_dir, tmp_path, capsys, prefix, problem):
    out = tmp_path / "deep" / "out"
    assert convert.main([str(golden_dir / "checkpoint"), str(out), "--prefix", prefix, *PARTS]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {problem}"), err
    assert _tree(tmp_path) == []  # nothing written, not even the output folder


def test_prefix_in_japanese(golden_dir, tmp_path, capsys):
    assert convert.main([str(golden_dir / "checkpoint"), str(tmp_path), "--prefix", "歌う猫", *PARTS]) == 0
    assert _tree(tmp_path) == ["歌う猫_audio_vae_fp32.safetensors", "歌う猫_dual_tower_bridge_fp8_e4m3fn_scaled.safetensors"]


@NO_RLIMIT
def test_disk_full_names_the_file_and_keeps_the_old_one(golden_dir, tmp_path):
    assert convert.main([str(golden_dir / "checkpoint"), str(tmp_path), "--components", "audio_vae"]) == 0
    [old] = tmp_path.iterdir()
    before = old.read_bytes()
    run = python(f"""
        from comfyui_mova.mova_model import convert
        limit_file_size({len(before) // 2})
        raise SystemExit(convert.main([{str(golden_dir / 'checkpoint')!r}, {str(tmp_path)!r}, "--components",
                                       "audio_vae", "--overwrite"]))
    """)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        f"error: converting {golden_dir / 'checkpoint' / 'audio_vae'}: could not write the audio VAE (DAC) {old}: File "
        "too large; the file is larger than this system allows (a file-size limit, or a file system such as FAT32 "
        "that holds at most 4 GiB per file): raise the limit, or choose a folder on another file system. Nothing was "
        f"saved; the previous {old.name} is unchanged.")
    assert old.read_bytes() == before and _tree(tmp_path) == [old.name]


def test_three_converters_into_one_folder_at_once(golden_dir, tmp_path):
    """Two with --overwrite, one without, started at one moment: the first two finish; the third either writes the
    files or is told one exists (before it starts or while it writes, as the others' files appear). Every file is whole and verified: no shared
    temporary file, no crash."""
    out = tmp_path / "out"
    reference = tmp_path / "reference"
    assert convert.main([str(golden_dir / "checkpoint"), str(reference), "--components", "high", "low", "bridge"]) == 0
    codes = [f"from comfyui_mova.mova_model import convert\nraise SystemExit(convert.main({args!r}))\n"
             for args in ([str(golden_dir / "checkpoint"), str(out), "--components", "high", "low", "bridge", *flag]
                          for flag in (["--overwrite"], ["--overwrite"], []))]
    runs = start_together(codes, tmp_path)
    for run, allowed in zip(runs, ((0,), (0,), (0, 2))):
        assert run.returncode in allowed, run.stderr
        assert "Traceback" not in run.stderr and "Bus error" not in run.stderr, run.stderr
        if run.returncode == 2:
            # Told before it starts (the others finished first) or while writing (they finished meanwhile): either
            # message names a file it would have replaced and the flag that allows it.
            at_start = "output file(s) already exist (first: " in run.stderr
            meanwhile = ("already exists: choose another name, or allow overwriting to replace it. (another converter "
                         "wrote it meanwhile?) Pass --overwrite to replace it.") in run.stderr
            assert at_start or meanwhile, run.stderr
            assert str(out) in run.stderr and "--overwrite" in run.stderr, run.stderr
    assert _tree(out) == _tree(reference) and leftovers(tmp_path) == []
    for name in _tree(reference):
        written, expected = load_file(str(out / name)), load_file(str(reference / name))
        assert written.keys() == expected.keys() and all(written[k].equal(expected[k]) for k in expected)
