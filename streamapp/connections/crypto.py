"""Sealing secrets at rest with ``STREAMAPP_SECRET_KEY``: provider credentials, never in the clear.

Fernet (from ``cryptography``) because it is the maintained, misuse-resistant recipe for
exactly this: AES-128-CBC plus HMAC-SHA256 under one 32-byte key, a fresh IV per seal, and
authentication, so a sealed value that was altered, truncated or sealed under another key is
refused instead of decrypting to garbage.

``STREAMAPP_SECRET_KEY`` holds one key, or several separated by commas for rotation: the
first seals, every one of them unseals. To rotate, put the new key first, keep the old one
after it until every sealed value was written again, then drop it.

Errors never contain a key or a plaintext: a missing or malformed key and a value that does
not open are :class:`~streamapp.errors.ConfigurationError` with a message saying what to do.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from streamapp.errors import ConfigurationError
from streamapp.settings import Settings

_HOW_TO_MAKE_ONE = "make one with `streamapp secret-key` (32 random bytes, URL-safe base64, 44 characters)"


def generate_key() -> str:
    """A new random key for ``STREAMAPP_SECRET_KEY``; keep it safe: losing it loses what it sealed."""
    return Fernet.generate_key().decode("ascii")


def _sealer(settings: Settings) -> MultiFernet:
    """The Fernet of every configured key, the first one sealing; ConfigurationError if unusable."""
    if settings.secret_key is None or not settings.secret_key.get_secret_value().strip():
        raise ConfigurationError(
            f"STREAMAPP_SECRET_KEY is not set; it seals provider credentials at rest: {_HOW_TO_MAKE_ONE}"
        )
    keys = [key.strip() for key in settings.secret_key.get_secret_value().split(",")]
    fernets: list[Fernet] = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode("ascii")))
        except (ValueError, UnicodeEncodeError):  # binascii.Error is a ValueError; the key is never echoed
            which = "STREAMAPP_SECRET_KEY" if len(keys) == 1 else f"key {position} of STREAMAPP_SECRET_KEY"
            raise ConfigurationError(f"{which} is malformed: {_HOW_TO_MAKE_ONE}") from None
    return MultiFernet(fernets)


def check_key(settings: Settings) -> None:
    """Raise ConfigurationError now if the key is missing or malformed (for start-up checks)."""
    _sealer(settings)


def seal(settings: Settings, plaintext: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated under the first configured key."""
    return _sealer(settings).encrypt(plaintext)


def unseal(settings: Settings, sealed: bytes) -> bytes:
    """The plaintext of a value :func:`seal` produced under any configured key.

    ConfigurationError if no configured key opens it: it was sealed under another key
    (the usual cause: STREAMAPP_SECRET_KEY changed) or altered since.
    """
    try:
        return _sealer(settings).decrypt(sealed)
    except InvalidToken:
        raise ConfigurationError(
            "a sealed value does not open with STREAMAPP_SECRET_KEY: it was sealed under another key "
            "(restore that key, or list it after the new one) or it was altered"
        ) from None
