"""The key-encryption key in Vault's transit engine, through the real hvac client over HTTP.

No Vault server can be installed here (none is packaged on PyPI, Debian or npm), so this is a
contract test: ``TransitServer`` below answers the few endpoints the KEK uses exactly as Vault's API
documents them (website/content/api-docs/secret/transit.mdx: paths under ``/v1/<mount>/``, the
``X-Vault-Token`` header, ``{"data": {...}}`` answers and ``{"errors": [...]}`` refusals, base64
plaintext and context, ``vault:v<N>:`` ciphertexts, key versions, ``rewrap``, derived keys that
require a context). It checks that our requests have those shapes and that our code reads those
answers; it cannot show that a real Vault behaves as documented. Run against a real one by hand:
README, "A KMS: Vault's transit engine".
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import ValidationError
from sqlalchemy import update
from sqlmodel import Session

from reintegration import audit, cli, keys
from reintegration.crypto import DataKeyRecord, Keyring, LocalKeyEncryptionKey, Unreadable
from reintegration.db import keyring_from_settings, make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings, get_settings
from reintegration.vault import (
    VaultRefused,
    VaultSilent,
    VaultTransitKeyEncryptionKey,
    VaultUnavailable,
    VaultUnreachable,
)
from tests.conftest import free_port
from tests.test_key_rotation import key_file, rows
from tests.test_oidc import production  # noqa: F401 - the fixture: settings production accepts

TOKEN = "hvs.test-token-one"
CIPHERTEXT = re.compile(r"vault:v(\d+):([A-Za-z0-9+/=]+)")
DERIVED_WITHOUT_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which means additional, "
    "per-request information must be included in order to perform operations with the key"
)


class TransitServer:
    """Vault's transit secrets engine as its HTTP API documents it, for the endpoints the KEK calls."""

    def __init__(self, mount: str = "transit") -> None:
        self.mount = mount
        self.tokens = {TOKEN}
        self.keys: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []  # (method, path, body)
        self.lock = threading.Lock()
        # Silent: takes each request and never answers (until ``resumed``), as a Vault whose host
        # went away behind a load balancer; ``unanswered`` counts them.
        self.silent = False
        self.silent_next = 0  # or only the next so many requests
        self.unanswered = 0
        self.resumed = threading.Event()
        # A proxy in front of it that answers 504 after waiting this long (seconds), when set.
        self.gateway_timeout: float | None = None

    def create(self, name: str, *, derived: bool = True, type_: str = "aes256-gcm96") -> None:
        self.keys[name] = {
            "type": type_,
            "derived": derived,
            "versions": {1: (AESGCM.generate_key(bit_length=256), int(time.time()))},
            "min_decryption_version": 1,
        }

    def rotate(self, name: str) -> None:
        versions = self.keys[name]["versions"]
        versions[max(versions) + 1] = (AESGCM.generate_key(bit_length=256), int(time.time()))

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if path.startswith(f"/v1/{self.mount}/{operation}/")]

    # --- the engine --------------------------------------------------------------------------------

    def answer(self, method: str, path: str, token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            if token not in self.tokens:
                return 403, {"errors": ["permission denied"]}
            parts = path.strip("/").split("/")
            if parts[:2] != ["v1", self.mount] or len(parts) < 4:
                return 404, {"errors": []}
            operation, name, rest = parts[2], parts[3], parts[4:]
            key = self.keys.get(name)
            if key is None:
                return (404, {"errors": []}) if method == "GET" else (400, {"errors": ["encryption key not found"]})
            if operation == "keys" and method == "GET" and not rest:
                return 200, self._envelope(self._key_info(name, key))
            if operation == "keys" and method == "POST" and rest == ["rotate"]:
                self.rotate(name)
                return 204, None
            if method != "POST":
                return 405, {"errors": ["unsupported operation"]}
            if operation not in ("encrypt", "decrypt", "rewrap"):
                return 404, {"errors": []}
            if body.get("batch_input") is None:
                try:
                    return 200, self._envelope(self._one(operation, key, body))
                except ValueError as exc:
                    return 400, {"errors": [str(exc)]}
            # A batch: each item with its own context and key_version (a top-level one is ignored);
            # an item refused is an "error" in its result, and the whole answer a 400 (Vault 1.13+).
            results = []
            for item in body["batch_input"]:
                try:
                    results.append(self._one(operation, key, item))
                except ValueError as exc:
                    results.append({"error": str(exc)})
            status = 400 if any("error" in result for result in results) else 200
            return status, self._envelope({"batch_results": results})

    def _one(self, operation: str, key: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        if operation == "encrypt":
            return self._encrypt(key, self._b64(body, "plaintext"), body)
        if operation == "decrypt":
            return {"plaintext": base64.b64encode(self._decrypt(key, body)).decode()}
        return self._encrypt(key, self._decrypt(key, body), body)

    @staticmethod
    def _envelope(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "request_id": os.urandom(8).hex(),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        }

    @staticmethod
    def _key_info(name: str, key: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "type": key["type"],
            "derived": key["derived"],
            "kdf": "hkdf_sha256" if key["derived"] else None,
            "keys": {str(v): created for v, (_, created) in key["versions"].items()},
            "latest_version": max(key["versions"]),
            "min_decryption_version": key["min_decryption_version"],
            "min_encryption_version": 0,
            "deletion_allowed": False,
            "exportable": False,
            "supports_encryption": True,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_signing": False,
        }

    @staticmethod
    def _b64(body: dict[str, Any], field: str) -> bytes:
        value = body.get(field)
        if not isinstance(value, str):
            raise ValueError(f"missing {field} to {'encrypt' if field == 'plaintext' else 'decrypt'}")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError(f"failed to base64-decode {field}") from None

    def _aead(self, key: dict[str, Any], version: int, body: dict[str, Any]) -> AESGCM:
        material = key["versions"][version][0]
        if not key["derived"]:
            return AESGCM(material)
        if not body.get("context"):
            raise ValueError(DERIVED_WITHOUT_CONTEXT)
        context = self._b64(body, "context")
        return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=context).derive(material))

    def _encrypt(self, key: dict[str, Any], plaintext: bytes, body: dict[str, Any]) -> dict[str, Any]:
        latest = max(key["versions"])
        version = int(body.get("key_version") or 0) or latest
        if version > latest:
            raise ValueError("requested version for encryption is higher than the latest key version")
        nonce = os.urandom(12)
        sealed = nonce + self._aead(key, version, body).encrypt(nonce, plaintext, None)
        return {"ciphertext": f"vault:v{version}:{base64.b64encode(sealed).decode()}", "key_version": version}

    def _decrypt(self, key: dict[str, Any], body: dict[str, Any]) -> bytes:
        match = CIPHERTEXT.fullmatch(str(body.get("ciphertext", "")))
        if match is None:
            raise ValueError("invalid ciphertext: no prefix")
        version = int(match.group(1))
        if version < key["min_decryption_version"]:
            raise ValueError("ciphertext or signature version is disallowed by policy (too old)")
        if version not in key["versions"]:
            raise ValueError("invalid ciphertext: version is too new")
        sealed = base64.b64decode(match.group(2))
        try:
            return self._aead(key, version, body).decrypt(sealed[:12], sealed[12:], None)
        except InvalidTag:
            raise ValueError("cipher: message authentication failed") from None


