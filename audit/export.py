"""The audit log export file: one record's canonical encoding per line.

Canonical JSON (audit.record) escapes control characters, so an encoding never
holds a raw newline and '\\n' can end each record. The bytes of a line are
exactly the bytes the record's leaf hash covers: the export is verified as
written, never re-encoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

_READ_BUFFER = 1 << 20


class ExportError(Exception):
    """An export file that cannot be read as newline-terminated records."""


def write_export(encoded_records: Iterable[bytes], path: str | os.PathLike[str]) -> int:
    """Write records, one per line, to `path` atomically; the count.

    A record holding a raw newline is not canonical: refused, and nothing is left.
    """
    count = 0

    def lines() -> Iterator[bytes]:
        nonlocal count
        for data in encoded_records:
            if b"\n" in data:
                raise ValueError(f"record {count} holds a raw newline: not canonical")
            yield data + b"\n"
            count += 1

    write_file_atomically(path, lines())
    return count


def read_export(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Yield each record's bytes (without its newline), streaming.

    Raises ExportError if the file does not end with a newline: its last record
    was cut short (a partial copy or write), which is reported, not guessed at.
    """
    with open(path, "rb", buffering=_READ_BUFFER) as f:
        for line in f:
            if line[-1:] != b"\n":
                raise ExportError(
                    "the export's last line has no newline: the file was cut short inside a record"
                )
            yield line[:-1]


def write_file_atomically(path: str | os.PathLike[str], chunks: Iterable[bytes]) -> int:
    """Write `chunks` to `path` via a temp file, fsync and rename; the bytes written.

    A reader (or a crash) never sees a half-written export or checkpoint file.
    """
    target = Path(path)
    temp = target.with_name(target.name + ".partial")
    written = 0
    try:
        with open(temp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)  # never leave a half file that looks like one
        raise
    return written
