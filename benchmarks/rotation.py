"""Benchmark: how long `reintegration keys rotate` takes over 10,000 cases' data keys.

A temporary database gets N case keys (plus the system, keyed-hash and audit keys) wrapped by one
key file, written in one go as the keyring writes them one by one; then the rotation re-wraps them
all under a second key file, a batch per transaction, as the command does, and the time and rate
are printed. It asserts nothing. On SQLite by default; ``--postgres`` uses the machine's server
(a throwaway database). ``--vault`` rotates from the key file to a Vault transit key instead,
served by the tests' stand-in for Vault's HTTP API (tests/test_vault_kek.py): a request per key,
so it measures the client's cost per key over HTTP, not a real Vault's. Usage:
    .venv/bin/python -m benchmarks.rotation [--keys 10000] [--batch 500] [--postgres] [--vault]
"""

from __future__ import annotations

import argparse
import base64
import secrets
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import insert

from reintegration import audit, keys
from reintegration.crypto import DataKeyRecord, KeyEncryptionKey, Keyring, LocalKeyEncryptionKey
from reintegration.db import make_engine
from reintegration.migrate import upgrade_schema
from reintegration.settings import Settings
from reintegration.vault import VaultTransitKeyEncryptionKey
from tests.conftest import _drop_postgres_database, _postgres_database
from tests.test_vault_kek import TOKEN, TransitServer, serving


def key_file(path: Path) -> Path:
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rotation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000, help="case keys to re-wrap (default 10000)")
    parser.add_argument("--batch", type=int, default=keys.BATCH, help=f"keys per transaction (default {keys.BATCH})")
    parser.add_argument("--postgres", action="store_true", help="the machine's PostgreSQL instead of SQLite")
    parser.add_argument("--vault", action="store_true", help="to a Vault transit key (the tests' stand-in)")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="rotation-bench-"))
        tmp = Path(folder)
        pg_name, url = None, f"sqlite:///{tmp / 'keys.db'}"
        if args.postgres:
            pg_name, url = _postgres_database()
        engine = make_engine(Settings(data_dir=tmp, database_url=url))
        try:
            upgrade_schema(engine)
            old = LocalKeyEncryptionKey.from_file(key_file(tmp / "kek-old"))
            new: KeyEncryptionKey = LocalKeyEncryptionKey.from_file(key_file(tmp / "kek-new"))
            if args.vault:
                transit = TransitServer()
                transit.create("reintegration")
                vault_url = stack.enter_context(serving(transit))
                (tmp / "token").write_text(TOKEN)
                new = VaultTransitKeyEncryptionKey(address=vault_url, key="reintegration", token_file=tmp / "token")
            before = Keyring(engine, old)
            started = time.perf_counter()
            now = datetime.now(UTC)
            records = []
            for _ in range(args.keys):
                key_id = "dk-" + secrets.token_hex(12)
                wrapped = old.wrap(AESGCM.generate_key(bit_length=256), context=key_id.encode())
                records.append(
                    {
                        "key_id": key_id,
                        "case_id": secrets.token_hex(16),
                        "purpose": "case",
                        "kek_id": old.kek_id,
                        "wrapped": base64.b64encode(wrapped).decode(),
                        "created_at": now,
                    }
                )
            with engine.begin() as connection:
                connection.execute(insert(DataKeyRecord.__table__), records)  # type: ignore[attr-defined]
            before.system_key()
            before.keyed_hash("x", purpose="bench")
            actor = SimpleNamespace(sub="bench", role="admin", agency=None)
            audit.record(engine, actor=actor, action="bench", request_id="bench", keyring=before)
            print(f"{args.keys} case keys (+3) made in {time.perf_counter() - started:.1f} s on {engine.dialect.name}")

            rotating = Keyring(engine, new, previous=[old])
            report = keys.rotate(engine, rotating, batch=args.batch)
            print(
                f"keys rotate: {report.rewrapped} keys re-wrapped in {report.seconds:.2f} s, "
                f"{report.keys_per_second:,.0f} keys/s ({report.batches} batches of {args.batch}; "
                f"remaining {report.remaining}, skipped {report.skipped}, unreadable {len(report.unreadable)})"
            )
            verified = audit.verify(engine, Keyring(engine, new)).ok
            print(f"the audit chain verifies with the new KEK alone: {'yes' if verified else 'NO'}")
        finally:
            engine.dispose()
            if pg_name:
                _drop_postgres_database(pg_name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
