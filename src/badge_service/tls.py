"""TLS and mTLS for the gRPC port, with certificates that can change while the server runs.

gRPC asks ``CertificateReloader.fetch`` before every new connection's handshake; it answers
with new credentials when the files changed on disk (or a reload was requested, on SIGHUP),
else with None (keep the current ones). Connections already open keep the certificate they
were made with, so a renewal drops nothing. Files that fail to load at start-up stop the
server with one clear line; files that fail to load later are logged and the previous
certificate stays in use.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
from dataclasses import dataclass

import grpc

log = logging.getLogger("badge_service.tls")


class TlsError(Exception):
    """A certificate, key or CA file that cannot be used; the message names it and why."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM files of the server's TLS: its certificate chain and key, and, for mTLS, the
    CA bundle that client certificates must chain to."""

    cert: str
    key: str
    client_ca: str = ""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _check(files: TlsFiles) -> None:
    """Raises TlsError unless the files hold a certificate chain, its matching key and (for
    mTLS) at least one CA certificate, as OpenSSL reads them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise TlsError(
            f"the TLS certificate {files.cert} and key {files.key} do not make a usable pair "
            f"(PEM certificate chain and its private key expected): {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TlsError(
            f"cannot read the TLS certificate or key ({files.cert}, {files.key}): "
            f"{exc.strerror or exc}"
        ) from None
    if files.client_ca:
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(
                f"the client CA file {files.client_ca} holds no usable PEM certificate: "
                f"{getattr(exc, 'reason', None) or exc}"
            ) from None


class CertificateReloader:
    """The server's TLS credentials, reloaded when their files change or on request."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._forced = False
        self._stamp = self._stamps()
        self._initial = self._load()

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        paths = [self.files.cert, self.files.key]
        if self.files.client_ca:
            paths.append(self.files.client_ca)
        out = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                out.append((0, 0, 0))
            else:
                out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        _check(self.files)
        key = _read(self.files.key, "TLS key")
        cert = _read(self.files.cert, "TLS certificate")
        ca = _read(self.files.client_ca, "client CA file") if self.files.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def request_reload(self) -> None:
        """Makes the next handshake re-read the files (SIGHUP)."""
        self._forced = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """New credentials when the files changed or a reload was requested, else None. Called
        by gRPC before each new connection's handshake, from its own threads."""
        stamp = self._stamps()
        if not self._forced and stamp == self._stamp:
            return None
        with self._lock:
            if not self._forced and stamp == self._stamp:
                return None
            self._forced = False
            self._stamp = stamp
            try:
                config = self._load()
            except TlsError as exc:
                # Perhaps caught halfway through a renewal; the next change is tried again.
                log.warning("keeping the current TLS certificate", extra={"reason": str(exc)})
                return None
        log.info("TLS certificate reloaded", extra={"cert": self.files.cert})
        return config

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that use this reloader (mTLS when there is a client CA)."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,
            require_client_authentication=bool(self.files.client_ca),
        )


def is_loopback(address: str) -> bool:
    """Whether a host:port address only listens on the loopback interface."""
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every interface)
        return False
