"""The key-encryption key kept in HashiCorp Vault's transit engine: Vault wraps and unwraps the data
keys, and the KEK itself never leaves it.

The transit key must be made with key derivation (``vault write -f transit/keys/NAME derived=true``):
each data key is encrypted with the key derived for its own id (the ``context``), so a wrapped key
copied to another row does not unwrap there, as with the local key file's associated data. The
context is used rather than ``associated_data`` because Vault's ``rewrap`` takes a context and no
associated data, and re-wrapping without the plaintext leaving Vault is what a rotation of the
transit key needs.

A process encrypts with the version of the key that was newest when it started (``key_version``
on every encrypt), and that version is part of its ``kek_id`` (``vault:transit/NAME:v3``): after
``vault write -f transit/keys/NAME/rotate`` and a restart, the keys still under an earlier version
are the ones ``reintegration keys rotate`` re-wraps (with ``rewrap``), as for a new key file.

The token comes from a file (Vault Agent's sink, say) and is read again when Vault refuses it, so a
renewed token is taken up without a restart. hvac (and requests under it) is loaded only by a
process that uses Vault.

The API's processes (``pause_when_silent``) leave a Vault that stayed silent alone for as long as the
timeout, then let one call at a time ask it again until it answers: the other calls fail at once
meanwhile. A request that needs a key not in memory waits for Vault in one of the API's few database
threads (``REINTEGRATION_API_THREADS``); without the pause, a Vault that stopped answering would hold
them all, one timeout after another, and every request with them, the ones needing no key too.
Silent: a call failed after nearly the whole timeout (``SILENT_AFTER``: a timeout, or a proxy's
error after its own), and no call got an answer from Vault meanwhile (else it was one dropped
connection). An answer, even a refusal, ends the pause; a refused connection fails at once and
pauses nothing. The worker asks Vault at every call: a pause would spend its activities' retries
without asking it.

Errors: ``VaultUnavailable`` when Vault cannot be used now (unreachable, sealed, the token refused;
``VaultSilent`` when it did not answer within the timeout, ``VaultUnreachable`` when the connection
failed);
``VaultRefused`` (a ``ValueError``) when Vault refuses a ciphertext, which the keyring reports as
``Unreadable``; ``ValueError`` at start for a key that is missing or not suitable.
"""

from __future__ import annotations

import base64
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Key types of the transit engine that encrypt, decrypt and derive keys.
DERIVING_TYPES = frozenset({"aes128-gcm96", "aes256-gcm96", "chacha20-poly1305"})
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,23}")  # a mount or key name (kek_id is at most 64 characters)


class VaultUnavailable(Exception):
    """Vault cannot be used now: unreachable, sealed, or refusing this process's token. Nothing is
    wrong with the stored keys: try again once Vault answers."""


class VaultUnreachable(VaultUnavailable):
    """The connection to Vault failed (refused, reset, a name not found): no answer."""


class VaultSilent(VaultUnreachable):
    """Vault did not answer within the timeout (connecting or reading)."""


# A call that failed after this share of the timeout found Vault silent (``pause_when_silent``).
SILENT_AFTER = 0.9


class VaultRefused(ValueError):
    """Vault refused a ciphertext: it does not decrypt with this key and context (altered, moved to
    another key's row, or older than the key's ``min_decryption_version``)."""


