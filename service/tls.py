"""The Gateway's HTTPS: ``server.tls`` as BentoML 1.4's ``@bentoml.service(ssl={...})``.

BentoML hands these to uvicorn in every worker. Its default ``cert_reqs`` is 0 (CERT_NONE), so
a CA alone would still let a client without a certificate in: with ``ca_certs`` set we require
one (``ssl.CERT_REQUIRED``), which is mTLS on every route, the probes included
(docs/security.md says how probes work then).
"""

from __future__ import annotations

import ssl
from typing import Any

from service.settings_security import TlsSettings

# TLS 1.2 suites with forward secrecy and AEAD (TLS 1.3's are fixed by OpenSSL); BentoML's
# default, "TLSv1", also allows CBC suites
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def bentoml_ssl(tls: TlsSettings) -> dict[str, Any]:
    """The ``ssl=`` keyword for ``@bentoml.service``, or nothing (plain HTTP).

    >>> bentoml_ssl(TlsSettings())
    {}
    """
    if not tls.enabled:
        return {}
    config: dict[str, Any] = {"enabled": True, "certfile": str(tls.certfile),
                              "keyfile": str(tls.keyfile), "ciphers": CIPHERS}
    if tls.ca_certs is not None:
        config.update(ca_certs=str(tls.ca_certs), cert_reqs=int(ssl.CERT_REQUIRED))
    return {"ssl": config}
