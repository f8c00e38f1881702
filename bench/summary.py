"""The closing summary of a benchmark module: lines on the terminal, figures in a JSON file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

Write = Callable[[str], None]


def module_summary(figures: dict, summarize: Callable[[Write], dict], results: Path):
    """An autouse module fixture: once the module's tests are done, if they put anything in
    ``figures``, ``summarize(write_line)`` prints its lines on the terminal and returns what
    goes to ``results`` as JSON. Assign it to a name in the module (``summary = ...``)."""

    @pytest.fixture(scope="module", autouse=True)
    def summary(request):
        yield
        if not figures:
            return
        plugins = request.config.pluginmanager
        # Teardown output is captured like a test's: suspend capturing to print to the terminal.
        with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
            written = summarize(plugins.get_plugin("terminalreporter").write_line)
        results.parent.mkdir(exist_ok=True)
        results.write_text(json.dumps(written, indent=1) + "\n")

    return summary
