"""Bytes to text for ingest: gzip, encoding detection, streamed decoding, and locating bad bytes.

Nothing here holds a whole file: the sample is at most SAMPLE_BYTES, and the streams decode as
they are read. Checks that would cost a Python call per row (NUL bytes) are done per chunk of
bytes instead, and the slow search for *where* a problem is only runs once one was seen.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gzip
import importlib
import io
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import charset_normalizer

SAMPLE_BYTES = 64 * 1024
# TextIOWrapper reads 8 KB at a time by default; bigger reads mean fewer decoder calls.
READ_CHUNK = 64 * 1024

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# In these encodings a 0 byte is part of ordinary characters, so NUL has to be found in the text.
WIDE_ENCODINGS = frozenset({"utf-16", "utf-32"})
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class Stop:
    """Why reading ended before the input did, when a bound ended it rather than the data:
    callers may answer a size limit otherwise than a problem in the file (the API's 413)."""

    kind: str  # "bytes" (the text read in all) | "line" | "blank" | "time"
    limit: int  # in bytes or lines; 0 for "time"
    compressed: bool  # "bytes" then counts the decompressed text, not the upload


class TextProblem(Exception):
    """A problem found while reading: the message is ready for a person; line may be None.

    `stop` is set when a bound, not the data, ended the reading."""

    def __init__(self, message: str, line: int | None = None, stop: Stop | None = None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.stop = stop
        # Set for a bad byte or NUL: the reader may then find the column it lies in.
        self.bad_char = False


class _NulByte(Exception):
    pass


class _OverLimit(Exception):
    """Raised by _Bounded mid-read; TextStream.problem turns it into a TextProblem with a line."""

    def __init__(self, kind: str, limit: int, line: int | None = None):
        super().__init__(kind)
        self.kind = kind  # "bytes" | "line" | "blank" | "time" | "utf-8"
        self.limit = limit
        self.line = line


@dataclass(frozen=True)
class Limits:
    """Bounds on reading one input: decompressed bytes in all, bytes in one physical line.

    `utf8_check`: the start of the file was not UTF-8; text past the sample that is UTF-8 after
    all means the encoding was guessed wrong, and is refused rather than read as mojibake.
    `deadline`: for a check made while someone waits (validation in a web request).
    `max_blank`: blank lines, counted in blocks that hold nothing else.
    """

    max_bytes: int
    max_line: int
    utf8_check: bool = False
    deadline: float | None = None  # a time.monotonic() value
    max_blank: int | None = None


class _Bounded(io.BufferedIOBase):
    """A read-only view of a binary stream that enforces Limits chunk by chunk.

    The checks are per block of bytes (memchr-speed searches), never per line, so a file within
    the limits reads as fast as before; one past them stops after at most the limit is read.
    """

    def __init__(self, inner, limits: Limits, width: int = 1):
        self._inner = inner
        self._limits = limits
        self._max_line = limits.max_line * width  # UTF-16/32 spend 2 or 4 bytes per character
        self._total = 0
        self._since_newline = 0
        self._newlines = 0
        self._blank = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(READ_CHUNK), b""))
        data = self._inner.read(size)
        if data:
            self._check(data)
        return data

    read1 = read

    def _check(self, data: bytes) -> None:
        limits = self._limits
        self._total += len(data)
        if self._total > limits.max_bytes:
            raise _OverLimit("bytes", limits.max_bytes, self._newlines + 1)
        if limits.deadline is not None and time.monotonic() > limits.deadline:
            raise _OverLimit("time", 0, self._newlines + 1)
        if data.isspace():
            # A whole block of blank lines: counted here, at C speed, so that a gigabyte of
            # them stops after a megabyte instead of being inflated and parsed to its end.
            self._blank += data.count(b"\n") or data.count(b"\r")
            if limits.max_blank is not None and self._blank > limits.max_blank:
                raise _OverLimit("blank", limits.max_blank, self._newlines + 1)
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if last < 0:
            self._since_newline += len(data)
            if self._since_newline > self._max_line:
                raise _OverLimit("line", limits.max_line, self._newlines + 1)
        else:
            self._since_newline = len(data) - last - 1
        if limits.utf8_check and not data.isascii():
            self._check_utf8(data)
        self._newlines += data.count(b"\n")

    def _check_utf8(self, data: bytes) -> None:
        # A line whose non-ASCII bytes are all valid UTF-8 sequences is UTF-8 text: in a
        # single-byte legacy encoding such a line is (almost) only ever mojibake.
        for match in _UTF8_SEQUENCE.finditer(data):
            begin = max(data.rfind(b"\n", 0, match.start()), data.rfind(b"\r", 0, match.start()))
            ends = [
                i for i in (data.find(b"\n", match.end()), data.find(b"\r", match.end())) if i >= 0
            ]
            if not ends:
                return  # the line goes on in the next block, which checks the rest of it
            end = min(ends)
            try:
                data[begin + 1 : end].decode("utf-8")
            except UnicodeDecodeError:
                continue
            line = self._newlines + data.count(b"\n", 0, begin + 1) + 1
            raise _OverLimit("utf-8", 0, line)


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    # Like surrogateescape, but works with every codec: each bad byte becomes U+DC00 + byte, a
    # lone surrogate that no strict decoder ever produces, so it can be found in the text later.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(chr(0xDC00 + b) for b in bad), exc.end


