"""TLS for the backend client, with the standard library's ssl alone.

An https:// backend is verified against the system's trust store, like a browser would. A backend
with a self-signed certificate is trusted by that certificate's SHA-256 fingerprint instead
(pinned, the way SSH trusts a host key): the fingerprint is compared right after the TLS
handshake, before a byte of the request (the token) is written, and a certificate that does not
match ends the connection there.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import ssl

SHA256_HEX_DIGITS = 64
_SEPARATORS = re.compile(r"[\s:]")


class CertificateMismatch(Exception):
    """The backend's certificate is not the pinned one; nothing was sent to it."""


def pinned_fingerprint(text: str) -> str:
    """A pasted SHA-256 fingerprint ("AB:CD:...", with or without colons, any case) as 64
    uppercase hex digits; ValueError when it is not one."""
    digits = _SEPARATORS.sub("", text).upper()
    if len(digits) != SHA256_HEX_DIGITS or not all(c in "0123456789ABCDEF" for c in digits):
        raise ValueError(
            f"{text.strip()!r} is not a SHA-256 fingerprint: 64 hexadecimal digits, often"
            " written in pairs with colons (AB:CD:...), as the backend prints it at start"
        )
    return digits


def shown(fingerprint: str) -> str:
    """64 hex digits as the backend prints them: AB:CD:..."""
    return ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))


def is_loopback_host(host: str) -> bool:
    """Whether a URL's host names this machine (localhost, 127.0.0.0/8, ::1), from the text
    alone: nothing is resolved."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def trust_store_context() -> ssl.SSLContext:
    """The system's certificate authorities and a host name check."""
    return ssl.create_default_context()


def pinned_context() -> ssl.SSLContext:
    """A context that leaves the certificate to the pin: no authority signed a self-signed one,
    and its names are checked by the fingerprint, which covers them. The handshake still proves
    that the server holds the certificate's private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that refuses any certificate but the pinned one before it sends."""

    def __init__(
        self,
        host: str,
        port: int | None,
        *,
        fingerprint: str,
        context: ssl.SSLContext,
        timeout: float,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._pin = fingerprint

    def connect(self) -> None:
        super().connect()  # TCP, then the whole TLS handshake (wrap_socket)
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        presented = hashlib.sha256(der).hexdigest().upper() if der else ""
        if presented != self._pin:
            self.close()
            where = f"{self.host}:{self.port}"
            raise CertificateMismatch(
                f"the backend at {where} presented a certificate with the SHA-256 fingerprint"
                f" {shown(presented) if presented else '(none)'}, but the add-on preferences"
                f" expect {shown(self._pin)}; the token was not sent. If the backend made a new"
                " certificate, paste the fingerprint it printed at start; otherwise someone may"
                " be intercepting the connection"
            )
