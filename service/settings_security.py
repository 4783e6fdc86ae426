"""The security sections of the Settings: TLS in transit and the prediction log's keys.
Kept apart from ``service.settings`` (which imports them) so each module stays one screenful
of keys; the threat model they serve is docs/security.md."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from monitoring.log.frames import LogKeys


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_key(value: SecretStr | None, field: str) -> SecretStr | None:
    """32 random bytes in standard base64, or a clear error naming the key (never its value)."""
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.get_secret_value().strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field} is not standard base64") from None
    if len(raw) != 32:
        raise ValueError(f"{field} decodes to {len(raw)} bytes; it must be 32 random bytes "
                         "(python -c 'import os,base64; "
                         "print(base64.b64encode(os.urandom(32)).decode())')")
    return value


class TlsSettings(_Section):
    certfile: Path | None = Field(None, description="PEM certificate (chain) the Gateway "
                                  "serves HTTPS with, on every route and probe "
                                  "(`VIGIL_SERVER__TLS__CERTFILE`); unset: plain HTTP.")
    keyfile: Path | None = Field(None, description="PEM private key of `certfile` "
                                 "(`VIGIL_SERVER__TLS__KEYFILE`).")
    ca_certs: Path | None = Field(None, description="PEM bundle of the CAs whose client "
                                  "certificates are accepted: set, every client must present "
                                  "one (mTLS; probes too, see docs/security.md).")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("server.tls needs both certfile and keyfile")
        if self.ca_certs is not None and self.certfile is None:
            raise ValueError("server.tls.ca_certs (mTLS) needs certfile and keyfile")
        for path in (self.certfile, self.keyfile, self.ca_certs):
            if path is not None and not path.is_file():
                raise ValueError(f"server.tls: {path} is not a file")
        return self

    @property
    def enabled(self) -> bool:
        return self.certfile is not None


class LogEncryptionSettings(_Section):
    key: SecretStr | None = Field(None, description="The active key of the prediction log's "
                                  "AES-256-GCM frames: 32 random bytes in standard base64 "
                                  "(`VIGIL_LOG__ENCRYPTION__KEY`). Unset: the log is clear "
                                  "JSON lines.")
    key_file: Path | None = Field(None, description="A file holding `key` (e.g. a mounted "
                                  "secret); used when `key` is unset.")
    previous_keys: list[SecretStr] = Field([], description="Older keys, same form, that still "
                                           "open segments they sealed (key rotation: "
                                           "docs/security.md).")

    @field_validator("key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        return check_key(v, "log.encryption.key")

    @field_validator("previous_keys")
    @classmethod
    def _previous(cls, v: list[SecretStr]) -> list[SecretStr]:
        for i, k in enumerate(v):
            check_key(k, f"log.encryption.previous_keys[{i}]")
        return v

    @model_validator(mode="after")
    def _from_file(self) -> LogEncryptionSettings:
        if self.key is None and self.key_file is not None:
            try:
                text = self.key_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"log.encryption.key_file: {exc.strerror}") from None
            self.key = check_key(SecretStr(text), "log.encryption.key_file")
        return self

    def keys(self) -> LogKeys | None:
        """The keys the log's writers seal with and its readers open with; None: clear."""
        return LogKeys.from_config(self.key.get_secret_value() if self.key else None,
                                   [k.get_secret_value() for k in self.previous_keys])
