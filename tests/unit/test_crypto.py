"""Sealing with STREAMAPP_SECRET_KEY: round trips, refuses what it cannot trust, never echoes a key."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from streamapp.connections.crypto import check_key, generate_key, seal, unseal
from streamapp.errors import ConfigurationError
from streamapp.settings import Settings

SECRET = b'{"auth_token": "d3adb33fc0ffee00d3adb33fc0ffee00"}'


def with_key(key: str | None) -> Settings:
    return Settings(secret_key=SecretStr(key) if key is not None else None)


def test_a_sealed_value_opens_with_its_key_and_shows_nothing_of_the_plaintext() -> None:
    settings = with_key(generate_key())

    sealed = seal(settings, SECRET)

    assert unseal(settings, sealed) == SECRET
    assert b"d3adb33f" not in sealed and b"auth_token" not in sealed
    assert seal(settings, SECRET) != sealed  # a fresh IV every time: equal secrets do not look equal


def test_generated_keys_are_new_each_time_and_usable() -> None:
    keys = {generate_key() for _ in range(5)}
    assert len(keys) == 5
    for key in keys:
        assert len(key) == 44
        check_key(with_key(key))


@pytest.mark.parametrize("key", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_a_missing_key_says_how_to_make_one(key: str | None) -> None:
    for use in (lambda s: seal(s, SECRET), lambda s: unseal(s, b"x"), check_key):
        with pytest.raises(ConfigurationError, match=r"STREAMAPP_SECRET_KEY is not set.*streamapp secret-key"):
            use(with_key(key))


@pytest.mark.parametrize(
    "key",
    [
        "not-a-key",
        "A" * 43 + "!",  # the right length, not base64
        "QUFB",  # valid base64 of 3 bytes: too short
        generate_key()[:-2],
        "clé-secrète-" + "x" * 32,  # not ASCII
    ],
)
def test_a_malformed_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigurationError, match="STREAMAPP_SECRET_KEY is malformed") as raised:
        seal(with_key(key), SECRET)
    assert key not in str(raised.value)
    assert "streamapp secret-key" in str(raised.value)


def test_a_value_sealed_under_another_key_or_altered_does_not_open() -> None:
    sealed = seal(with_key(generate_key()), SECRET)
    other = with_key(generate_key())

    with pytest.raises(ConfigurationError, match="another key") as raised:
        unseal(other, sealed)
    assert sealed.decode() not in str(raised.value)

    mine = with_key(generate_key())
    token = bytearray(seal(mine, SECRET))
    token[len(token) // 2] ^= 1  # flip one bit of the base64 text
    with pytest.raises(ConfigurationError, match="altered"):
        unseal(mine, bytes(token))


def test_keys_rotate_the_first_seals_every_one_opens() -> None:
    old, new = generate_key(), generate_key()
    sealed_before = seal(with_key(old), SECRET)
    rotating = with_key(f"{new}, {old}")

    assert unseal(rotating, sealed_before) == SECRET
    sealed_now = seal(rotating, SECRET)
    assert unseal(with_key(new), sealed_now) == SECRET  # sealed under the new key only
    with pytest.raises(ConfigurationError):
        unseal(with_key(old), sealed_now)

    with pytest.raises(ConfigurationError, match="key 2 of STREAMAPP_SECRET_KEY is malformed") as raised:
        check_key(with_key(f"{new},oops"))
    assert "oops" not in str(raised.value)


def test_the_key_is_read_from_the_environment_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("STREAMAPP_SECRET_KEY", key)

    settings = Settings()

    assert unseal(settings, seal(with_key(key), SECRET)) == SECRET
    assert key not in repr(settings) and key not in str(settings)
