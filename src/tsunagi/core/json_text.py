"""JSON from outside, parsed with its nesting bounded before the parser sees it.

``json.loads`` recurses once a level of nesting, in C, and stops at the interpreter's recursion
limit with RecursionError, but only while that limit is below what the thread's C stack holds:
py-evm and py_ecc raise the limit to 100,000 when they are imported (the Ethereum leg), and
then ``"[" * 100_000`` overflows the stack and kills the process. A text nested deeper than
``limits.json_depth_max`` is refused here first, so bad input gets an error and never a crash,
whatever else the process imported.
"""

from __future__ import annotations

import json
import re

import numpy as np

from tsunagi import limits

__all__ = ["loads", "nesting_depth"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON ``data`` (brackets inside strings
    do not count)."""
    outside = _STRING.sub(b"", data)
    if not outside:
        return 0
    steps = _STEP[np.frombuffer(outside, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def loads(text: str | bytes, depth_max: int = limits.json_depth_max):
    """``json.loads`` of text nested at most ``depth_max`` deep; ValueError otherwise (as
    for any text that is not JSON)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if nesting_depth(data) > depth_max:
        raise ValueError(f"JSON nested more than {depth_max} deep")
    return json.loads(data)
