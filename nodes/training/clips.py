"""Training clips: find them with their captions, check them, and read them fitted to MOVA's sizes (plain
Python with PyAV; no ComfyUI import).

A clip is a video file with a sound track and a caption in a ``.txt`` file of the same name. Reading takes
the first ``frames`` frames (at the clip's own rate, or picked at the dataset's rate when resampling), centre-
crops them to the target aspect ratio and resizes them (bilinear, antialiased), like the official dataset;
the sound is mixed to mono and resampled to the codec's rate, from the start of the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .captions import CaptionError, read_caption

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# Video types a caption may sit beside that MOVA Dataset does not read: reported, not skipped silently.
OTHER_VIDEO_EXTENSIONS = (".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".vob", ".gif")
SILENCE = 1e-4          # peak amplitude below which a sound track counts as silent
FPS_TOLERANCE = 1e-3    # relative difference under which two frame rates are the same


class ClipError(ValueError):
    """A clip that cannot be used; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class Clip:
    """A video file and its caption."""

    path: Path
    caption: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ClipCheck:
    """What inspecting a clip found: its frame rate, problems (it cannot be used) and notes (it can)."""

    clip: Clip
    source_fps: float = 0.0
    resampled: bool = False
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _clip_problem(path: Path, caption_file: Path) -> str | None:
    """Why a clip-named entry that has a caption is not a file that can be read, or None when it is."""
    if path.is_symlink() and not path.exists():
        return (f"is a link to {path.readlink()}, which does not exist: restore the clip, or remove the link and "
                f"its caption {caption_file.name}")
    if not path.is_file():
        return f"is not a file: put the clip there, or remove its caption {caption_file.name}"
    return None


def _unused_captions(entries: list[Path], used: set[str], problems: list[str],
                     notes: list[str] | None) -> None:
    """Captions without a clip: a problem when a video of another type has their name, else a note."""
    stems = {}
    for path in entries:
        stems.setdefault(path.stem, []).append(path)
    for path in entries:
        if path.suffix.lower() != ".txt" or path.stem in used:
            continue
        others = [p for p in stems[path.stem] if p.suffix.lower() in OTHER_VIDEO_EXTENSIONS]
        if others:
            problems.append(f"{others[0].name}: {others[0].suffix} is not a clip type MOVA Dataset reads "
                            f"({', '.join(VIDEO_EXTENSIONS)}): convert it (e.g. ffmpeg -i {others[0].name} "
                            f"{path.stem}.mp4), or remove its caption {path.name}")
        elif notes is not None:
            notes.append(f"{path.name}: no clip of that name ({', '.join(VIDEO_EXTENSIONS)}): not used")


