"""Caption files (.txt beside each training clip): which text encodings are read, and how (plain Python).

The rule: a byte-order mark decides (UTF-8, UTF-16 or UTF-32, little or big endian; the mark itself is dropped).
Without one the file must be UTF-8; when it is not, it is read as Windows-1252 (cp1252, the usual 8-bit encoding of
Western text, which Latin-1 files match but for the rarely used 0x80..0x9F) and the node says so, with the start of
the text as read. A file that is neither (bytes cp1252 leaves undefined, such as most Shift-JIS or GBK text) or that
holds NUL characters (UTF-16 saved without a mark) is refused, naming the file and the fix: save it as UTF-8.
"""

from __future__ import annotations

import codecs
from pathlib import Path

# UTF-32 LE first: its mark starts with UTF-16 LE's.
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
                    (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
                    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))
FALLBACK = "cp1252"
SAVE_AS_UTF8 = "save it as UTF-8 (in Notepad: Save As, Encoding UTF-8)"
SHOWN_CHARACTERS = 60


class CaptionError(ValueError):
    """A caption file that cannot be read as text; the message says why and how to fix it (without the name)."""


def _shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS] + "..."


def decode_caption(data: bytes) -> tuple[str, str | None]:
    """(the caption's text, a note for the node or None) of a caption file's bytes, by the module's rule; a
    CaptionError otherwise."""
    for mark, encoding, label in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                text = data[len(mark):].decode(encoding)
            except UnicodeDecodeError as exc:
                raise CaptionError(f"starts with a {label} byte-order mark but is not valid {label} (byte "
                                   f"{exc.start + len(mark)}): {SAVE_AS_UTF8}") from None
            break
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = data[exc.start]
            try:
                text = data.decode(FALLBACK)
            except UnicodeDecodeError:
                raise CaptionError(f"is not UTF-8 (byte {exc.start} is 0x{byte:02x}) nor a Western 8-bit text "
                                   f"(Windows-1252): {SAVE_AS_UTF8}") from None
            if "\x00" not in text:
                return text, (f"is not UTF-8 (byte {exc.start} is 0x{byte:02x}): read as Windows-1252 (cp1252): "
                              f"\"{_shown(text)}\"; if that is wrong, {SAVE_AS_UTF8}")
    if "\x00" in text:
        raise CaptionError(f"holds NUL characters: it looks like UTF-16 saved without a byte-order mark; {SAVE_AS_UTF8}")
    return text, None


def read_caption(path: Path) -> tuple[str, str | None]:
    """(text, note) of a caption file (``decode_caption``); a CaptionError when it cannot be read at all."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaptionError(f"cannot be read ({exc.strerror or exc}): check that it is a file you may read") from None
    return decode_caption(data)