codecs.register_error("batchhub.mark", _mark_undecodable)
_BAD_CHAR = re.compile("[\x00\udc00-\udcff]")
BAD_CHAR = _BAD_CHAR
# A multi-byte UTF-8 character (2 to 4 bytes, no overlong forms).
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


class _Guarded(io.BufferedIOBase):
    """A read-only view of any object with read(n), for file objects that aren't io classes.

    TextIOWrapper closes its buffer when it is closed or collected; the caller's file must stay
    open (the engine reads it twice), so the wrapper owns this object, not the caller's file.
    """

    def __init__(self, inner):
        self._inner = inner

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._inner.read(-1 if size is None else size)

    read1 = read


def is_gzip(fileobj: BinaryIO) -> bool:
    pos = fileobj.tell()
    try:
        return fileobj.read(2) == b"\x1f\x8b"
    finally:
        fileobj.seek(pos)


def open_binary(fileobj: BinaryIO, compressed: bool):
    return gzip.GzipFile(fileobj=fileobj, mode="rb") if compressed else fileobj


def single_byte(encoding: str) -> bool:
    """A legacy encoding with one byte per character (cp1252, latin-1, koi8-r…)."""
    name = codecs.lookup(encoding).name
    if name in ("latin-1", "iso8859-1", "ascii"):
        return True
    try:
        module = importlib.import_module("encodings." + name.replace("-", "_"))
    except ImportError:
        return False
    return hasattr(module, "decoding_table")


def _char_width(encoding: str) -> int:
    return {"utf-16": 2, "utf-32": 4}.get(encoding, 1)


def read_sample(fileobj: BinaryIO, compressed: bool) -> tuple[bytes, bool]:
    """The first SAMPLE_BYTES of the (decompressed) content, and whether that is all of it."""
    raw = open_binary(fileobj, compressed)
    try:
        sample = raw.read(SAMPLE_BYTES + 1)
    except _GZIP_ERRORS as exc:
        raise TextProblem(
            f"The file looks gzip-compressed but could not be decompressed ({exc})."
        ) from None
    finally:
        if compressed:
            raw.close()
    return sample[:SAMPLE_BYTES], len(sample) <= SAMPLE_BYTES


def _normalise(name: str) -> str:
    return codecs.lookup(name).name


def detect_encoding(sample: bytes, complete: bool) -> str:
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    if _mostly_utf8(sample):
        return "utf-8"  # decode_sample then names the stray bytes' line and character
    matches = charset_normalizer.from_bytes(sample)
    best = matches.best()
    if best is None:
        raise TextProblem(
            "The file is not text in any encoding we recognise; upload a CSV or JSONL file."
        )
    # On a short sample charset-normalizer can't tell cp1252 from its many cousins (cp775, cp1006,
    # mac_roman…) and picks one at random; most legacy CSVs come from Excel on Western Windows, so
    # cp1252 wins whenever it reads the sample about as cleanly as the best guess.
    for match in matches:
        if "cp1252" in match.could_be_from_charset and match.chaos - best.chaos <= 0.2:
            return "cp1252"
    return _normalise(best.encoding)