def find_clips(folder: str | Path, notes: list[str] | None = None) -> tuple[list[Clip], list[str]]:
    """The clips in ``folder`` (sorted by name) and the problems found: captions missing, empty or unreadable, clips
    that are dangling links or not files, videos of other types with a caption, no clips. ``notes`` receives what
    the node reports without stopping: captions read as Windows-1252 (captions.py) and captions without a clip."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ClipError(f"the clip folder {folder} is a file, not a folder: give the folder that holds the clips "
                        "(video files with sound, each with a same-name .txt caption).")
    if not folder.is_dir():
        raise ClipError(f"the clip folder {folder} does not exist: put the clips (video files with sound, each "
                        "with a same-name .txt caption) in a folder inside ComfyUI/input, or give its full path.")
    clips, problems, used = [], [], set()
    entries = sorted(folder.iterdir())
    for path in (p for p in entries if p.suffix.lower() in VIDEO_EXTENSIONS):
        caption_file = path.with_suffix(".txt")
        used.add(path.stem)
        has_caption = caption_file.is_file()
        if (problem := _clip_problem(path, caption_file)) is not None:
            if has_caption:
                problems.append(f"{path.name}: {problem}")
            elif notes is not None:
                notes.append(f"{path.name}: not a readable file and no caption: skipped")
            continue
        if not has_caption and caption_file.is_symlink() and not caption_file.exists():
            problems.append(f"{path.name}: its caption {caption_file.name} is a link to {caption_file.readlink()}, "
                            "which does not exist: restore the caption file")
            continue
        if not has_caption:
            problems.append(f"{path.name}: no caption (write it in {caption_file.name} beside the clip)")
            continue
        try:
            caption, note = read_caption(caption_file)
        except CaptionError as exc:
            problems.append(f"{path.name}: the caption {caption_file.name} {exc}")
            continue
        caption = caption.strip()
        if not caption:
            problems.append(f"{path.name}: the caption {caption_file.name} is empty")
            continue
        if note is not None and notes is not None:
            notes.append(f"{path.name}: the caption {caption_file.name} {note}")
        clips.append(Clip(path, caption))
    _unused_captions(entries, used, problems, notes)
    if not clips and not problems:
        raise ClipError(f"{folder} holds no video clips ({', '.join(VIDEO_EXTENSIONS)}): add clips with sound and "
                        "a same-name .txt caption each.")
    return clips, problems


def same_rate(a: float, b: float) -> bool:
    return abs(a - b) <= FPS_TOLERANCE * b


def source_frames_needed(frames: int, fps: float, source_fps: float) -> int:
    """Source frames to read for ``frames`` frames at ``fps`` (all of them when the rates agree)."""
    if same_rate(source_fps, fps):
        return frames
    return resample_indices(frames, fps, source_fps)[-1] + 1


def resample_indices(frames: int, fps: float, source_fps: float) -> list[int]:
    """Source frame shown at each target time i / fps: the nearest frame of a constant-rate source."""
    return [int(math.floor(i * source_fps / fps + 0.5)) for i in range(frames)]


def _video_rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _read_audio(container, sample_rate: int, samples: int) -> torch.Tensor | None:
    """The first ``samples`` samples of the first sound track, mono at ``sample_rate`` (fewer when it is
    shorter), float32 [T]; None without a sound track. Starts at time 0 (a late start is padded)."""
    import av
    if not container.streams.audio:
        return None
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    pieces, have, start = [], 0, None
    for frame in container.decode(stream):
        if start is None:
            start = frame.time or 0.0
            if start > 0:
                pad = int(round(start * sample_rate))
                pieces.append(torch.zeros(pad))
                have += pad
        for out in resampler.resample(frame):
            piece = torch.from_numpy(out.to_ndarray().reshape(-1).copy())
            pieces.append(piece)
            have += piece.numel()
        if have >= samples:
            break
    else:
        for out in resampler.resample(None):
            pieces.append(torch.from_numpy(out.to_ndarray().reshape(-1).copy()))
    wave = torch.cat(pieces) if pieces else torch.zeros(0)
    if start is not None and start < 0:
        wave = wave[int(round(-start * sample_rate)):]
    return wave[:samples].float()


def inspect_clip(clip: Clip, frames: int, fps: float, sample_rate: int, resample: bool) -> ClipCheck:
    """Check a clip without decoding its pictures: frame rate, enough frames, a sound track that is long
    enough and not silent (the first problem found is reported)."""
    import av
    check = ClipCheck(clip)
    needed_s = frames / fps
    try:
        with av.open(str(clip.path)) as container:
            if not container.streams.video:
                check.problems.append("has no video stream")
                return check
            stream = container.streams.video[0]
            check.source_fps = _video_rate(stream)
            if check.source_fps <= 0:
                check.problems.append("its frame rate cannot be read: re-encode it (e.g. ffmpeg -i clip.mov "
                                      "-r 24 clip.mp4)")
                return check
            if not same_rate(check.source_fps, fps):
                if not resample:
                    check.problems.append(
                        f"is {check.source_fps:g} fps but the dataset is {fps:g} fps: convert it, set the dataset's "
                        f"fps to {check.source_fps:g}, or set fps_mode to resample")
                    return check
                check.resampled = True
                check.notes.append(f"{check.source_fps:g} fps resampled to {fps:g} fps")
            wanted = source_frames_needed(frames, fps, check.source_fps)
            count = 0
            for packet in container.demux(stream):
                count += 1 if packet.size else 0
                if count >= wanted:
                    break
        if count < wanted:
            check.problems.append(
                f"is too short: {count} frames ({count / check.source_fps:.2f} s at {check.source_fps:g} fps), the "
                f"dataset needs {frames} frames at {fps:g} fps ({needed_s:.2f} s): use a longer clip or a smaller "
                "length")
            return check
        with av.open(str(clip.path)) as container:
            wave = _read_audio(container, sample_rate, int(sample_rate * frames / fps))
    except av.error.FFmpegError as exc:
        check.problems.append(f"cannot be read ({exc}): is it a video file? Re-encode it as mp4 (H.264 + AAC)")
        return check
    if wave is None:
        check.problems.append("has no sound track: MOVA learns video and sound together, use clips with sound")
    elif wave.numel() < int(sample_rate * frames / fps) - sample_rate / fps:
        check.problems.append(f"its sound lasts {wave.numel() / sample_rate:.2f} s, the dataset needs "
                              f"{needed_s:.2f} s: use a clip whose sound covers the frames")
    elif wave.abs().max() < SILENCE:
        check.problems.append("its sound track is silent: use clips with sound")
    return check


def fit_frames(video: torch.Tensor, width: int, height: int, chunk: int = 16) -> torch.Tensor:
    """Frames [F,H0,W0,3] uint8 -> [F,height,width,3] float 0..1: centre crop to the target aspect ratio
    (crop size rounded), then an antialiased bilinear resize."""
    in_h, in_w = video.shape[1], video.shape[2]
    ratio = width / height
    if in_w / in_h > ratio:
        crop_h, crop_w = in_h, max(1, int(round(in_h * ratio)))
    else:
        crop_h, crop_w = max(1, int(round(in_w / ratio))), in_w
    top, left = int(round((in_h - crop_h) / 2.0)), int(round((in_w - crop_w) / 2.0))
    video = video[:, top:top + crop_h, left:left + crop_w]
    out = []
    for start in range(0, video.shape[0], chunk):
        x = video[start:start + chunk].permute(0, 3, 1, 2).float() / 255.0
        if (crop_h, crop_w) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.clamp(0, 1).permute(0, 2, 3, 1))
    return torch.cat(out)


def read_clip(clip: Clip, width: int, height: int, frames: int, fps: float, sample_rate: int,
              source_fps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames [frames,height,width,3] float 0..1, sound [int(sample_rate·frames/fps)] float32 mono) of a clip
    that ``inspect_clip`` passed; the sound is padded with silence when it ends a little early."""
    import av
    wanted = resample_indices(frames, fps, source_fps) if not same_rate(source_fps, fps) else list(range(frames))
    needed = wanted[-1] + 1
    pictures = []
    with av.open(str(clip.path)) as container:
        for frame in container.decode(container.streams.video[0]):
            pictures.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if len(pictures) >= needed:
                break
    if len(pictures) < needed:
        raise ClipError(f"{clip.name}: only {len(pictures)} frames could be decoded, {needed} are needed: use a "
                        "longer clip or a smaller length")
    video = fit_frames(torch.stack([pictures[i] for i in wanted]), width, height)
    samples = int(sample_rate * frames / fps)
    with av.open(str(clip.path)) as container:
        wave = _read_audio(container, sample_rate, samples)
    if wave is None:
        raise ClipError(f"{clip.name}: has no sound track")
    return video, F.pad(wave, (0, samples - wave.numel()))
