"""Client side: mTLS channels from a client profile (a small TOML file)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import grpc

from custos.signer.edge.errors import ConfigError


@dataclass(frozen=True)
class ClientProfile:
    """Where the server is and which certificate this client presents."""

    endpoint: str
    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def load(cls, path: Path) -> ClientProfile:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read client profile {path}: {exc}") from exc
        expected = {"endpoint", "ca_cert", "cert", "key"}
        if set(raw) != expected:
            raise ConfigError(
                f"{path}: a client profile has exactly the keys {', '.join(sorted(expected))}"
            )
        base = path.resolve().parent
        return cls(
            endpoint=str(raw["endpoint"]),
            ca_cert=base / raw["ca_cert"],
            cert=base / raw["cert"],
            key=base / raw["key"],
        )

    def _read(self, name: str, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"client profile {name} {path}: {exc.strerror}") from exc

    def channel(self, endpoint: str | None = None) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self._read("ca_cert", self.ca_cert),
            private_key=self._read("key", self.key),
            certificate_chain=self._read("cert", self.cert),
        )
        return grpc.secure_channel(
            endpoint or self.endpoint,
            credentials,
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
