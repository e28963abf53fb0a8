"""Pinned SSH host keys for the unit tier's stack configs: the config refuses unpinned masters unless a
stack sets ssh.insecureSkipHostKeyCheck."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def host_key(i: int) -> str:
    """A real ed25519 public host key, the same for master i on every run (no host holds its private half)."""
    key = Ed25519PrivateKey.from_private_bytes(bytes([i % 255 + 1]) * 32).public_key()
    return key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
