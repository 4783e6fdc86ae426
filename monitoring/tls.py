"""TLS for the connections Vigil opens: webhook targets and the ``vigil`` CLI.

One function builds the ``ssl.SSLContext`` every client uses, so a CA bundle, a client
certificate and the rare "do not verify" mean the same everywhere. Verification is on unless a
caller turns it off for one target; whoever does must log it (``webhooks.targets_from_config``
warns at start).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx


def client_context(ca_bundle: str | Path | None = None, *, verify: bool = True,
                   certfile: str | Path | None = None,
                   keyfile: str | Path | None = None) -> ssl.SSLContext:
    """A client context: the system's CAs, or ``ca_bundle`` (a PEM file) instead; a client
    certificate for a server that asks for one (mTLS); ``verify=False`` checks nothing."""
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if certfile:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
    return ctx


def target_mounts(targets: Iterable[Any]) -> dict[str, httpx.BaseTransport]:
    """httpx mounts giving each webhook target with its own ``ca_bundle`` or ``verify: false``
    its own TLS context, by scheme, host and port (targets sharing one share its settings)."""
    mounts: dict[str, httpx.BaseTransport] = {}
    for t in targets:
        if t.ca_bundle or not t.verify:
            parts = urlsplit(t.url)
            mounts[f"{parts.scheme}://{parts.netloc}"] = httpx.HTTPTransport(
                verify=client_context(t.ca_bundle, verify=t.verify))
    return mounts
