"""Documents of a case: a scanned consent form, a medical report, a travel document.

Each is encrypted with the case's data key while it streams in, 64 KiB at a time (AES-256-GCM, a
nonce per chunk: an 8-byte random prefix and the chunk's number; the document's id, the chunk's
number and whether it is the last in each chunk's associated data, so chunks cannot be reordered,
swapped between documents or cut off), and stored in the blob store (``reintegration/blobs.py``)
under a random key. It is never held whole in memory, in clear or not, and no file name is kept.
Its type is told by its first bytes, never by a name or a declared type: PDF, JPEG, PNG.
The erasure of the case destroys the key and deletes the blobs.
"""

from __future__ import annotations

import asyncio
import enum
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from reintegration.blobs import BlobStore
from reintegration.crypto import DataKey

MAGIC = b"RODOC1"
PREFIX_BYTES = 8
CHUNK = 64 * 1024
TAG = 16
HEADER = len(MAGIC) + PREFIX_BYTES


class DocumentKind(enum.StrEnum):
    consent_form = "consent-form"
    identity_document = "identity-document"
    medical = "medical-report"
    legal = "legal-document"
    other = "other"


# What a document may be, by its first bytes: (the bytes it starts with, its media type, its extension).
TYPES: tuple[tuple[bytes, str, str], ...] = (
    (b"%PDF-", "application/pdf", "pdf"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
)
SNIFF_BYTES = max(len(start) for start, _, _ in TYPES)


class Refused(Exception):
    """An upload refused before or while it was stored: nothing of it is kept."""


class TooLarge(Refused):
    pass


class UnknownType(Refused):
    pass


def media_type_of(first: bytes) -> tuple[str, str] | None:
    """The media type and extension of a document starting with ``first``; None if not one we take."""
    for start, media, extension in TYPES:
        if first.startswith(start):
            return media, extension
    return None


def _aad(document_id: str, index: int, final: bool) -> bytes:
    return f"{document_id}|{index}|{int(final)}".encode()


def seal_stream(key: DataKey, document_id: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The document's chunks, encrypted as they come (the last one marked)."""
    prefix = os.urandom(PREFIX_BYTES)
    aead = key.aead
    yield MAGIC + prefix
    pending = bytearray()
    index = 0
    for chunk in chunks:
        pending += chunk
        while len(pending) > CHUNK:  # keep at least one byte back: the last chunk is marked as such
            piece = bytes(pending[:CHUNK])
            del pending[:CHUNK]
            yield aead.encrypt(prefix + index.to_bytes(4, "big"), piece, _aad(document_id, index, False))
            index += 1
    yield aead.encrypt(prefix + index.to_bytes(4, "big"), bytes(pending), _aad(document_id, index, True))


class Damaged(Exception):
    """The blob is not a whole document sealed with this key for this id (altered, cut, or erased)."""


def open_stream(key: DataKey, document_id: str, blob: Iterable[bytes]) -> Iterator[bytes]:
    """The document's bytes in clear, a chunk at a time; ``Damaged`` at the first chunk that fails."""
    from cryptography.exceptions import InvalidTag

    aead = key.aead
    pending = bytearray()
    prefix: bytes | None = None
    index = 0
    sealed = CHUNK + TAG
    for chunk in blob:
        pending += chunk
        if prefix is None:
            if len(pending) < HEADER:
                continue
            if bytes(pending[: len(MAGIC)]) != MAGIC:
                raise Damaged("not a sealed document")
            prefix = bytes(pending[len(MAGIC) : HEADER])
            del pending[:HEADER]
        while len(pending) > sealed:  # more follows: this one is not the last
            piece = bytes(pending[:sealed])
            del pending[:sealed]
            try:
                yield aead.decrypt(prefix + index.to_bytes(4, "big"), piece, _aad(document_id, index, False))
            except InvalidTag:
                raise Damaged(f"chunk {index}") from None
            index += 1
    if prefix is None:
        raise Damaged("not a sealed document")
    try:
        yield aead.decrypt(prefix + index.to_bytes(4, "big"), bytes(pending), _aad(document_id, index, True))
    except InvalidTag:
        raise Damaged(f"chunk {index} (or cut short)") from None


@dataclass(frozen=True)
class Stored:
    media_type: str
    extension: str
    size: int  # the document's bytes (in clear)
    stored_bytes: int  # what the store holds (sealed)


_END = object()


async def store_upload(
    store: BlobStore,
    key: DataKey,
    *,
    document_id: str,
    blob_key: str,
    body: AsyncIterator[bytes],
    max_bytes: int,
) -> Stored:
    """Store an upload arriving as ``body``: its type told by its first bytes (``UnknownType``
    before anything is stored), encrypted while it streams to the store in a thread of its own,
    refused with ``TooLarge`` as soon as it passes ``max_bytes``. Refused or broken, nothing of it
    is left in the store. At most a few chunks are in memory at once."""
    first = bytearray()
    async for chunk in body:
        first += chunk
        if len(first) >= SNIFF_BYTES:
            break
    found = media_type_of(bytes(first))
    if found is None:
        raise UnknownType()
    size = len(first)
    if size > max_bytes:
        raise TooLarge()
    passing: queue.Queue[object] = queue.Queue(maxsize=8)
    stored: list[int] = []
    failed: list[BaseException] = []

    abandoned = threading.Event()  # the request is gone (cancelled): the writer gives up, storing nothing

    def chunks() -> Iterator[bytes]:
        while True:
            try:
                item = passing.get(timeout=0.5)
            except queue.Empty:
                if abandoned.is_set():
                    raise Refused() from None
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def write() -> None:
        try:
            stored.append(store.put(blob_key, seal_stream(key, document_id, chunks())))
        except BaseException as exc:  # noqa: BLE001 - handed to the request's task
            failed.append(exc)

    writer = threading.Thread(target=write, name="document-upload", daemon=True)
    writer.start()

    async def give(item: object) -> None:
        while writer.is_alive():  # never blocking the event loop: the queue is tried, not waited on
            try:
                passing.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.005)

    try:
        await give(bytes(first))
        async for chunk in body:
            size += len(chunk)
            if size > max_bytes:
                raise TooLarge()
            if chunk:
                await give(chunk)
        await give(_END)
    except BaseException as exc:
        abandoned.set()
        if isinstance(exc, Exception):
            await give(exc)
            await asyncio.to_thread(writer.join)
        raise
    await asyncio.to_thread(writer.join)
    if failed:
        raise failed[0]
    media, extension = found
    return Stored(media_type=media, extension=extension, size=size, stored_bytes=stored[0])