@contextmanager
def serving(engine: TransitServer) -> Iterator[str]:
    """The transit engine over HTTP on a free port (a thread per request), until the block ends; its URL."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if engine.silent or engine.silent_next:
                engine.silent_next = max(0, engine.silent_next - 1)
                engine.unanswered += 1
                engine.resumed.wait(10)
                return
            if engine.gateway_timeout is not None:
                time.sleep(engine.gateway_timeout)
                self.send_response(504)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, answer = engine.answer(self.command, self.path, self.headers.get("X-Vault-Token"), body)
            payload = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def transit() -> Iterator[SimpleNamespace]:
    """A transit engine served over HTTP, with a derived key "reintegration"."""
    engine = TransitServer()
    engine.create("reintegration")
    with serving(engine) as url:
        yield SimpleNamespace(url=url, engine=engine)


def token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "vault-token"
    path.write_text(token + "\n")
    return path


def vault_kek(transit: SimpleNamespace, tmp_path: Path, **kw: Any) -> VaultTransitKeyEncryptionKey:
    return VaultTransitKeyEncryptionKey(
        address=transit.url, key=kw.pop("key", "reintegration"), token_file=token_file(tmp_path), **kw
    )


def test_a_data_key_is_wrapped_and_unwrapped_by_vault(transit, tmp_path):
    kek = vault_kek(transit, tmp_path)
    assert kek.kek_id == "vault:transit/reintegration:v1" and kek.version == 1
    data_key = os.urandom(32)
    wrapped = kek.wrap(data_key, context=b"dk-0123")
    assert wrapped.startswith(b"vault:v1:") and data_key not in base64.b64decode(wrapped[9:])
    assert kek.unwrap(wrapped, context=b"dk-0123") == data_key
    # As the API documents them: the key version asked for, base64 plaintext and context, the token.
    (encrypt,) = transit.engine.calls("encrypt")
    assert encrypt == {
        "plaintext": base64.b64encode(data_key).decode(),
        "context": base64.b64encode(b"dk-0123").decode(),
        "key_version": 1,
    }
    (decrypt,) = transit.engine.calls("decrypt")
    assert decrypt == {"ciphertext": wrapped.decode(), "context": base64.b64encode(b"dk-0123").decode()}
    # Bound to its context: a wrapped key moved to another key's row does not unwrap there.
    with pytest.raises(VaultRefused, match="does not decrypt|refused the ciphertext"):
        kek.unwrap(wrapped, context=b"dk-other")
    with pytest.raises(ValueError):  # what the keyring reports as Unreadable
        kek.unwrap(b"vault:v1:" + base64.b64encode(os.urandom(60)), context=b"dk-0123")


def test_the_keyring_on_vault_reads_and_refuses_as_on_a_key_file(transit, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        kek_provider="vault",
        vault_address=transit.url,
        vault_token_file=token_file(tmp_path),
        vault_transit_key="reintegration",
    )
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    sealed = keyring.seal("case-1", "a note")
    other = keyring.case_key("case-2", create=True)
    fresh = keyring_from_settings(settings)
    assert fresh.open("case-1", sealed) == "a note"
    assert rows(engine)[fresh.case_key("case-1").key_id][0] == "vault:transit/reintegration:v1"
    # A wrapped key copied onto another case's row: Vault refuses it there (another context).
    with Session(engine) as session:
        wrapped = rows(engine)[fresh.case_key("case-1").key_id][1]
        session.exec(update(DataKeyRecord).where(DataKeyRecord.key_id == other.key_id).values(wrapped=wrapped))
        session.commit()
    with pytest.raises(Unreadable, match=f"data key {other.key_id} does not unwrap"):
        keyring_from_settings(settings).case_key("case-2")
    engine.dispose()
    keyring.dispose()


def test_a_new_version_of_the_transit_key_and_keys_rotate_rewrap_every_key_inside_vault(transit, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        kek_provider="vault",
        vault_address=transit.url,
        vault_token_file=token_file(tmp_path),
        vault_transit_key="reintegration",
    )
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    sealed = {f"case-{i}": keyring.seal(f"case-{i}", f"note {i}") for i in range(6)}
    audit.record(
        engine, actor=SimpleNamespace(sub="a", role="admin", agency=None), action="x", request_id="r", keyring=keyring
    )
    before = rows(engine)
    # The operator rotates the transit key in Vault, then restarts the processes.
    transit.engine.rotate("reintegration")
    restarted = keyring_from_settings(settings)
    assert restarted.kek.kek_id == "vault:transit/reintegration:v2" and restarted.previous == ()
    assert restarted.open("case-0", sealed["case-0"]) == "note 0"  # keys under v1 still read
    new_case = restarted.case_key("case-new", create=True)
    assert rows(engine)[new_case.key_id][1] and rows(engine)[new_case.key_id][0].endswith(":v2")
    assert [g.keys for g in keys.pending(engine, restarted)] == [len(before)]

    report = keys.rotate(engine, restarted, batch=3)
    assert (report.rewrapped, report.remaining, report.unreadable) == (len(before), 0, [])
    # Re-wrapped inside Vault, a request per batch: no plaintext asked for (beyond the check of one).
    batches = transit.engine.calls("rewrap")
    assert len(batches) == report.batches == 3 and sum(len(call["batch_input"]) for call in batches) == len(before)
    assert all(item["key_version"] == 2 and item["context"] for call in batches for item in call["batch_input"])
    after = rows(engine)
    assert {kek_id for kek_id, _ in after.values()} == {"vault:transit/reintegration:v2"}
    assert all(base64.b64decode(wrapped).startswith(b"vault:v2:") for _, wrapped in after.values())
    # Version 1 can now be retired in Vault: nothing needs it.
    transit.engine.keys["reintegration"]["min_decryption_version"] = 2
    fresh = keyring_from_settings(settings)
    assert all(fresh.open(case_id, value) == f"note {case_id[-1]}" for case_id, value in sealed.items())
    assert audit.verify(engine, fresh).ok
    engine.dispose()
    for k in (keyring, restarted, fresh):
        k.dispose()


def test_keys_under_a_newer_version_than_the_runs_are_not_rewrapped_back_and_are_reported(
    transit, tmp_path, monkeypatch, capsys
):
    settings = Settings(
        data_dir=tmp_path,
        kek_provider="vault",
        vault_address=transit.url,
        vault_token_file=token_file(tmp_path),
        vault_transit_key="reintegration",
    )
    engine = make_engine(settings)
    upgrade_schema(engine)
    first = keyring_from_settings(settings)
    for i in range(4):
        first.case_key(f"case-{i}", create=True)
    under_v1 = set(rows(engine))
    # Rotated in Vault; the rotation's process starts (v2); rotated again and the services restarted (v3).
    transit.engine.rotate("reintegration")
    pinned = keyring_from_settings(settings)
    transit.engine.rotate("reintegration")
    restarted = keyring_from_settings(settings)
    assert (pinned.kek.kek_id, restarted.kek.kek_id) == (
        "vault:transit/reintegration:v2",
        "vault:transit/reintegration:v3",
    )
    for i in range(3):
        restarted.case_key(f"new-{i}", create=True)
    under_v3 = {key_id: row for key_id, row in rows(engine).items() if key_id not in under_v1}
    assert len(under_v3) == 3 and {kek_id for kek_id, _ in under_v3.values()} == {"vault:transit/reintegration:v3"}
    assert [(g.kek_id, g.keys) for g in keys.pending(engine, pinned)] == [("vault:transit/reintegration:v1", 4)]
    assert [(g.kek_id, g.keys) for g in keys.newer(engine, pinned)] == [("vault:transit/reintegration:v3", 3)]

    # The command, with the keyring started at v2: the dry run says so and exits 1, changing nothing.
    monkeypatch.setattr("reintegration.db.keyring_from_settings", lambda _settings: pinned)
    for name, value in {
        "DATABASE_URL": settings.sqlalchemy_url,
        "REINTEGRATION_DATA_DIR": str(tmp_path),
        "REINTEGRATION_KEK_PROVIDER": "vault",
        "REINTEGRATION_VAULT_ADDRESS": transit.url,
        "REINTEGRATION_VAULT_TOKEN_FILE": str(token_file(tmp_path)),
        "REINTEGRATION_VAULT_TRANSIT_KEY": "reintegration",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    before = rows(engine)
    try:
        dry = cli.main(["keys", "rotate", "--dry-run"])
        out = capsys.readouterr().out
        assert dry == 1 and rows(engine) == before
        assert "newer, skipped: 3 data key(s) under vault:transit/reintegration:v3" in out
        assert "4 data key(s) to re-wrap, 3 newer (skipped)" in out and "Run it again" in out

        code = cli.main(["keys", "rotate", "--batch", "2"])
        out = capsys.readouterr().out
    finally:
        get_settings.cache_clear()
    assert code == 1 and "re-wrapped 4," in out and "newer 3 (skipped)" in out and "remaining 0," in out
    assert "3 data key(s) are under a newer version of the Vault transit key than this run's" in out
    # The v1 keys went up to v2, the v3 keys were left as they were: nothing taken back to v2.
    after = rows(engine)
    assert {after[key_id][0] for key_id in under_v1} == {"vault:transit/reintegration:v2"}
    assert {key_id: after[key_id] for key_id in under_v3} == under_v3
    rewrapped = [item for call in transit.engine.calls("rewrap") for item in call["batch_input"]]
    assert len(rewrapped) == 4 and all(item["ciphertext"].startswith("vault:v1:") for item in rewrapped)
    report = keys.rotate(engine, pinned)  # the same, called directly: nothing left for it, 3 newer
    assert (report.rewrapped, report.remaining, report.newer, report.batches) == (0, 0, 3, 0)

    # Run again with the newest version: every key under v3, nothing newer.
    newest = keyring_from_settings(settings)
    report = keys.rotate(engine, newest)
    assert (report.rewrapped, report.remaining, report.newer) == (4, 0, 0)
    assert {kek_id for kek_id, _ in rows(engine).values()} == {"vault:transit/reintegration:v3"}
    engine.dispose()
    for k in (first, restarted, newest):
        k.dispose()


def test_a_key_vault_refuses_in_a_batch_is_named_and_the_others_are_rewrapped(transit, tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        kek_provider="vault",
        vault_address=transit.url,
        vault_token_file=token_file(tmp_path),
        vault_transit_key="reintegration",
    )
    engine = make_engine(settings)
    upgrade_schema(engine)
    keyring = keyring_from_settings(settings)
    for i in range(5):
        keyring.case_key(f"case-{i}", create=True)
    before = sorted(rows(engine))
    # The last key in the order gets the first one's wrapping: Vault refuses it (another context).
    with Session(engine) as session:
        session.exec(
            update(DataKeyRecord).where(DataKeyRecord.key_id == before[-1]).values(wrapped=rows(engine)[before[0]][1])
        )
        session.commit()
    transit.engine.rotate("reintegration")
    report = keys.rotate(engine, keyring_from_settings(settings), batch=10)
    assert (report.rewrapped, report.unreadable, report.remaining) == (4, [before[-1]], 1)
    # The batch was refused as a whole (400), then each key tried alone to find which.
    calls = transit.engine.calls("rewrap")
    assert len(calls[0]["batch_input"]) == 5 and len(calls) == 1 + 5
    engine.dispose()
    keyring.dispose()


def test_from_a_key_file_to_vault(transit, tmp_path):
    old = key_file(tmp_path / "kek-old")
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    engine = make_engine(Settings(data_dir=tmp_path, database_url=url))
    upgrade_schema(engine)
    on_file = Keyring(engine, LocalKeyEncryptionKey.from_file(old))
    sealed = on_file.seal("case-1", "a note")
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        kek_provider="vault",
        vault_address=transit.url,
        vault_token_file=token_file(tmp_path),
        vault_transit_key="reintegration",
        kek_previous_files=[old],
    )
    report = keys.rotate(engine, keyring_from_settings(settings))
    assert report.rewrapped == 1 and report.remaining == 0
    # Unwrapped here with the key file, wrapped by Vault a batch at a time.
    assert [len(call["batch_input"]) for call in transit.engine.calls("encrypt") if "batch_input" in call] == [1]
    only_vault = Keyring(engine, vault_kek(transit, tmp_path))
    assert only_vault.open("case-1", sealed) == "a note"
    engine.dispose()


def test_a_renewed_token_is_read_again_from_its_file(transit, tmp_path):
    kek = vault_kek(transit, tmp_path)
    wrapped = kek.wrap(b"k" * 32, context=b"dk-1")
    # Vault Agent renews the token: the old one is revoked, the file holds the new one.
    transit.engine.tokens = {"hvs.test-token-two"}
    token_file(tmp_path, "hvs.test-token-two")
    assert kek.unwrap(wrapped, context=b"dk-1") == b"k" * 32
    transit.engine.tokens = set()
    with pytest.raises(VaultUnavailable, match="refused this process's token"):
        kek.unwrap(wrapped, context=b"dk-1")


def _until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.01)


def _failed(into: list[BaseException], call: Any, *args: Any, **kw: Any) -> None:
    try:
        call(*args, **kw)
    except BaseException as exc:  # noqa: BLE001 - what the thread's call raised, for the test to read
        into.append(exc)


def _resume(engine: TransitServer) -> None:
    """The silent server answers again; what it held is let go."""
    engine.silent, engine.silent_next = False, 0
    held, engine.resumed = engine.resumed, threading.Event()
    held.set()


def test_the_api_leaves_a_silent_vault_alone_for_its_timeout_then_asks_it_one_call_at_a_time(transit, tmp_path):
    """A Vault that stops answering costs the API one timeout, not one per call (a case read waits for
    Vault in one of the API's two database threads; a timeout per read would hold them all): for as
    long as the timeout after it, every call fails at once without asking it; then one call at a time
    asks it (the others fail at once) until it answers; an answer, a refusal too, ends the pause."""
    timeout = 1.5
    kek = vault_kek(transit, tmp_path, timeout=timeout, pause_when_silent=True)
    wrapped = kek.wrap(b"k" * 32, context=b"dk-1")
    engine = transit.engine
    engine.silent = True
    try:
        with pytest.raises(VaultSilent, match="not reachable \\(ReadTimeout\\)"):
            kek.unwrap(wrapped, context=b"dk-1")
        _until(lambda: engine.unanswered == 1)
        with pytest.raises(VaultUnavailable, match="did not answer a moment ago; asked again in [12] s"):
            kek.unwrap(wrapped, context=b"dk-1")
        with pytest.raises(VaultUnavailable, match="a moment ago"):
            kek.wrap(b"n" * 32, context=b"dk-2")
        assert engine.unanswered == 1  # not asked
        time.sleep(timeout + 0.1)  # the pause is over: one call asks it again...
        probe: list[BaseException] = []
        asking = threading.Thread(target=lambda: _failed(probe, kek.unwrap, wrapped, context=b"dk-1"))
        asking.start()
        _until(lambda: engine.unanswered == 2)
        with pytest.raises(VaultUnavailable, match="being asked again"):  # ...the others fail meanwhile
            kek.unwrap(wrapped, context=b"dk-1")
        asking.join()
        assert isinstance(probe[0], VaultSilent) and engine.unanswered == 2
    finally:
        _resume(engine)
    time.sleep(timeout + 0.1)
    engine.tokens = set()  # Vault answers again, with a refusal: the pause ends there
    asked = len(engine.requests)
    for _ in range(2):
        with pytest.raises(VaultUnavailable, match="refused this process's token"):
            kek.unwrap(wrapped, context=b"dk-1")
    assert len(engine.requests) > asked + 1  # both asked it
    engine.tokens = {TOKEN}
    assert kek.unwrap(wrapped, context=b"dk-1") == b"k" * 32
    assert kek.unwrap(wrapped, context=b"dk-1") == b"k" * 32


def test_what_pauses_a_silent_vault_and_what_does_not(transit, tmp_path):
    """A proxy's error after its own timeout is silence too (the call took nearly the whole timeout).
    A refused connection is no silence; nor is a timeout while another call got an answer (a dropped
    connection, not a silent Vault). The worker (without ``pause_when_silent``) asks Vault at every
    call."""
    engine = transit.engine
    worker = vault_kek(transit, tmp_path, timeout=0.3)
    wrapped = worker.wrap(b"k" * 32, context=b"dk-1")
    engine.silent = True
    try:
        for expected in (1, 2):
            with pytest.raises(VaultSilent):
                worker.unwrap(wrapped, context=b"dk-1")
            _until(lambda expected=expected: engine.unanswered == expected)  # asked each time
    finally:
        _resume(engine)

    api = vault_kek(transit, tmp_path, timeout=1.0, pause_when_silent=True)
    # One call's connection left unanswered while another call gets its answer: nothing paused.
    engine.silent_next, before = 1, engine.unanswered
    dropped: list[BaseException] = []
    waiting = threading.Thread(target=lambda: _failed(dropped, api.unwrap, wrapped, context=b"dk-1"))
    waiting.start()
    _until(lambda: engine.unanswered == before + 1)
    assert api.unwrap(wrapped, context=b"dk-1") == b"k" * 32  # answered meanwhile
    waiting.join()
    _resume(engine)
    assert isinstance(dropped[0], VaultSilent)
    assert api.unwrap(wrapped, context=b"dk-1") == b"k" * 32  # not paused

    engine.gateway_timeout = 0.95  # a proxy that gave up waiting for Vault, after nearly our timeout
    try:
        with pytest.raises(VaultUnavailable, match="answered with an error"):
            api.unwrap(wrapped, context=b"dk-1")
        with pytest.raises(VaultUnavailable, match="a moment ago"):
            api.unwrap(wrapped, context=b"dk-1")
    finally:
        engine.gateway_timeout = None

    with serving(engine) as url:  # a Vault of its own, gone at the end of the block
        gone = VaultTransitKeyEncryptionKey(
            address=url, key="reintegration", token=TOKEN, timeout=0.3, pause_when_silent=True
        )
    for _ in range(2):  # nothing listens there any more: the connection is refused, each time
        with pytest.raises(VaultUnreachable, match="not reachable \\(ConnectionError\\)"):
            gone.unwrap(wrapped, context=b"dk-1")


def test_a_key_vault_cannot_serve_is_refused_at_start(transit, tmp_path):
    transit.engine.create("not-derived", derived=False)
    with pytest.raises(ValueError, match="not derived"):
        vault_kek(transit, tmp_path, key="not-derived")
    with pytest.raises(ValueError, match="no usable transit key"):
        vault_kek(transit, tmp_path, key="missing")
    transit.engine.tokens = set()
    with pytest.raises(VaultUnavailable, match="token"):
        vault_kek(transit, tmp_path)
    with pytest.raises(VaultUnavailable, match="not reachable"):
        VaultTransitKeyEncryptionKey(
            address=f"http://127.0.0.1:{free_port()}", key="reintegration", token_file=token_file(tmp_path), timeout=2
        )
    with pytest.raises(VaultUnavailable, match="token file"):
        VaultTransitKeyEncryptionKey(address=transit.url, key="reintegration", token_file=tmp_path / "nowhere")


def test_settings_for_vault(tmp_path, production):  # noqa: F811 - the fixture imported above
    token = token_file(tmp_path)
    base = {"kek_provider": "vault", "vault_transit_key": "reintegration"}
    with pytest.raises(ValidationError, match="REINTEGRATION_VAULT_ADDRESS"):
        Settings(**base, vault_token_file=token)
    with pytest.raises(ValidationError, match="REINTEGRATION_VAULT_TOKEN_FILE"):
        Settings(**base, vault_address="https://vault.example.org")
    with pytest.raises(ValidationError, match="names of letters"):
        Settings(**{**base, "vault_transit_key": "a/b"}, vault_address="https://v.example.org", vault_token_file=token)
    assert Settings(**base, vault_address="http://127.0.0.1:8200", vault_token="root").vault_token is not None
    # Production: Vault over TLS, the token from a file; no key file needed then.
    production = {**production, **base, "kek_file": None}
    Settings(**production, vault_address="https://vault.internal:8200", vault_token_file=token)
    for refused, words in (
        ({"vault_address": "http://vault.internal:8200", "vault_token_file": token}, "https:// address in production"),
        ({"vault_address": "https://vault.internal:8200", "vault_token": "hvs.x"}, "production reads the token from"),
    ):
        with pytest.raises(ValidationError, match=words):
            Settings(**production, **refused)
    development_key = tmp_path / "dev-kek"
    development_key.write_text("# DEVELOPMENT ONLY: made by the embedded default\n" + "ab" * 32 + "\n")
    with pytest.raises(ValidationError, match="previous key-encryption key file is a development key"):
        Settings(
            **production,
            vault_address="https://vault.internal:8200",
            vault_token_file=token,
            kek_previous_files=[development_key],
        )


async def test_the_apis_keyring_pauses_a_silent_vault_and_the_workers_does_not(transit, tmp_path):
    from api.main import create_app

    settings = Settings(
        data_dir=tmp_path,
        kek_provider="vault",
        vault_address=transit.url,
        vault_transit_key="reintegration",
        vault_token=TOKEN,
        temporal_address=f"127.0.0.1:{free_port()}",
        temporal_connect_wait_seconds=0.1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        kek = app.state.keyring.kek
        assert isinstance(kek, VaultTransitKeyEncryptionKey) and kek.pause_when_silent
    worker = keyring_from_settings(settings)  # as worker.py makes it
    try:
        assert isinstance(worker.kek, VaultTransitKeyEncryptionKey) and not worker.kek.pause_when_silent
    finally:
        worker.dispose()
