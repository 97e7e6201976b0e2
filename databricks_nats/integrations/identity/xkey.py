"""NATS curve keys ("xkeys") and the sealed boxes an encrypted auth callout exchanges.

When the server's ``auth_callout`` has an ``xkey``, it encrypts each authorization request for that curve key
(the service holds the seed) and names its own curve public key in the ``Nats-Server-Xkey`` header; the service
seals its response for that key. The format is that of nats-io/nkeys ``xkeys.go`` (``Seal``/``Open``):
``b"xkv1" + 24-byte nonce + NaCl box(curve25519-xsalsa20-poly1305)``, which is exactly PyNaCl's
``Box.encrypt`` output (nonce, then MAC and ciphertext) behind the version tag.

Keys use the nkeys text encoding with the curve prefix byte (``23 << 3``): public keys read ``X...``, seeds
``SX...`` (base32 without padding of prefix + 32 raw bytes + CRC16, little-endian). The ``nkeys`` Python
package (0.2) knows no curve prefix, so the encoding is done here with its ``crc16``; PyNaCl does the box.
Both are imported lazily, so importing this module needs neither.
"""

from __future__ import annotations

import base64
import os

__all__ = ["new_xkey", "open_sealed", "public_key", "seal"]

_PREFIX_CURVE = 23 << 3  # base32-encodes to 'X'
_PREFIX_SEED = 18 << 3  # base32-encodes to 'S'
_VERSION = b"xkv1"
_NONCE_LEN = 24
_KEY_LEN = 32


def _crc16(data: bytes) -> bytes:
    import nkeys

    return int(nkeys.crc16(bytearray(data))).to_bytes(2, "little")


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw + _crc16(raw)).decode().rstrip("=")


def _unb32(text: str, what: str) -> bytes:
    """The payload of an nkeys-encoded string (prefix bytes included), its CRC checked."""
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, TypeError):
        raise ValueError(f"invalid {what}: not base32") from None
    if len(raw) < 3 or _crc16(raw[:-2]) != raw[-2:]:
        raise ValueError(f"invalid {what}: bad checksum")
    return raw[:-2]


def _encode_seed(raw: bytes) -> str:
    return _b32(bytes([_PREFIX_SEED | _PREFIX_CURVE >> 5, (_PREFIX_CURVE & 31) << 3]) + raw)


def _decode_seed(seed: str) -> bytes:
    raw = _unb32(seed, "curve seed")
    prefix = (raw[0] & 7) << 5 | (raw[1] & 248) >> 3
    if raw[0] & 248 != _PREFIX_SEED or prefix != _PREFIX_CURVE or len(raw) != 2 + _KEY_LEN:
        raise ValueError("invalid curve seed: not an SX... seed")
    return raw[2:]


def _decode_public(public: str) -> bytes:
    raw = _unb32(public, "curve public key")
    if raw[0] != _PREFIX_CURVE or len(raw) != 1 + _KEY_LEN:
        raise ValueError("invalid curve public key: not an X... key")
    return raw[1:]


def _public_of(raw_seed: bytes) -> str:
    from nacl.public import PrivateKey

    return _b32(bytes([_PREFIX_CURVE]) + bytes(PrivateKey(raw_seed).public_key))


def new_xkey() -> tuple[str, str]:
    """A fresh curve key pair: ``(seed "SX...", public "X...")``."""
    raw = os.urandom(_KEY_LEN)
    return _encode_seed(raw), _public_of(raw)


def public_key(seed: str) -> str:
    """The ``X...`` public key of an ``SX...`` seed."""
    return _public_of(_decode_seed(seed))


def seal(data: bytes, sender_seed: str, recipient_public: str) -> bytes:
    """Encrypt ``data`` from the sender's seed to the recipient's public key (xkv1 format)."""
    from nacl.public import Box, PrivateKey, PublicKey

    box = Box(PrivateKey(_decode_seed(sender_seed)), PublicKey(_decode_public(recipient_public)))
    return _VERSION + bytes(box.encrypt(bytes(data), os.urandom(_NONCE_LEN)))


def open_sealed(data: bytes, recipient_seed: str, sender_public: str) -> bytes:
    """Decrypt what ``seal`` (or a nats-server) produced; ``ValueError`` when it does not open."""
    from nacl.exceptions import CryptoError
    from nacl.public import Box, PrivateKey, PublicKey

    data = bytes(data)
    if not data.startswith(_VERSION) or len(data) < len(_VERSION) + _NONCE_LEN + 16:
        raise ValueError("not an xkv1 sealed message")
    box = Box(PrivateKey(_decode_seed(recipient_seed)), PublicKey(_decode_public(sender_public)))
    body = data[len(_VERSION) :]
    try:
        return bytes(box.decrypt(body[_NONCE_LEN:], body[:_NONCE_LEN]))
    except CryptoError:
        raise ValueError("sealed message does not open with these keys") from None
