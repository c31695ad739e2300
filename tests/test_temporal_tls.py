"""Reaching Temporal as in production: over TLS with a client certificate (mTLS), set either by the
project's settings or by a profile of Temporal's own client configuration file (the way to Temporal
Cloud). The development server speaks no TLS, so a real TLS terminator stands in front of it here,
as a cluster's ingress or Temporal Cloud's endpoint would: it offers HTTP/2 by ALPN, presents a
certificate of a private CA and, for mTLS, refuses a client without a certificate of that CA."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reintegration.settings import Settings
from reintegration.temporal import connect
from tests.conftest import NAMESPACE

SERVER_NAME = "temporal.reintegration.test"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )
    if issuer is None:  # the CA
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if subject == SERVER_NAME:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
            usage = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            usage = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


class Pki:
    """A private CA, the frontend's certificate and a worker's client certificate, as files."""

    def __init__(self, folder: Path, prefix: str = "") -> None:
        ca_key = _key()
        self.ca = _certificate(f"{prefix}Reintegration test CA", ca_key, None)
        self.folder = folder
        self.ca_file = self._write(f"{prefix}ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))
        for role, subject in (("server", SERVER_NAME), ("client", "reintegration-worker")):
            key = _key()
            cert = _certificate(subject, key, (self.ca, ca_key))
            self._write(f"{prefix}{role}.pem", cert.public_bytes(serialization.Encoding.PEM))
            self._write(f"{prefix}{role}.key", _pem_key(key))
        self.prefix = prefix

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def file(self, name: str) -> Path:
        return self.folder / f"{self.prefix}{name}"


@contextlib.asynccontextmanager
async def tls_terminator(target: str, pki: Pki, *, require_client_certificate: bool) -> AsyncIterator[str]:
    """TLS (HTTP/2 by ALPN) on a loopback port, the bytes inside passed to ``target`` as they are."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.file("server.pem"), pki.file("server.key"))
    context.set_alpn_protocols(["h2"])
    if require_client_certificate:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca_file)
    host, _, port = target.rpartition(":")
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(port))
        for task in (pipe(client_reader, server_writer), pipe(server_reader, client_writer)):
            running = asyncio.create_task(task)
            tasks.add(running)
            running.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()


def _target(temporal_env) -> str:
    return temporal_env.client.service_client.config.target_host


async def _reaches(settings: Settings) -> bool:
    try:
        client = await connect(settings, keyring=None, attempts=2, delay=0.1)
    except ConnectionError:
        return False
    return bool(await client.service_client.check_health())


async def test_mtls_from_the_settings_reaches_temporal_and_a_client_without_a_certificate_does_not(
    temporal_env, tmp_path
) -> None:
    pki = Pki(tmp_path)
    async with tls_terminator(_target(temporal_env), pki, require_client_certificate=True) as address:
        mtls = Settings(
            data_dir=tmp_path,
            temporal_address=address,
            temporal_namespace=NAMESPACE,
            temporal_tls_ca_file=pki.ca_file,
            temporal_tls_cert_file=pki.file("client.pem"),
            temporal_tls_key_file=pki.file("client.key"),
            temporal_tls_server_name=SERVER_NAME,
        )
        assert mtls.temporal_authenticated
        assert await _reaches(mtls)
        # TLS alone: the terminator asks for a client certificate and gets none.
        tls_only = mtls.model_copy(update={"temporal_tls_cert_file": None, "temporal_tls_key_file": None})
        assert not await _reaches(tls_only)
        # Another CA's server certificate is not believed (the client checks the frontend too).
        other = Pki(tmp_path, prefix="other-")
        assert not await _reaches(mtls.model_copy(update={"temporal_tls_ca_file": other.ca_file}))
        # In clear against a TLS endpoint: nothing.
        assert not await _reaches(Settings(data_dir=tmp_path, temporal_address=address, temporal_namespace=NAMESPACE))


async def test_a_profile_of_temporals_client_configuration_file_sets_address_namespace_and_mtls(
    temporal_env, tmp_path
) -> None:
    pki = Pki(tmp_path)
    async with tls_terminator(_target(temporal_env), pki, require_client_certificate=True) as address:
        config = tmp_path / "temporal.toml"
        config.write_text(
            f"""
[profile.default]
address = "127.0.0.1:1"

[profile.production]
address = "{address}"
namespace = "{NAMESPACE}"

[profile.production.tls]
server_name = "{SERVER_NAME}"
server_ca_cert_path = "{pki.ca_file}"
client_cert_path = "{pki.file("client.pem")}"
client_key_path = "{pki.file("client.key")}"
"""
        )
        settings = Settings(data_dir=tmp_path, temporal_config_file=config, temporal_profile="production")
        assert settings.temporal_address == address and settings.temporal_namespace == NAMESPACE
        assert settings.temporal_authenticated
        assert await _reaches(settings)
        # Production takes a profile with a client certificate as authenticated (no ALLOW_UNAUTHENTICATED).
        with pytest.raises(ValueError) as refused:
            Settings(environment="production", temporal_config_file=config, temporal_profile="production")
        assert "Temporal's frontend" not in str(refused.value)


def test_a_missing_configuration_file_or_profile_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        Settings(temporal_config_file=tmp_path / "nowhere.toml")
    config = tmp_path / "temporal.toml"
    config.write_text('[profile.default]\naddress = "127.0.0.1:7233"\napi_key = "do-not-print-me"\n')
    with pytest.raises(ValueError, match="profile 'cloud' not read") as missing:
        Settings(temporal_config_file=config, temporal_profile="cloud")
    assert "do-not-print-me" not in str(missing.value)
    api_key = Settings(temporal_config_file=config)
    assert api_key.temporal_authenticated  # an API key (as Temporal Cloud's) authenticates
    from reintegration.temporal import client_options

    assert client_options(api_key) == {"api_key": "do-not-print-me", "tls": True}  # never in clear


def test_a_profile_that_turns_tls_off_never_sends_its_api_key_and_is_not_authenticated(tmp_path) -> None:
    from reintegration.temporal import client_options

    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.default]\naddress = "127.0.0.1:7233"\napi_key = "do-not-send-in-clear"\n\n'
        "[profile.default.tls]\ndisabled = true\n"
    )
    settings = Settings(temporal_config_file=config)
    assert not settings.temporal_authenticated
    with pytest.raises(ValueError, match="never travels in clear") as refused:
        client_options(settings)
    assert "do-not-send-in-clear" not in str(refused.value)
