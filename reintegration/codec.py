"""The Temporal payload codec: workflow histories hold ciphertext only.

Every payload a client or worker sends to Temporal is encrypted with AES-256-GCM. A payload that
belongs to a case (its workflow id names the case: ``case-<case id>...``) is encrypted with that
case's data key, so erasing the case's key makes its histories unreadable too; anything else uses
the system key. The key id travels in the payload's metadata, so decoding needs no context (the
Web UI's codec endpoint decodes with it alone).

Only holders of the key-encryption key can speak to a case: where a payload is decoded for a
workflow or activity (the worker's and the API's client), one that is not sealed with the key of the
case its workflow names (or, for a workflow that names no case, with the system key) is not
decoded but replaced by a ``binary/refused`` payload, which the payload converter refuses with
``UnsealedPayload``. So a command sent straight to Temporal (``temporal workflow update``, a payload
encoded by the Web UI) is rejected before the workflow sees it, a workflow started that way fails,
and nothing of it reaches the read model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from cryptography.exceptions import InvalidTag
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import (
    PydanticPayloadConverter,
    pydantic_data_converter,
)
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    EncodingPayloadConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.exceptions import ApplicationError

from reintegration.crypto import (
    SYSTEM_KEY_ID,
    DataKey,
    Keyring,
    KeyUnavailable,
    Unreadable,
)
from workflows.ids import case_of_workflow

ENCODING = b"binary/encrypted"
REFUSED = b"binary/refused"
UNSEALED = "UnsealedPayload"
KEY_ID = "encryption-key-id"
CASE_KEY_ID = re.compile(r"^dk-[0-9a-f]{24}$")

__all__ = ["ENCODING", "EncryptionCodec", "case_of_workflow", "data_converter", "payload_key_id"]


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """Encrypts with the key of the case the payload belongs to; decrypts with the key it names.

    With a workflow's or activity's context, decodes only what is sealed with that context's key."""

    def __init__(self, keyring: Keyring, *, case_id: str | None = None, sealed_only: bool = False) -> None:
        self._keyring, self._case_id, self._sealed_only = keyring, case_id, sealed_only

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        if isinstance(context, (WorkflowSerializationContext, ActivitySerializationContext)):
            return EncryptionCodec(self._keyring, case_id=case_of_workflow(context.workflow_id), sealed_only=True)
        return EncryptionCodec(self._keyring)

    async def _expected_key_id(self) -> str:
        if self._case_id is None:
            return SYSTEM_KEY_ID
        key = self._keyring.cached_case_key(self._case_id)
        if key is None:
            try:
                key = await asyncio.to_thread(self._keyring.case_key, self._case_id)
            except KeyUnavailable:
                return ""  # no key (never made, or erased): nothing is sealed with it
        return key.key_id

    async def _encoding_key(self) -> DataKey:
        if self._case_id is None:
            system = self._keyring.cached_key("system-1")
            return system if system is not None else await asyncio.to_thread(self._keyring.system_key)
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
        expected = await self._expected_key_id() if self._sealed_only and payloads else None
        for p in payloads:
            if expected is not None and (p.metadata.get("encoding") != ENCODING or payload_key_id(p) != expected):
                out.append(Payload(metadata={"encoding": REFUSED}))  # not ours to speak for this case
                continue
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            key_id = payload_key_id(p)
            if key_id is None:
                raise KeyUnavailable("the payload names no payload key")
            key = self._keyring.cached_key(key_id)
            if key is None:
                key = await asyncio.to_thread(self._keyring.key, key_id)
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


class _RefusedPayloadConverter(EncodingPayloadConverter):
    """Turns a payload the codec would not decode into an ``UnsealedPayload`` error where it is read:
    an update's argument (the update is rejected), a workflow's input (the workflow fails), an
    activity's result (the workflow does not go on with it)."""

    @property
    def encoding(self) -> str:
        return REFUSED.decode()

    def to_payload(self, value: Any) -> Payload | None:
        return None  # never makes one

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        raise ApplicationError(
            "refused: the payload is not sealed with its case's key; commands reach a case through the API only",
            type=UNSEALED,
            non_retryable=True,
        )


class SealedPayloadConverter(PydanticPayloadConverter):
    """Pydantic's converters, and the one that refuses what the codec would not decode.

    Every instance shares one set of converters: the SDK's worker makes a data converter, and so a
    payload converter, for every workflow activation it decodes and encodes, and each new Pydantic
    converter started with an empty cache of type adapters, so every payload built its type's
    adapter again (``make bench --profile``: about 2% of the worker's samples, making the converters
    and their adapters). The converters keep no state but that cache, which is safe to share (with
    the workflow sandbox on, it keeps the last 1,024 types it saw, each sandboxed run's own)."""

    _shared: ClassVar[tuple[EncodingPayloadConverter, ...]] = ()

    def __init__(self) -> None:
        shared = SealedPayloadConverter._shared
        if not shared:
            super().__init__()
            shared = (*self.converters.values(), _RefusedPayloadConverter())
            SealedPayloadConverter._shared = shared
        self._set_converters(*shared)


CONVERTERS_KEPT = 4096  # converters with a context a worker or client keeps (see CaseDataConverter)


@dataclasses.dataclass(frozen=True)
class CaseDataConverter(DataConverter):
    """The SDK's data converter, keeping what ``with_context`` makes for each context.

    The SDK asks for a converter with its context for every payload a workflow or activity encodes
    or decodes, and each new one builds its payload converters afresh (measured: a tenth of the
    worker's CPU in ``make bench``). What a context gets never changes (the codec's case is named by
    the workflow's id), so each is made once and kept, the last ``CONVERTERS_KEPT``."""

    _with_context: dict[SerializationContext, Self] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def with_context(self, context: SerializationContext) -> Self:
        found = self._with_context.get(context)
        if found is None:
            found = super().with_context(context)
            if len(self._with_context) >= CONVERTERS_KEPT:
                self._with_context.pop(next(iter(self._with_context)), None)
            self._with_context[context] = found
        return found


def data_converter(keyring: Keyring | None) -> DataConverter:
    """Pydantic payloads, encrypted when a keyring is given; failure messages and stack traces are
    moved into an encoded payload too, so an error can't carry a value into the history in clear."""
    if keyring is None:
        return pydantic_data_converter
    return CaseDataConverter(
        payload_converter_class=SealedPayloadConverter,
        payload_codec=EncryptionCodec(keyring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
