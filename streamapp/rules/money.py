"""Money as shops and customers read it."""

from __future__ import annotations


def format_money(cents: int, currency: str) -> str:
    """``2000, "USD"`` -> ``$20.00``; other currencies as ``20.00 EUR``.

    Integer arithmetic: exact for any amount an event may carry (a float is not past 2**53,
    and cannot hold one past 10**308 at all).
    """
    units, rest = divmod(abs(cents), 100)
    amount = f"{'-' if cents < 0 else ''}{units:,}.{rest:02d}"
    return f"${amount}" if currency == "USD" else f"{amount} {currency}"
