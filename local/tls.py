"""A throwaway certificate authority for the local inbox, made at start-up (nothing secret is committed).

The function is pointed at the CA file through the URI's tlsCaFile option, so it verifies the inbox's
certificate exactly as it verifies a real provider's: the secure path is the one exercised.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

# The names the function may dial the inbox by.
SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LocalTls:
    ca_file: Path  # PEM of the CA: what clients trust
    server_context: ssl.SSLContext  # the inbox's side of the handshake

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def create_local_tls(folder: Path) -> LocalTls:
    """A fresh CA (written to folder/ca.pem) and a server certificate for 127.0.0.1 and localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name="mailer local inbox")
    ca_file = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*SERVER_NAMES).configure_cert(server_context)
    return LocalTls(ca_file=ca_file, server_context=server_context)