def is_vault_name(name: str | None) -> bool:
    """A transit mount's or key's name as this module takes them (short enough for the kek_id)."""
    return name is not None and NAME.fullmatch(name) is not None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class VaultTransitKeyEncryptionKey:
    """A ``KeyEncryptionKey`` (``reintegration.crypto``) backed by a derived transit key."""

    def __init__(
        self,
        *,
        address: str,
        key: str,
        mount: str = "transit",
        token: str | None = None,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        timeout: float = 10.0,
        pause_when_silent: bool = False,
    ) -> None:
        if not (is_vault_name(mount) and is_vault_name(key)):
            raise ValueError("the Vault transit mount and key are names of letters, digits, '_', '.', '-' (24 at most)")
        if (token is None) == (token_file is None):
            raise ValueError("give the Vault token as a file (or, in development only, as a value), one of them")
        # Loaded here, not at the module's top: every process imports the keyring, few use Vault.
        import hvac
        import hvac.exceptions
        import requests

        self._hvac, self._errors, self._requests = hvac, hvac.exceptions, requests
        self.address, self.mount, self.key = address.rstrip("/"), mount, key
        self._token_value, self._token_file = token, token_file
        self._verify: str | bool = str(ca_file) if ca_file is not None else True
        self._timeout = timeout
        # Silence (the module's doc): whether Vault stayed silent, until when it is left alone, whether
        # a call is asking it again, and when it last answered (monotonic seconds).
        self.pause_when_silent = pause_when_silent
        self._silent, self._silent_until, self._probing, self._answered_at = False, 0.0, False, 0.0
        self._silence = threading.Lock()
        self._token = self._read_token()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._family = f"vault:{mount}/{key}:v"
        info = self._call(lambda client: client.secrets.transit.read_key(name=key, mount_point=mount), reading=True)
        data = info.get("data") or {}
        if not data.get("derived"):
            raise ValueError(
                f"the Vault transit key {mount}/{key} is not derived: make it with derived=true, so that each "
                "data key's wrapping is bound to its own id"
            )
        if data.get("type") not in DERIVING_TYPES:
            raise ValueError(f"the Vault transit key {mount}/{key} does not encrypt ({data.get('type')})")
        versions = [int(v) for v in (data.get("keys") or {})]
        self.version = int(data.get("latest_version") or max(versions, default=0))
        if self.version < 1:
            raise ValueError(f"the Vault transit key {mount}/{key} has no version")
        self.kek_id = f"{self._family}{self.version}"

    @classmethod
    def from_settings(cls, settings: Any, *, pause_when_silent: bool = False) -> VaultTransitKeyEncryptionKey:
        return cls(
            pause_when_silent=pause_when_silent,
            address=settings.vault_address,
            key=settings.vault_transit_key,
            mount=settings.vault_transit_mount,
            token=settings.vault_token.get_secret_value() if settings.vault_token is not None else None,
            token_file=settings.vault_token_file,
            ca_file=settings.vault_ca_file,
            timeout=settings.vault_timeout_seconds,
        )

    # --- the KeyEncryptionKey calls -----------------------------------------------------------------

    def wrap(self, key: bytes, *, context: bytes) -> bytes:
        answer = self._call(
            lambda client: client.secrets.transit.encrypt_data(
                name=self.key,
                plaintext=_b64(key),
                context=_b64(context),
                key_version=self.version,
                mount_point=self.mount,
            )
        )
        return self._ciphertext(answer)

    def unwrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        answer = self._call(
            lambda client: client.secrets.transit.decrypt_data(
                name=self.key, ciphertext=wrapped.decode("ascii"), context=_b64(context), mount_point=self.mount
            )
        )
        try:
            return base64.b64decode(answer["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise VaultUnavailable("Vault's answer to decrypt holds no plaintext") from None

    def unwraps(self, kek_id: str) -> bool:
        """Keys wrapped by any version of this transit key (Vault refuses those it no longer decrypts)."""
        return kek_id.startswith(self._family) and kek_id[len(self._family) :].isdigit()

    def newer(self, kek_id: str) -> bool:
        """Keys wrapped by a later version of this transit key than this process's: by a process
        started after a later ``rotate`` in Vault. A rotation leaves them as they are (re-wrapping
        them with this version would take them back to an older one)."""
        return self.unwraps(kek_id) and int(kek_id[len(self._family) :]) > self.version

    def rewrap(self, wrapped: bytes, *, context: bytes) -> bytes:
        """The key wrapped again by this process's version of the transit key, without its plaintext
        leaving Vault."""
        answer = self._call(
            lambda client: client.secrets.transit.rewrap_data(
                name=self.key,
                ciphertext=wrapped.decode("ascii"),
                context=_b64(context),
                key_version=self.version,
                mount_point=self.mount,
            )
        )
        return self._ciphertext(answer)

    # --- a batch in one request (a rotation) --------------------------------------------------------

    def wrap_many(self, keys: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Keys (each with its context) wrapped in one request (``batch_input``), in order;
        ``VaultRefused`` if Vault refused any of them."""
        # In a batch, Vault reads the key version of each item (a top-level one is ignored).
        items = [
            {"plaintext": _b64(key), "context": _b64(context), "key_version": self.version} for key, context in keys
        ]
        answer = self._call(
            lambda client: client.secrets.transit.encrypt_data(name=self.key, batch_input=items, mount_point=self.mount)
        )
        return self._batch_results(answer, len(items))

    def rewrap_many(self, wrapped: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Wrapped keys (each with its context) re-wrapped in one request, in order; ``VaultRefused``
        if Vault refused any of them."""
        items = [
            {"ciphertext": blob.decode("ascii"), "context": _b64(context), "key_version": self.version}
            for blob, context in wrapped
        ]
        answer = self._call(
            lambda client: client.secrets.transit.rewrap_data(
                name=self.key, ciphertext=None, batch_input=items, mount_point=self.mount
            )
        )
        return self._batch_results(answer, len(items))

    def _batch_results(self, answer: dict[str, Any], count: int) -> list[bytes]:
        results = (answer.get("data") or {}).get("batch_results")
        if not isinstance(results, list) or len(results) != count:
            raise VaultUnavailable("Vault's answer to a batch holds no result for each item")
        # Vault before 1.13 answers 200 with an error in the item; since, 400 for the whole batch.
        if any(not isinstance(item, dict) or item.get("error") for item in results):
            raise VaultRefused("Vault refused an item of the batch")
        return [self._ciphertext({"data": item}) for item in results]

    # --- talking to Vault ---------------------------------------------------------------------------

    def _read_token(self) -> str:
        if self._token_file is None:
            assert self._token_value is not None
            return self._token_value
        try:
            token = self._token_file.read_text().strip()
        except OSError as exc:
            raise VaultUnavailable(f"the Vault token file cannot be read ({type(exc).__name__})") from None
        if not token:
            raise VaultUnavailable("the Vault token file is empty")
        return token

    def _client(self) -> Any:
        """This thread's client (a requests session is not shared between threads) with the token now held."""
        client = getattr(self._local, "client", None)
        if client is None or client.token != self._token:
            client = self._hvac.Client(url=self.address, token=self._token, verify=self._verify, timeout=self._timeout)
            self._local.client = client
        return client

    def _call(self, request: Callable[[Any], Any], *, reading: bool = False) -> dict[str, Any]:
        """One request (``_ask``); with ``pause_when_silent``, not sent to a Vault that stayed silent
        a moment ago, and sent by one call at a time until it answers (the module's doc)."""
        if not self.pause_when_silent:
            return self._ask(request, reading=reading)
        started = time.monotonic()
        probing = False
        with self._silence:
            if self._silent:
                if (pause := self._silent_until - started) > 0:
                    raise VaultUnavailable(
                        f"Vault at {self.address} did not answer a moment ago; asked again in {math.ceil(pause)} s"
                    )
                if self._probing:
                    raise VaultUnavailable(f"Vault at {self.address} did not answer a moment ago; being asked again")
                self._probing = probing = True  # this call asks it; the others fail at once meanwhile
        failed: BaseException | None = None
        try:
            return self._ask(request, reading=reading)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self._after(started, failed, probing)

    def _after(self, started: float, failed: BaseException | None, probing: bool) -> None:
        """What a call sent at ``started`` tells of Vault's silence (the module's doc)."""
        now = time.monotonic()
        with self._silence:
            if probing:
                self._probing = False
            if failed is not None and (
                isinstance(failed, VaultSilent) or now - started >= SILENT_AFTER * self._timeout
            ):
                if self._answered_at <= started:  # no call got an answer since this one was sent
                    self._silent, self._silent_until = True, now + self._timeout
            else:
                self._silent = False
                if not isinstance(failed, VaultUnreachable):
                    self._answered_at = now  # an answer, a refusal too

    def _ask(self, request: Callable[[Any], Any], *, reading: bool = False) -> dict[str, Any]:
        """One request; a refused token is read again from its file and the request tried once more."""
        errors = self._errors
        for attempt in (1, 2):
            try:
                answer = request(self._client())
            except errors.Forbidden:
                if attempt == 1 and self._token_file is not None:
                    with self._lock:
                        before, self._token = self._token, self._read_token()
                    if self._token != before:
                        continue
                raise VaultUnavailable("Vault refused this process's token (403)") from None
            except (errors.InvalidRequest, errors.InvalidPath) as exc:
                if reading:
                    raise ValueError(f"Vault has no usable transit key {self.mount}/{self.key}") from None
                raise VaultRefused(f"Vault refused the ciphertext ({type(exc).__name__})") from None
            except errors.VaultError as exc:
                raise VaultUnavailable(f"Vault answered with an error ({type(exc).__name__})") from None
            except self._requests.exceptions.Timeout as exc:
                raise VaultSilent(f"Vault at {self.address} is not reachable ({type(exc).__name__})") from None
            except self._requests.exceptions.RequestException as exc:
                raise VaultUnreachable(f"Vault at {self.address} is not reachable ({type(exc).__name__})") from None
            if not isinstance(answer, dict):
                raise VaultUnavailable("Vault's answer is not JSON")
            return answer
        raise AssertionError("unreachable")  # the loop returns or raises

    def _ciphertext(self, answer: dict[str, Any]) -> bytes:
        ciphertext = (answer.get("data") or {}).get("ciphertext")
        # The version asked for: a ciphertext of another would be stored under a kek_id that lies.
        if not isinstance(ciphertext, str) or not ciphertext.startswith(f"vault:v{self.version}:"):
            raise VaultUnavailable(f"Vault's answer holds no ciphertext of version {self.version} of the key")
        return ciphertext.encode("ascii")
