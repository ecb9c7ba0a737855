"""Certificates the TLS tests make themselves with the openssl command: a test authority and a
server certificate it signed, or a lone self-signed one."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class ServerCertificate:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the certificate, AB:CD:...
    authority: Path | None  # the test CA's certificate that signed it, if one did


def fingerprint(pem: Path) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file, as openssl reads it."""
    said = _openssl("x509", "-in", str(pem), "-noout", "-fingerprint", "-sha256")
    return said.strip().partition("=")[2].upper()


def _openssl(*args: str) -> str:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make test certificates")
    done = subprocess.run([openssl, *args], check=True, capture_output=True, text=True, timeout=60)
    return done.stdout


def self_signed(folder: Path, name: str = "server") -> ServerCertificate:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl(
        "req", "-x509", *EC_KEY, "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", f"/CN={name}", "-addext", SERVER_NAMES,
    )  # fmt: skip
    return ServerCertificate(cert, key, fingerprint(cert), None)


def signed_by_test_authority(folder: Path) -> ServerCertificate:
    """A server certificate for 127.0.0.1 and localhost, signed by a CA made here (one no
    system trusts unless told to)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        "req", "-x509", *EC_KEY, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=Framesmith test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    _openssl("req", "-new", *EC_KEY, "-keyout", str(key), "-out", str(request), "-subj", "/CN=x")
    extensions = folder / "server.ext"
    extensions.write_text(
        f"{SERVER_NAMES}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return ServerCertificate(cert, key, fingerprint(cert), ca)
