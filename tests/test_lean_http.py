"""The benchmarks' HTTP client (benchmarks/lean_http.py) against real servers on 127.0.0.1: the real
API app under uvicorn (what ``make bench`` asks of it) and a raw socket server for what uvicorn
would not do on demand (closing an idle connection, chunked bodies, broken answers)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from benchmarks.lean_http import LeanHTTP, LeanHTTPError, parse_head
from tests.conftest import free_port, served

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def floor_url() -> AsyncIterator[str]:
    """The floor app (benchmarks/floor.py) under uvicorn, with h11 as ``make bench`` serves it."""
    from benchmarks.floor import app

    async with served(app) as url:
        yield url


async def test_it_speaks_to_uvicorn_on_one_kept_alive_connection(floor_url: str) -> None:
    heard: list[tuple[str, str]] = []
    async with LeanHTTP(floor_url, on_response=lambda m, p, s: heard.append((m, p))) as http:
        first = await http.get("/", params={"q": "x y"})
        writer = http._writer
        second = await http.post("/", json={"a": 1}, headers={"Authorization": "Bearer t"})
        missing = await http.get("/nowhere")
        assert http._writer is writer, "the same connection each time"
    assert (first.status_code, first.json()) == (200, {"status": "ok"})
    assert first.headers["content-type"] == "application/json"
    assert second.status_code == 405 and "Method Not Allowed" in second.text
    assert missing.status_code == 404
    assert heard == [("GET", "/"), ("POST", "/"), ("GET", "/nowhere")], "paths without their query"


@asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head + await reader.readexactly(length)


async def test_a_request_on_a_connection_the_server_closed_while_idle_goes_once_more_on_a_new_one() -> None:
    received: list[bytes] = []

    async def answer_once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # as uvicorn does with a connection idle past its keep-alive timeout

    async with raw_server(answer_once_then_close) as url, LeanHTTP(url) as http:
        assert (await http.post("/a", json={"n": 1})).text == "ok"
        await asyncio.sleep(0.05)
        assert (await http.post("/b", json={"n": 2})).text == "ok"
    assert [r.split(b" ")[1] for r in received] == [b"/a", b"/b"], "each sent once, and read once"
    assert received[1].endswith(b'{"n":2}')


async def test_a_chunked_answer_is_read_whole() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5;x=1\r\n": 1}\r\n0\r\n\r\n')
        await writer.drain()

    async with raw_server(chunked) as url, LeanHTTP(url) as http:
        assert (await http.get("/")).json() == {"a": 1}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_reused_connection_closed_unanswered_sends_a_get_again_never_a_post(method: str) -> None:
    """The server reads the second request on a connection and closes it without a word: it may have
    acted on it. A GET goes once more, on a new connection; a POST is an error, sent once."""
    received: list[bytes] = []

    async def second_request_unanswered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append((await read_request(reader)).split(b" ")[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        received.append((await read_request(reader)).split(b" ")[1])
        writer.close()

    async with raw_server(second_request_unanswered) as url, LeanHTTP(url) as http:
        assert (await http.request(method, "/1")).text == "ok"
        if method == "GET":
            assert (await http.get("/2")).text == "ok"
            assert received == [b"/1", b"/2", b"/2"]
        else:
            with pytest.raises(LeanHTTPError, match="a POST is not sent again"):
                await http.post("/2", json={})
            assert received == [b"/1", b"/2"]


async def test_interim_answers_are_skipped() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()

    async with raw_server(early_hints) as url, LeanHTTP(url) as http:
        answer = await http.post("/", json={})
        assert (answer.status_code, answer.text) == (201, "done")


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed on a new connection without a word
        b"HTTP/1.1 200 OK\r\nContent-Le",  # broken in the middle of the head
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # broken in the middle of the body
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",  # not HTTP/1.1
        b"HTTP/1.1 200 OK\r\n\r\nno length",  # neither Content-Length nor chunks
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",  # not what a request of ours asks for
    ],
)
async def test_a_broken_answer_is_an_error_sent_once_and_the_connection_is_dropped(answer: bytes) -> None:
    connections = 0

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with raw_server(broken) as url, LeanHTTP(url) as http:
        with pytest.raises(LeanHTTPError):
            await http.get("/")
        assert http._writer is None
    assert connections == 1, "a new connection's request is never sent again"


async def test_a_cancelled_request_leaves_no_answer_behind_for_the_next() -> None:
    async def echo_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                path = (await read_request(reader)).split(b" ")[1]
            except asyncio.IncompleteReadError:
                return
            if path == b"/slow":
                await asyncio.sleep(0.3)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
            await writer.drain()

    async with raw_server(echo_slowly) as url, LeanHTTP(url) as http:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(http.get("/slow"), 0.1)
        await asyncio.sleep(0.4)  # the slow answer has arrived, on the connection given up
        assert (await http.get("/fast")).text == "/fast"


async def test_a_closed_client_takes_no_request(floor_url: str) -> None:
    http = LeanHTTP(floor_url)
    assert (await http.get("/")).status_code == 200
    await http.aclose()
    with pytest.raises(LeanHTTPError, match="closed"):
        await http.get("/")


async def test_a_server_that_does_not_answer_in_time_is_an_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with raw_server(silent) as url, LeanHTTP(url, timeout=0.2) as http:
        with pytest.raises(LeanHTTPError, match="no answer within 0.2 s"):
            await http.get("/")


async def test_nothing_listening_is_an_error() -> None:
    with pytest.raises(LeanHTTPError, match="cannot connect"):
        await LeanHTTP(f"http://127.0.0.1:{free_port()}").get("/")


@pytest.mark.parametrize("url", ["https://127.0.0.1:1", "http://127.0.0.1", "http://127.0.0.1:1/api", "localhost:1"])
def test_only_a_plain_http_address_is_taken(url: str) -> None:
    with pytest.raises(ValueError):
        LeanHTTP(url)


def test_a_header_or_a_path_that_would_break_the_request_is_refused() -> None:
    http = LeanHTTP("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="line break"):
        http.encode("GET", "/", None, {"X-A": "b\r\nX-Injected: c"}, None)
    with pytest.raises(ValueError, match="from the root"):
        http.encode("GET", "v1/cases", None, None, None)
    with pytest.raises(ValueError, match="without spaces or control characters"):
        http.encode("GET", "/v1/cases HTTP/1.1\r\nX-Injected: c", None, None, None)
    for own in ("Host", "content-length", "Transfer-Encoding"):
        with pytest.raises(ValueError, match="written by the client itself"):
            http.encode("GET", "/", None, {own: "1"}, None)
    assert http.encode("POST", "/x", {"a": [1]}, {"X-A": "b"}, {"n": [1, 2]}) == (
        b"POST /x?n=1&n=2 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 9\r\n"
        b'Content-Type: application/json\r\nX-A: b\r\n\r\n{"a":[1]}'
    )


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", b"junk\r\n\r\n"],
)
def test_a_head_that_is_not_http_is_refused(head: bytes) -> None:
    with pytest.raises(ValueError):
        parse_head(head)


def test_a_head_is_read_with_its_names_in_lower_case() -> None:
    assert parse_head(b'HTTP/1.1 201 Created\r\nETag: "3"\r\nX-Two: a: b\r\n\r\n') == (
        201,
        {"etag": '"3"', "x-two": "a: b"},
    )


async def test_the_benchmark_shares_its_connections_among_the_servers_processes() -> None:
    """``hammer`` against uvicorn with two workers: its connections are opened again until each
    process holds half of them (``connections_by_process`` counts them from /proc)."""
    from benchmarks.bench import connections_by_process, hammer

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "benchmarks.floor:app", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # both workers up and serving
            try:
                async with LeanHTTP(url) as probe:
                    await probe.get("/")
                if len(connections_by_process(proc.pid, port)) == 2:
                    break
            except LeanHTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "uvicorn's workers did not start"
            await asyncio.sleep(0.2)
        async with LeanHTTP(url) as one:
            assert (await one.get("/")).status_code == 200
            assert sum(connections_by_process(proc.pid, port)) == 1
        spread = lambda: connections_by_process(proc.pid, port)  # noqa: E731
        found = await hammer(url, "/", {}, 8, 0.3, spread=spread, processes=2)
        assert found["connections_by_process"] == [4, 4]
        assert found["requests"] > 0 and found["failures"] == {}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