def _mostly_utf8(sample: bytes) -> bool:
    """UTF-8 but for a few stray bytes: more valid multi-byte characters than invalid bytes.

    Legacy single-byte text (é as 0xE9 before a letter) almost never forms a valid UTF-8
    sequence, so one that holds several and only a few bad bytes is UTF-8 with damage, and is
    reported as such rather than re-read whole as cp1252 or cp932 mojibake.
    """
    text = sample.decode("utf-8", "surrogateescape")
    bad = sum(1 for ch in text if "\udc80" <= ch <= "\udcff")
    wide = sum(1 for ch in text if "\x80" <= ch and not "\udc80" <= ch <= "\udcff")
    # A multi-byte character cut at the sample's end is not a bad byte. A tie (one é, one stray
    # byte) is UTF-8 too: its valid character is what legacy text almost never holds.
    return wide > 0 and bad <= max(3, wide // 10) and wide >= bad


def decode_sample(sample: bytes, encoding: str, complete: bool) -> str:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        return decoder.decode(sample, final=complete)
    except UnicodeDecodeError as exc:
        prefix = sample[: exc.start].decode(encoding, "replace")
        line = prefix.count("\n") + 1
        char = len(prefix) - (prefix.rfind("\n") + 1) + 1
        raise TextProblem(
            _undecodable_message(line, encoding, sample[exc.start], char), line
        ) from None


def _undecodable_message(line: int, encoding: str, byte: int, char: int | None = None) -> str:
    where = f" at character {char}" if char else ""
    return (
        f"Line {line} has bytes that are not valid {encoding} text (0x{byte:02X}{where}). "
        "Save the file as UTF-8 and upload it again."
    )


def _nul_checked(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if "\x00" in line:
            raise _NulByte
        yield line


class TextStream:
    """The decoded lines of a file (physical lines, newlines kept), for csv.reader or JSONL.

    Reading may raise UnicodeDecodeError, a gzip error, or (from check_nul) _NulByte: pass any of
    them to problem() for a TextProblem naming the line. Use as a context manager: it closes only
    what it opened.
    """

    def __init__(
        self, fileobj: BinaryIO, encoding: str, compressed: bool, limits: Limits | None = None
    ):
        self._fileobj = fileobj
        self._start = fileobj.tell()
        self.encoding = encoding
        self.compressed = compressed
        self.limits = limits
        self._wide = encoding in WIDE_ENCODINGS
        self._gzip = open_binary(fileobj, compressed)
        self._raw = self._gzip
        if limits is not None:
            self._raw = _Bounded(self._gzip, limits, _char_width(encoding))
        # TextIOWrapper reads faster from a native buffered file than from any Python-level
        # wrapper, so io objects are used as they are (and detached, not closed, at the end).
        buffer = self._raw if isinstance(self._raw, io.BufferedIOBase) else _Guarded(self._raw)
        self._text = io.TextIOWrapper(buffer, encoding=encoding, errors="strict", newline="")
        self._text._CHUNK_SIZE = READ_CHUNK
        self.lines: Iterator[str] = _nul_checked(self._text) if self._wide else self._text

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(self._text.buffer, (_Guarded, _Bounded)):
            self._text.close()  # closes only the view, not the caller's file
        elif not self._raw.closed:
            self._text.detach()  # leaves the caller's file open
        if self.compressed:
            self._gzip.close()

    def _bytes_only(self) -> Limits | None:
        # Re-reads check the total only: the parsing pass reports a long line with its number.
        if self.limits is None:
            return None
        return Limits(self.limits.max_bytes, self.limits.max_bytes)

    def check_nul(self) -> None:
        """Raise if the file holds a NUL byte (which no database text column can store).

        A separate pass over the bytes before parsing: memchr over 1 MB blocks costs ~0.3 ms per
        MB (~2 ms decompressed from gzip), far less than checking every line while parsing.
        UTF-16/32 text is full of 0 bytes, so there the lines themselves are checked.
        """
        if self._wide:
            return
        self._fileobj.seek(self._start)
        gz = open_binary(self._fileobj, self.compressed)
        limits = self.limits
        # Encodings are the parsing pass's business: it knows the line to name.
        raw = gz if limits is None else _Bounded(gz, dataclasses.replace(limits, utf8_check=False))
        try:
            while block := raw.read(1 << 20):
                if b"\x00" in block:
                    raise _NulByte
        except _GZIP_ERRORS:
            pass  # the parsing pass reports broken gzip data with its line
        finally:
            if self.compressed:
                gz.close()
            self._fileobj.seek(self._start)

    @staticmethod
    def is_bad_char(exc: BaseException) -> bool:
        """A read that failed on a byte that is no text in the encoding, or a NUL."""
        return isinstance(exc, (UnicodeDecodeError, _NulByte))

    def problem(self, exc: BaseException, lines_read: int) -> TextProblem:
        """Turn an exception raised while reading into a TextProblem that names the line."""
        if isinstance(exc, TextProblem):
            return exc
        if isinstance(exc, (UnicodeDecodeError, _NulByte)):
            found = self._locate()
            if found:
                return found
            return TextProblem(
                f"The file has bytes that are not valid {self.encoding} text "
                f"after line {lines_read}.",
                lines_read + 1,
            )
        if isinstance(exc, _OverLimit):
            return _over_limit_problem(exc, lines_read, self.compressed)
        if isinstance(exc, _GZIP_ERRORS):
            return TextProblem(
                f"The gzip data is damaged or cut short after line {lines_read} ({exc}).",
                lines_read + 1,
            )
        raise exc

    @contextlib.contextmanager
    def marked_lines(self) -> Iterator[io.TextIOWrapper]:
        """The file's lines again from the start, each bad byte and NUL matching BAD_CHAR
        instead of failing: only on the error path, to say where the first one is."""
        self._fileobj.seek(self._start)
        raw = open_binary(self._fileobj, self.compressed)
        limits = self._bytes_only()
        text = io.TextIOWrapper(
            _Guarded(raw) if limits is None else _Bounded(raw, limits),
            encoding=self.encoding,
            errors="batchhub.mark",
            newline="",
        )
        try:
            yield text
        finally:
            text.close()
            if self.compressed:
                raw.close()

    def _locate(self) -> TextProblem | None:
        try:
            with self.marked_lines() as text:
                for number, line in enumerate(text, 1):
                    match = _BAD_CHAR.search(line)
                    if match is not None:
                        return bad_char_problem(number, self.encoding, match)
        except (*_GZIP_ERRORS, _OverLimit):
            return None
        return None


def bad_char_problem(number: int, encoding: str, match: re.Match) -> TextProblem:
    """The problem of line `number`, whose `match` of BAD_CHAR is its first bad byte or NUL."""
    problem = _bad_char_message(number, encoding, match)
    problem.bad_char = True
    return problem


def _bad_char_message(number: int, encoding: str, match: re.Match) -> TextProblem:
    char = match.start() + 1
    if match.group() == "\x00":
        return TextProblem(
            f"Line {number} contains a NUL character (at character {char}); "
            "is this really a text file?",
            number,
        )
    return TextProblem(
        _undecodable_message(number, encoding, ord(match.group()) - 0xDC00, char), number
    )


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):,.1f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def _over_limit_problem(exc: _OverLimit, lines_read: int, compressed: bool) -> TextProblem:
    problem = _over_limit_message(exc, lines_read, compressed)
    if exc.kind != "utf-8":  # a mixed encoding is the data's fault, not a bound's
        problem.stop = Stop(exc.kind, exc.limit, compressed)
    return problem


def _over_limit_message(exc: _OverLimit, lines_read: int, compressed: bool) -> TextProblem:
    if exc.kind == "line":
        line = exc.line or lines_read + 1
        return TextProblem(
            f"Line {line} is longer than {_megabytes(exc.limit)}, the most a row can take "
            "(its columns times the field size limit); reading stopped there. "
            "Is this really a CSV or JSONL file?",
            line,
        )
    if exc.kind == "utf-8":
        return TextProblem(
            f"Line {exc.line} is UTF-8 text, but the start of the file is not: the file mixes "
            "encodings. Save the whole file as UTF-8 and upload it again.",
            exc.line,
        )
    line = exc.line or lines_read + 1
    if exc.kind == "blank":
        return TextProblem(
            f"The file has more than {exc.limit:,} blank lines; reading stopped in line "
            f"{line:,}. This does not look like a table.",
            line,
        )
    if exc.kind == "time":
        return TextProblem(
            "Reading the file took longer than the time allowed for checking an upload; "
            f"reading stopped in line {line:,}. Split it into smaller files.",
            line,
        )
    what = "decompresses to" if compressed else "holds"
    return TextProblem(
        f"The file {what} more than {_megabytes(exc.limit)} of text, the limit; reading "
        f"stopped in line {line:,}. Split it into smaller files.",
        line,
    )
