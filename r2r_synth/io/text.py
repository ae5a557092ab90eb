"""Reading text files line by line, where every way a file can be unreadable is an `InputError`.

All readers in `r2r_synth.io` go through `iter_lines` (or `first_line`, `read_text`, built on it),
so a bad byte, a broken `.gz` or a directory given for a file is reported the same way everywhere:
`path:line: not valid UTF-8 (byte 0xe9 at column 12)` with the `iconv` command that fixes it, never
a `UnicodeDecodeError` traceback. Files ending in `.gz` are gunzipped on the fly. A UTF-8 byte order
mark (Windows editors write one) is skipped.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from r2r_synth.errors import InputError

# Undecodable bytes are read as lone surrogates (U+DC80..U+DCFF, "surrogateescape") rather than
# raised at once: the error can then name the line and column, wherever in the file the byte is
# (a strict decoder fails inside a buffered read, with no line to show).
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def _open(path: Path) -> IO[str]:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "no such file"
        raise InputError(f"{path}: {what}", hint="check the path (relative paths are taken from the current directory)")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape")
    return path.open("r", encoding="utf-8-sig", errors="surrogateescape")


def _reencode_hint(path: Path, encoding: str) -> str:
    if path.suffix == ".gz":
        command = f"gunzip -c {path} | iconv -f {encoding} -t utf-8 | gzip > fixed.gz"
    else:
        command = f"iconv -f {encoding} -t utf-8 {path} > fixed{path.suffix}"
    return f"save the file as UTF-8, e.g. `{command}` (if it is not {encoding}, name its encoding after -f)"


def iter_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """Yield (line number from 1, line with its newline) of a text file, `.gz` transparently.

    Raises:
        InputError: the path is missing or a directory; a line is not valid UTF-8 (naming
            `path:line`, the byte and its column); a `.gz` file is not gzip data or is cut short.
    """
    path = Path(path)
    lineno = 0
    with _open(path) as fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                bad = None if line.isascii() else _BAD_BYTE.search(line)
                if bad is not None:
                    byte = ord(bad.group()) - 0xDC00
                    # A file that opens with 0xff or 0xfe is UTF-16 (its byte order mark): what Windows
                    # PowerShell's `>` writes. Anything else is most often Latin-1 / Windows-1252.
                    utf16 = lineno == 1 and bad.start() == 0 and byte in (0xFF, 0xFE)
                    raise InputError(
                        f"{path}:{lineno}: not valid UTF-8 (byte 0x{byte:02x} at column {bad.start() + 1})",
                        hint=_reencode_hint(path, "utf-16" if utf16 else "latin1"),
                    )
                yield lineno, line
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise InputError(
                f"{path}:{lineno + 1}: not readable as gzip data ({e})",
                hint="a `.gz` file must be whole and gzip-compressed: download or compress it again, or "
                "drop the .gz ending if the file is plain text",
            ) from None


def first_line(path: Path | str) -> str:
    """The first non-blank line, stripped ("" for a file with none): enough to tell formats apart."""
    return next((line.strip() for _, line in iter_lines(path) if line.strip()), "")


def read_text(path: Path | str) -> str:
    """The whole file as one string, checked as `iter_lines` checks it."""
    return "".join(line for _, line in iter_lines(path))
