"""The blob stores behind one interface (a folder; an S3-compatible server, moto's, run here) and the
documents' stream encryption: whole or nothing stored, tampering and truncation found."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from reintegration import documents
from reintegration.blobs import BlobMissing, BlobStore, LocalBlobStore, S3BlobStore
from reintegration.crypto import DataKey
from tests.conftest import free_port

BUCKET = "reintegration-documents"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's server mode) on a free port, with the bucket made."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def s3_client(endpoint: str) -> object:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3BlobStore(s3_client(endpoint), BUCKET, prefix=f"t-{os.urandom(4).hex()}/")


def test_a_blob_is_stored_read_and_deleted(store: BlobStore) -> None:
    data = [os.urandom(1000), os.urandom(9 * 1024 * 1024), b"end"]  # over one S3 part
    assert store.put("doc-1", iter(data)) == sum(map(len, data))
    assert store.exists("doc-1") and b"".join(store.get("doc-1")) == b"".join(data)
    store.delete("doc-1")
    assert not store.exists("doc-1")
    with pytest.raises(BlobMissing):
        b"".join(store.get("doc-1"))
    store.delete("doc-1")  # again: nothing


def test_a_broken_upload_leaves_nothing(store: BlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield os.urandom(6 * 1024 * 1024)
        yield os.urandom(6 * 1024 * 1024)
        raise documents.TooLarge()

    with pytest.raises(documents.TooLarge):
        store.put("doc-2", broken())
    assert not store.exists("doc-2")
    if isinstance(store, LocalBlobStore):
        assert list(store.folder.iterdir()) == []  # no partial file either
    else:
        uploads = store.client.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix).get("Uploads", [])
        assert uploads == []  # the multipart upload was aborted


def test_keys_are_ids_only(tmp_path: Path) -> None:
    local = LocalBlobStore(tmp_path / "blobs")
    for bad in ("../x", "", "a/b", ".hidden", "x" * 200):
        with pytest.raises(ValueError):
            local.put(bad, iter([b"x"]))


KEY = DataKey("k-1", os.urandom(32))


def sealed(document_id: str, data: bytes, piece: int = 1000) -> bytes:
    return b"".join(documents.seal_stream(KEY, document_id, (data[i : i + piece] for i in range(0, len(data), piece))))


@pytest.mark.parametrize(
    "size", [0, 1, documents.CHUNK - 1, documents.CHUNK, documents.CHUNK + 1, 3 * documents.CHUNK + 7]
)
def test_the_stream_encryption_round_trips_at_every_edge(size: int) -> None:
    data = os.urandom(size)
    blob = sealed("d1", data)
    # The plaintext is not in the blob (checked from 16 bytes: a byte or two of random data can
    # appear in any ciphertext by chance; 16 cannot).
    assert size < 16 or data[:64] not in blob
    back = b"".join(documents.open_stream(KEY, "d1", (blob[i : i + 777] for i in range(0, len(blob), 777))))
    assert back == data


def test_tampering_truncation_and_another_documents_id_are_found() -> None:
    data = os.urandom(3 * documents.CHUNK + 100)
    blob = bytearray(sealed("d1", data))
    with pytest.raises(documents.Damaged):
        b"".join(documents.open_stream(KEY, "d2", [bytes(blob)]))  # sealed for another document
    cut = bytes(blob[: documents.HEADER + 2 * (documents.CHUNK + documents.TAG)])
    with pytest.raises(documents.Damaged):
        b"".join(documents.open_stream(KEY, "d1", [cut]))  # cut after a whole chunk: the last is missing
    blob[documents.HEADER + 10] ^= 1
    with pytest.raises(documents.Damaged):
        b"".join(documents.open_stream(KEY, "d1", [bytes(blob)]))
    with pytest.raises(documents.Damaged):
        b"".join(documents.open_stream(KEY, "d1", [b"not a document"]))
    other = DataKey("k-2", os.urandom(32))
    with pytest.raises(documents.Damaged):
        b"".join(documents.open_stream(other, "d1", [sealed("d1", data)]))


def test_types_are_told_by_content() -> None:
    assert documents.media_type_of(b"%PDF-1.7\n...") == ("application/pdf", "pdf")
    assert documents.media_type_of(b"\xff\xd8\xff\xe0") == ("image/jpeg", "jpg")
    assert documents.media_type_of(b"\x89PNG\r\n\x1a\n....") == ("image/png", "png")
    for other in (b"", b"PK\x03\x04", b"<html>", b"GIF89a", b"%PD"):
        assert documents.media_type_of(other) is None
