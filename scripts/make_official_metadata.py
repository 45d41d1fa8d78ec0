"""Write the metadata.json MOVA's official trainers read, for a folder of captioned clips (standard library only).

The MOVA Dataset node reads a folder of clips, each with a caption in a same-name .txt file. MOVA's own
trainers (OpenMOSS/MOVA, ``VideoAudioDataset``) read ``data_root/metadata.json``, a list of
``{"video_path": ..., "caption": ...}`` with paths relative to ``data_root``. This script writes that file
into the clip folder, so the same folder serves both:

    python scripts/make_official_metadata.py /path/to/mova_clips

Exit codes: 0 written, 2 a problem (named on stderr; nothing is written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safe_files import write_text

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def official_metadata(folder: Path) -> list[dict]:
    """[{"video_path": name, "caption": text}] for every clip of ``folder`` (sorted); ValueError naming the
    clips without a caption."""
    entries, missing = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS):
        caption = path.with_suffix(".txt")
        text = caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""
        if not text:
            missing.append(path.name)
            continue
        entries.append({"video_path": path.name, "caption": text})
    if missing:
        raise ValueError(f"no caption for {', '.join(missing)}: write each in a .txt file of the same name")
    if not entries:
        raise ValueError(f"{folder} holds no video clips ({', '.join(VIDEO_EXTENSIONS)})")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write metadata.json (MOVA's official trainers) for a clip folder.")
    parser.add_argument("folder", type=Path, help="the clip folder the MOVA Dataset node reads")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing metadata.json")
    args = parser.parse_args(argv)
    target = args.folder / "metadata.json"
    try:
        if not args.folder.is_dir():
            raise ValueError(f"{args.folder} is not a folder")
        if target.exists() and not args.overwrite:
            raise ValueError(f"{target} already exists: pass --overwrite to replace it")
        entries = official_metadata(args.folder)
        write_text(target, json.dumps(entries, indent=1, ensure_ascii=False) + "\n", overwrite=args.overwrite)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {target} ({len(entries)} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
