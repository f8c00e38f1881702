"""Amounts as text: exact decimal strings to integer units and back. No floats anywhere."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from tsunagi.errors import EncodingError
from tsunagi.limits import u64_max


def parse_amount(text: str, decimals: int) -> int:
    """Units of ``text`` ("12.5" with 2 decimals is 1250); refuses what would need rounding."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise EncodingError(f"{text!r} is not an amount: write digits like 12.50") from exc
    if not value.is_finite() or value < 0:
        raise EncodingError(f"{text!r} is not a non-negative amount")
    units = value.scaleb(decimals)
    if units != units.to_integral_value():
        raise EncodingError(f"{text!r} has more than {decimals} decimals, the asset's smallest "
                            "unit")
    units = int(units)
    if units > u64_max:
        largest = format_amount(u64_max, decimals)
        raise EncodingError(f"{text!r} is above the largest amount, {largest}")
    return units


def format_amount(units: int, decimals: int) -> str:
    """``units`` as a decimal string with the asset's decimals (1250, 2 -> "12.50")."""
    if decimals == 0:
        return str(units)
    whole, fraction = divmod(units, 10**decimals)
    return f"{whole}.{fraction:0{decimals}d}"
