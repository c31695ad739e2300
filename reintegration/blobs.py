"""Where documents' bytes are kept: one interface, two stores.

- ``LocalBlobStore``: files under ``data/blobs/`` on the embedded default; a blob is written to a
  temporary file beside its place and renamed into it once whole (``os.replace``), so it is there
  entirely or not at all.
- ``S3BlobStore``: an S3-compatible object store in production (AWS S3, MinIO, Ceph...); a blob is a
  multipart upload completed once whole, aborted otherwise, so it too is there entirely or not at all.

The bytes given to a store are already encrypted with the case's key (``reintegration/documents.py``):
a store never sees a document in clear, nor its name (a blob's key is a random id).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from reintegration.settings import Settings

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
READ_CHUNK = 256 * 1024
S3_PART = 8 * 1024 * 1024  # S3's parts are at least 5 MiB (the last excepted)


def _store_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


# What a store raises when it cannot be reached or refuses (the API answers 503: nothing stored).
STORE_ERRORS = _store_errors()


class BlobMissing(Exception):
    """No blob under that key (deleted with its case, or never stored whole)."""


class BlobStore(Protocol):
    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the chunks under ``key`` as one blob, whole or not at all; the bytes stored. An
        exception from ``chunks`` (a refused or broken upload) leaves nothing stored."""
        ...

    def get(self, key: str) -> Iterator[bytes]:
        """The blob's bytes, a chunk at a time; ``BlobMissing`` if there is none."""
        ...

    def delete(self, key: str) -> None:
        """Delete the blob (nothing if there is none)."""
        ...

    def exists(self, key: str) -> bool: ...


def _checked(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError("a blob key is a short id of letters, digits, '.', '_' and '-'")
    return key


class LocalBlobStore:
    """Blobs as files in a folder of the embedded default's data directory (owner-only)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / _checked(key)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        target = self._path(key)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".partial-")
        size = 0
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return size

    def get(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        with handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self) -> list[str]:
        """Every blob stored whole (for tests and housekeeping)."""
        return sorted(p.name for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))


class S3BlobStore:
    """Blobs as objects of one bucket of an S3-compatible store."""

    def __init__(self, client: Any, bucket: str, *, prefix: str = "documents/") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        import boto3

        secret = settings.s3_secret_access_key_file.read_text().strip() if settings.s3_secret_access_key_file else None
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret,
        )
        return cls(client, settings.s3_bucket)

    def _name(self, key: str) -> str:
        return self.prefix + _checked(key)

    def put(self, key: str, chunks: Iterable[bytes]) -> int:
        name = self._name(key)
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        parts: list[dict[str, Any]] = []
        pending, size = bytearray(), 0
        try:
            for chunk in chunks:
                pending += chunk
                size += len(chunk)
                if len(pending) >= S3_PART:
                    parts.append(self._part(name, upload, len(parts) + 1, bytes(pending)))
                    pending.clear()
            parts.append(self._part(name, upload, len(parts) + 1, bytes(pending)))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)
            except STORE_ERRORS:
                pass  # the original error matters; a lifecycle rule aborts what is left (README)
            raise
        return size

    def _part(self, name: str, upload: str, number: int, data: bytes) -> dict[str, Any]:
        answer = self.client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload, PartNumber=number, Body=data)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def get(self, key: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobMissing(key) from None
            raise
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def blob_store(settings: Settings) -> BlobStore:
    """The store the settings name: ``local`` (default) or ``s3``."""
    if settings.blob_store == "s3":
        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(settings.data_dir / "blobs")
