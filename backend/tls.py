"""HTTPS for a backend reached over a network: a certificate the user gives (--tls-cert and
--tls-key), or a self-signed one made once and kept in the data folder (--tls-self-signed).

A self-signed certificate is trusted by its SHA-256 fingerprint, which the backend prints at
start and writes in its ready file, and the user pastes once into the add-on's preferences.
It is made by the `openssl` command (the backend has no X.509 library of its own) with an
ECDSA P-256 key, and reused across restarts while it names every host it must.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import re
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .data_folder import make_private
from .files import atomic_write

log = logging.getLogger("framesmith.server")

SELF_SIGNED_PEM = "self-signed.pem"  # the private key, then the certificate
SELF_SIGNED_NAMES = "self-signed.json"  # the names it was made for, and its fingerprint
VALID_DAYS = 3650  # trusted by fingerprint, not by date: a long life spares re-pasting it
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_CERT_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*$")


class TlsError(Exception):
    """The certificate cannot be used or made; the message says why and what to do."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path | None  # None: the key is in the certificate's file
    fingerprint: str  # SHA-256 of the certificate (DER), as AB:CD:...
    self_signed: bool


def fingerprint_of(pem: str) -> str:
    """SHA-256 of the first certificate in PEM text (the server's own, in a chain file)."""
    block = _CERT_BLOCK.search(pem)
    if block is None:
        raise ValueError("no PEM certificate in it")
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(block.group(0))).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def given_pair(cert: Path, key: Path) -> TlsFiles:
    """The user's certificate and key, checked to load together now (not at the first
    connection); TlsError with the reason when they do not."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        fingerprint = fingerprint_of(cert.read_text(errors="replace"))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(
            f"cannot serve HTTPS with the certificate {cert} and the key {key}: {exc}"
            " (both must be PEM files, the key unencrypted and matching the certificate)"
        ) from exc
    return TlsFiles(cert.resolve(), key.resolve(), fingerprint, self_signed=False)


def certificate_names(bind_host: str, allowed_hosts: Iterable[str]) -> tuple[str, ...]:
    """What a self-signed certificate names: the loopback names, the bound address unless it
    is a wildcard, and every --allow-host name."""
    names = [*LOOPBACK_NAMES]
    bound = bind_host.strip("[]")
    if bound not in ("0.0.0.0", "::"):
        names.append(bound)
    names.extend(h.strip("[]") for h in allowed_hosts)
    for name in names:
        if not _is_ip(name) and _DNS_NAME.match(name) is None:
            raise TlsError(f"{name!r} is not a host name or IP address a certificate can name")
    return tuple(sorted(set(n.lower() for n in names)))


def self_signed(folder: Path, names: tuple[str, ...]) -> TlsFiles:
    """The data folder's self-signed certificate for `names`: the one made before when it
    names them all, else a new one (whose new fingerprint the user must paste again)."""
    pem_path, names_path = folder / SELF_SIGNED_PEM, folder / SELF_SIGNED_NAMES
    kept = _reusable(pem_path, names_path, names)
    if kept is not None:
        return kept
    if pem_path.exists():
        log.warning(
            "the self-signed certificate in %s does not name all of %s: making a new one,"
            " with a new fingerprint to paste into the add-on's preferences",
            folder,
            ", ".join(names),
        )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = _make_self_signed(folder, names)
    fingerprint = fingerprint_of(pem)
    atomic_write(pem_path, pem.encode())
    pem_path.chmod(0o600)
    atomic_write(
        names_path, json.dumps({"names": list(names), "fingerprint": fingerprint}).encode()
    )
    return TlsFiles(pem_path, None, fingerprint, self_signed=True)


def _reusable(pem_path: Path, names_path: Path, names: tuple[str, ...]) -> TlsFiles | None:
    try:
        pem = pem_path.read_text()
        made_for = json.loads(names_path.read_text())
        fingerprint = fingerprint_of(pem)
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pem_path)
    except (OSError, ValueError, ssl.SSLError):
        return None
    if not isinstance(made_for, dict) or made_for.get("fingerprint") != fingerprint:
        return None  # not the names of this certificate (one of the two files was replaced)
    if not set(names) <= set(made_for.get("names") or ()):
        return None
    make_private(pem_path)
    return TlsFiles(pem_path, None, fingerprint, self_signed=True)


def _make_self_signed(folder: Path, names: tuple[str, ...]) -> str:
    """A new key and a certificate naming `names`, as one PEM text (the key first)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsError(
            "--tls-self-signed needs the openssl command to make its certificate, and it is not"
            " installed: install OpenSSL, or pass a certificate with --tls-cert and --tls-key"
        )
    alt_names = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in names)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".making-") as work:
        key, cert = Path(work) / "key.pem", Path(work) / "cert.pem"
        args = [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(VALID_DAYS),
            "-subj", "/CN=Framesmith backend", "-addext", f"subjectAltName={alt_names}",
        ]  # fmt: skip
        try:
            subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
            return key.read_text() + cert.read_text()
        except (OSError, subprocess.SubprocessError) as exc:
            said = getattr(exc, "stderr", "") or str(exc)
            raise TlsError(
                f"openssl could not make a self-signed certificate: {said.strip()[-500:]}"
                " (OpenSSL 1.1.1 or later is needed; or pass --tls-cert and --tls-key)"
            ) from exc


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
