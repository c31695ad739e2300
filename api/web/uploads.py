"""A document sent from a workspace page: a ``multipart/form-data`` form whose small fields (the CSRF
token, the kind) come before the file, read as it streams, so the document goes on to be encrypted
and stored without ever being whole in memory or written to a temporary file in clear (as a framework's
form parsing would). The file's name, which the browser sends, is read past and kept nowhere."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from reintegration.documents import Refused

MAX_FIELD = 4096  # a small field's bytes at most (a token, a kind)
MAX_FIELDS = 8


class BadForm(Refused):
    """Not a form this page sent: no boundary, fields out of order, a field too long, cut short."""


@dataclass
class _State:
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    name: str = ""
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)
    fields: dict[str, str] = field(default_factory=dict)
    file_started: bool = False
    file_done: bool = False
    chunks: deque[bytes] = field(default_factory=deque)
    error: str | None = None


def _disposition(value: bytes) -> tuple[str, bool]:
    """The part's field name, and whether it is a file (the file's name itself is not kept)."""
    _, options = parse_options_header(value)
    return options.get(b"name", b"").decode("utf-8", "replace"), b"filename" in options


async def read_form_upload(request: Request, *, file_field: str) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """The small fields before the file ``file_field``, and the file's bytes as they arrive."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadForm("no boundary")
    state = _State()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        if bytes(state.header_field).lower() == b"content-disposition":
            state.name, state.is_file = _disposition(bytes(state.header_value))
        state.header_field.clear()
        state.header_value.clear()

    def on_headers_finished() -> None:
        if state.name == file_field:
            state.file_started = True
        elif state.file_started or state.is_file:
            state.error = "a field after the file, or another file"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.name == file_field and not state.file_done:
            state.chunks.append(bytes(data[start:end]))
            return
        state.value += data[start:end]
        if len(state.value) > MAX_FIELD:
            state.error = "a field too long"

    def on_part_end() -> None:
        if state.name == file_field:
            state.file_done = True
        elif state.error is None:
            if len(state.fields) >= MAX_FIELDS:
                state.error = "too many fields"
            state.fields[state.name] = bytes(state.value).decode("utf-8", "replace")
        state.value.clear()
        state.name, state.is_file = "", False

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    stream = request.stream().__aiter__()
    ended = False

    async def feed() -> None:
        nonlocal ended
        try:
            chunk = await stream.__anext__()
        except StopAsyncIteration:
            ended = True
            return
        try:
            parser.write(chunk)
        except ValueError:  # python-multipart's MultipartParseError: not a well-formed form
            raise BadForm("malformed") from None
        if state.error is not None:
            raise BadForm(state.error)

    while not state.file_started and not ended:
        await feed()
    if not state.file_started:
        raise BadForm("no file")

    async def file() -> AsyncIterator[bytes]:
        while True:
            while state.chunks:
                yield state.chunks.popleft()
            if state.file_done:
                return
            if ended:  # the body ended before the file's closing boundary: a document cut short
                raise BadForm("cut short")
            await feed()

    return dict(state.fields), file()
