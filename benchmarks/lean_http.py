"""The load generator's HTTP client: HTTP/1.1 on one kept-alive connection, on asyncio's streams.

``make bench`` runs its clients on the same two cores as the stack it measures, so what a client
spends per request is taken from the servers. httpx spent about 1.0 ms of CPU per request against
the floor app, where the floor app itself spent 0.26: the clients, not the server, set the floor's
pace, and their CPU during the journeys was 2.4 times bare Temporal's client's. This one spends
about 0.12 ms (measured the same way), so the servers' own costs set what is measured. Bare
Temporal's client is Temporal's own (its core in Rust) in every run.

It does what the benchmark's clients ask of it, nothing more: ``get``/``post`` with a JSON body,
headers and query parameters, a response with ``status_code``, ``headers`` (names in lower case),
``text`` and ``json()`` (what tests/journey.py's ``Journey`` reads), bodies by Content-Length or
chunked, interim (1xx) answers skipped. A kept-alive connection the server has closed while it was
idle (uvicorn does after 5 s) is replaced before a request is sent on it. A request is sent again,
once, on a new connection only if it is a GET that got no byte of an answer on a reused connection:
a POST that got none may still have been read and acted on, so it is an error. Any other broken
connection, a timeout or a cancellation drops the connection (the next request opens another) and
is an error. Not for use outside the benchmarks: no TLS, no redirects, no proxies, no cookies.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

NO_BODY = (204, 304)  # answers that never have a body
SAFE_TO_REPEAT = frozenset({"GET", "HEAD"})  # sent again after a reused connection closed unanswered
OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})  # the client writes these itself


class LeanHTTPError(Exception):
    """The connection broke, the server answered something that is not HTTP/1.1, or it took too long."""


class Response:
    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class LeanHTTP:
    """One connection to ``base_url`` (``http://host:port``), opened at the first request.
    ``on_response(method, path, seconds)`` hears of each answer (``path`` without its query)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 120,
        headers: Mapping[str, str] | None = None,
        on_response: Callable[[str, str, float], None] | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None or url.port is None or url.path not in ("", "/"):
            raise ValueError(f"an http://host:port address, not {base_url!r}")
        self.host, self.port = url.hostname, url.port
        self.timeout, self.headers, self.on_response = timeout, dict(headers or {}), on_response
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()  # one request at a time on the one connection
        self._closed = False

    async def __aenter__(self) -> LeanHTTP:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection; the client takes no request after it."""
        self._closed = True
        await self.disconnect()

    async def disconnect(self) -> None:
        """Close the connection; the next request opens another."""
        writer = self._writer
        self._drop()
        if writer is not None:
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def _drop(self) -> None:
        """Let the connection go (the next request opens another)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()

    async def get(
        self, path: str, *, headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None
    ) -> Response:
        return await self.request("GET", path, headers=headers, params=params)

    async def post(
        self,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Response:
        return await self.request("POST", path, json=json, headers=headers, params=params)

    def encode(
        self, method: str, path: str, json: Any, headers: Mapping[str, str] | None, params: Mapping[str, Any] | None
    ) -> bytes:
        """The request as it goes on the wire."""
        if not path.startswith("/") or any(c <= " " or c == "\x7f" for c in path):
            raise ValueError(f"a path from the root, without spaces or control characters, not {path!r}")
        target = f"{path}?{urlencode(params, doseq=True)}" if params else path
        body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if json is not None:
            lines.append("Content-Type: application/json")
        for name, value in {**self.headers, **(headers or {})}.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"a header may not hold a line break: {name!r}")
            if name.lower() in OWN_HEADERS:
                raise ValueError(f"{name} is written by the client itself")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Response:
        data = self.encode(method, path, json, headers, params)
        async with self._lock:
            if self._closed:
                raise LeanHTTPError("this client is closed")
            began = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    response = await self._exchange(method, data)
            except TimeoutError:
                self._drop()
                raise LeanHTTPError(f"{method} {path}: no answer within {self.timeout:g} s") from None
            except BaseException:
                # Cancelled, or broken: an answer left unread would be taken for the next request's.
                self._drop()
                raise
            if self.on_response is not None:
                self.on_response(method, path, time.perf_counter() - began)
            return response

    async def _exchange(self, method: str, data: bytes) -> Response:
        reader, writer = self._reader, self._writer
        if reader is not None and writer is not None and (reader.at_eof() or writer.is_closing()):
            self._drop()  # closed by the server while idle: nothing was sent on it
        reused = self._writer is not None
        if not reused:
            await self._connect()
        try:
            return await self._send(data)
        except _ClosedBeforeAnswer:
            self._drop()
            if not reused:
                raise LeanHTTPError("the server closed a new connection without an answer") from None
            if method not in SAFE_TO_REPEAT:
                raise LeanHTTPError(
                    f"the connection closed before any answer; a {method} is not sent again (it may have been read)"
                ) from None
        await self._connect()  # a GET, on a connection the server closed as it was sent: once more
        try:
            return await self._send(data)
        except _ClosedBeforeAnswer:
            self._drop()
            raise LeanHTTPError("the server closed a new connection without an answer") from None

    async def _connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise LeanHTTPError(f"cannot connect to {self.host}:{self.port}: {exc}") from None

    async def _send(self, data: bytes) -> Response:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            writer.write(data)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _ClosedBeforeAnswer from None
            self._drop()
            raise LeanHTTPError("the connection broke in the middle of an answer's head") from None
        except (ConnectionResetError, BrokenPipeError):
            raise _ClosedBeforeAnswer from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            self._drop()
            raise LeanHTTPError(f"the connection broke: {exc}") from None
        try:
            status, headers = parse_head(head)
            while 100 <= status < 200:  # interim answers (100 Continue, 103 Early Hints): the final one follows
                if status == 101:
                    raise ValueError("a switch of protocols")
                status, headers = parse_head(await reader.readuntil(b"\r\n\r\n"))
            content = b"" if status in NO_BODY else await self._body(reader, headers)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            self._drop()
            raise LeanHTTPError(f"a broken answer: {exc}") from None
        if headers.get("connection", "").lower() == "close":
            self._drop()
        return Response(status, headers, content)

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if chunk[-2:] != b"\r\n":
                    raise ValueError("a chunk that does not end its line")
                if size == 0:
                    return b"".join(parts)
                parts.append(chunk[:-2])
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        raise ValueError("an answer with neither Content-Length nor chunks")


class _ClosedBeforeAnswer(Exception):
    """The connection was closed before any byte of an answer came back."""


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (names in lower case) of an answer's head, its blank line included."""
    status_line, *lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest.split(" ", 1)[0]
    if version != "HTTP/1.1" or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1.1 status line: {status_line[:40]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ValueError(f"not a header line: {line[:40]!r}")
        headers[name.lower()] = value.strip()
    return int(code), headers
