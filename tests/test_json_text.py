"""JSON from outside cannot crash the process by its nesting, whatever the recursion limit.

Method: a child process raises the recursion limit as py_ecc does on import (100,000) and parses
a deeply nested chain config and key file, which must be refused with their usual errors; the
depth count is checked against a plain reference on generated JSON, strings with brackets and
escaped quotes included.
"""

import json
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsunagi.core.json_text import nesting_depth


def test_deep_json_is_refused_even_when_the_recursion_limit_is_raised(tmp_path):
    deep = tmp_path / "deep.key"
    deep.write_text("[" * 100_000)
    code = f"""
import sys
sys.setrecursionlimit(100_000)  # what importing py_ecc (the Ethereum leg) does
from tsunagi.core.config import ChainConfig
from tsunagi.core.keyfile import load_key
from tsunagi.errors import ConfigError, KeyFileError
for call, error in ((lambda: ChainConfig.from_json("[" * 100_000), ConfigError),
                    (lambda: load_key({str(deep)!r}, "x"), KeyFileError)):
    try:
        call()
    except error as refused:
        print(type(refused).__name__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ConfigError", "KeyFileError"]


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.text(alphabet='[]{}"\\k', max_size=4), children, max_size=3),
    max_leaves=20)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_nesting_depth_counts_brackets_outside_strings_only(value):
    assert nesting_depth(json.dumps(value).encode()) == _depth(value)
