"""The Temporal payload codec: workflow histories hold ciphertext only.

Every payload a client or worker sends to Temporal is encrypted with AES-256-GCM. A payload that
belongs to a case (its workflow id names the case: ``case-<case id>...``) is encrypted with that
case's data key, so erasing the case's key makes its histories unreadable too; anything else uses
the system key. The key id travels in the payload's metadata, so decoding needs no context (the
Web UI's codec endpoint decodes with it alone).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.contrib.pydantic import pydantic_data_converter

from reintegration.crypto import SYSTEM_KEY_ID, DataKey, Keyring, KeyUnavailable, Unreadable

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
CASE_KEY_ID = re.compile(r"^dk-[0-9a-f]{24}$")
CASE_IN_WORKFLOW_ID = re.compile(r"^case-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


def case_of_workflow(workflow_id: str | None) -> str | None:
    match = CASE_IN_WORKFLOW_ID.match(workflow_id or "")
    return match.group(1) if match else None


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """Encrypts with the key of the case the payload belongs to; decrypts with the key it names."""

    def __init__(self, keyring: Keyring, *, case_id: str | None = None) -> None:
        self._keyring, self._case_id = keyring, case_id

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        workflow_id = None
        if isinstance(context, (WorkflowSerializationContext, ActivitySerializationContext)):
            workflow_id = context.workflow_id
        return EncryptionCodec(self._keyring, case_id=case_of_workflow(workflow_id))

    async def _encoding_key(self) -> DataKey:
        if self._case_id is None:
            return self._keyring.cached_key("system-1") or await asyncio.to_thread(self._keyring.system_key)
        cached = self._keyring.cached_case_key(self._case_id)
        if cached is not None:
            return cached
        return await asyncio.to_thread(self._keyring.case_key, self._case_id, create=True)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not payloads:
            return []
        key = await self._encoding_key()
        return [
            Payload(
                metadata={"encoding": ENCODING, KEY_ID: key.key_id.encode()},
                data=key.encrypt(p.SerializeToString(), key.key_id.encode()),
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            key_id = payload_key_id(p)
            if key_id is None:
                raise KeyUnavailable("the payload names no payload key")
            key = self._keyring.cached_key(key_id) or await asyncio.to_thread(self._keyring.key, key_id)
            try:
                out.append(Payload.FromString(key.decrypt(p.data, key_id.encode())))
            except (InvalidTag, ValueError, DecodeError):
                raise Unreadable("the payload does not decrypt with its key") from None
        return out


def payload_key_id(payload: Payload) -> str | None:
    """The key an encrypted payload names, if it is one that encrypts payloads (a case's or the
    system key; never the keyed-hash key or anything else)."""
    try:
        key_id = payload.metadata.get(KEY_ID, b"").decode("ascii")
    except UnicodeDecodeError:
        return None
    return key_id if key_id == SYSTEM_KEY_ID or CASE_KEY_ID.match(key_id) else None


def data_converter(keyring: Keyring | None) -> DataConverter:
    """Pydantic payloads, encrypted when a keyring is given; failure messages and stack traces are
    moved into an encoded payload too, so an error can't carry a value into the history in clear."""
    if keyring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
