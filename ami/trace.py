"""Reading recorded AMI traffic (`*.ami` files): raw `Key: Value` lines, a blank line between
messages, `#` lines as annotations (`# t=<seconds>` gives the arrival time of what follows).

CRLF and LF files are both accepted. The byte stream goes through the same `AmiParser` as live
traffic, so replay exercises the real framing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ami.framing import AmiParser


def iter_trace(data: bytes) -> Iterator[tuple[float, dict[str, str]]]:
    """Yield (arrival time, message) for every received message of a trace."""
    parser = AmiParser()
    at = 0.0
    pending: list[bytes] = []

    def flush() -> list[dict[str, str]]:
        if not pending:
            return []
        chunk = b"".join(pending)
        pending.clear()
        return parser.feed(chunk)

    for raw in data.splitlines(keepends=True):
        if raw.startswith(b"#"):
            if raw.startswith(b"# t="):
                for msg in flush():
                    yield at, msg
                try:
                    at = float(raw[4:].strip())
                except ValueError:
                    pass  # a malformed annotation keeps the previous time
            continue
        # normalise LF-only files to the CRLF the wire uses
        line = raw.rstrip(b"\r\n")
        pending.append(line + b"\r\n")
    pending.append(b"\r\n")  # a file may end without the final blank line
    for msg in flush():
        yield at, msg


def read_trace(path: str | Path) -> list[tuple[float, dict[str, str]]]:
    return list(iter_trace(Path(path).read_bytes()))


def wire_bytes(path: str | Path) -> bytes:
    """The exact byte stream a client received (annotations removed): for ingest benchmarks
    and for servers in tests that replay a recorded session."""
    data = Path(path).read_bytes()
    return b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"#"))
