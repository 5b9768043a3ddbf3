"""daphne serving TLS itself, with a throwaway certificate authority for 127.0.0.1/localhost.

:func:`make_certificates` writes a private CA and a server certificate signed by it (with the
``cryptography`` package that twisted's ``tls`` extra brings, so CI needs nothing else).
:class:`TlsServer` starts daphne with the Twisted endpoint
``ssl:PORT:privateKey=KEY:certKey=CERT:interface=127.0.0.1`` (the same string
docs/terminal-api.md shows) and waits for ``https://127.0.0.1:PORT/healthz`` with only that CA
trusted. Clients trust ``ca_file`` (Node: ``NODE_EXTRA_CA_CERTS``; Python: :meth:`ssl_context`);
nothing disables verification.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.harness import DAPHNE, Deployment, Server
from tests.services import ROOT


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # the throwaway CA: what clients trust
    cert_file: Path  # the server's certificate (127.0.0.1, localhost), signed by the CA
    key_file: Path  # the server's private key

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the throwaway CA, with full verification."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "POS Gateway tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_certificates(directory: Path, *, days: int = 2) -> Certificates:
    """A private CA and a server certificate for 127.0.0.1 and localhost, valid for ``days``."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("POS Gateway throwaway test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    return Certificates(
        ca_file=_pem(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM)),
        cert_file=_pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        key_file=_pem(
            directory / "server-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    )


def endpoint(port: int, certs: Certificates) -> str:
    """daphne's ``-e`` argument: Twisted's ``serverFromString`` syntax for a TLS listener."""
    for path in (certs.key_file, certs.cert_file):
        if ":" in str(path):  # a colon separates the endpoint's fields
            raise ValueError(f"certificate path must not contain ':': {path}")
    return f"ssl:{port}:privateKey={certs.key_file}:certKey={certs.cert_file}:interface=127.0.0.1"


class TlsServer(Server):
    """One daphne process serving the gateway over TLS (``https://`` and ``wss://``)."""

    def __init__(
        self, deployment: Deployment, certs: Certificates, port: int | None = None, **env: str
    ) -> None:
        super().__init__(deployment, port, kind="daphne", **env)
        self.certs = certs

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/ws/"

    def command(self) -> list[str]:
        return [DAPHNE, "-e", endpoint(self.port, self.certs), "posgateway.asgi:application"]

    def start(self, timeout: float = 30) -> TlsServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        context = self.certs.ssl_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited at start:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    f"{self.url}/healthz", timeout=2, context=context
                ) as resp:
                    if resp.status == 200:
                        return self
            except ssl.SSLCertVerificationError as exc:
                # A certificate problem will not fix itself by waiting.
                self.stop()
                raise RuntimeError(f"TLS verification failed: {exc}\n{self.log()}") from exc
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne (TLS) did not become healthy:\n{self.log()}")

    def healthz(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(
                f"{self.url}/healthz", timeout=5, context=self.certs.ssl_context()
            ) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def tls_server(deployment: Deployment, **env: str):
    """A started :class:`TlsServer` on ``deployment`` with fresh certificates; stopped after."""
    certs = make_certificates(deployment.workdir / f"tls-{uuid.uuid4().hex[:6]}")
    server = TlsServer(deployment, certs, **env)
    try:
        server.start()
        yield server
    finally:
        server.stop()
