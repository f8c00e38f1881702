"""What the README promises is what a newcomer sees: every block of its tour runs as written.

Method: read README.md and run the code blocks of its "A five-minute tour" section in a fresh
temporary directory, in order, as a reader would. Python blocks are plain code, run one after
another in one namespace as a program; what each prints must match the ``text`` block the
README shows after it, line by line (``...`` stands for what differs per run: keys, hashes,
times; a whole line of it for any number of lines). Shell blocks are sessions: a line
``$ command`` runs in one bash session that keeps its variables, and the lines under it are its
expected output (``...`` as above; a last line ``[N]`` is the exit status when it is not 0, as
in cram). A shell block the README says to run
"in another terminal" (an HTML comment ``<!-- tour: background -->`` before it) starts in the
background, and the tour goes on once its first output line is there, as a reader waits for the
node's ready line. The README's test command must be the one .ci/run runs.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BACKGROUND = "<!-- tour: background -->"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def _blocks(section: str) -> list[tuple[str, str, bool]]:
    """(language, body, background) of each fenced block, in order."""
    found = []
    for match in re.finditer(r"(?P<marker><!-- tour: background -->\n)?```(?P<lang>\w+)\n"
                             r"(?P<body>.*?)```", section, re.S):
        found.append((match["lang"], match["body"], bool(match["marker"])))
    return found


def _matches(expected: list[str], got: list[str]) -> bool:
    """Line-by-line match; ``...`` inside a line matches any text, a line of only ``...``
    any number of lines."""
    if not expected:
        return not got
    head, rest = expected[0], expected[1:]
    if head.strip() == "...":
        return any(_matches(rest, got[i:]) for i in range(len(got) + 1))
    if not got:
        return False
    pattern = ".*".join(re.escape(part) for part in head.rstrip().split("..."))
    return re.fullmatch(pattern, got[0].rstrip()) is not None and _matches(rest, got[1:])


class Shell:
    """One bash session for the tour's shell blocks: variables and the folder carry over."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.state = cwd / ".tour-state"
        self.background: list[subprocess.Popen] = []
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                    "COLUMNS": "100", "TERM": "dumb"}
        self.state.write_text("")

    def run(self, command: str) -> tuple[int, list[str]]:
        # Each command runs in bash after the saved variables and saves them again: set -a
        # exports every variable the command sets, export -p writes them out.
        script = (f"set -a\nsource {self.state}\n{command}\nstatus=$?\n"
                  f"export -p > {self.state}.next\n"
                  f"mv {self.state}.next {self.state}\nexit $status\n")
        done = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=300)
        return done.returncode, (done.stdout + done.stderr).splitlines()

    def start(self, command: str) -> str:
        process = subprocess.Popen(["bash", "-c", f"source {self.state}\nexec {command}"],
                                   cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.background.append(process)
        first = process.stdout.readline()
        if not first:
            raise AssertionError(f"`{command}` ended: {process.stderr.read()}")
        return first.rstrip()

    def stop(self) -> None:
        for process in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)


def _session(body: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of each ``$ `` line of a shell block; a command may
    go on over lines that end with a backslash."""
    steps: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i].removeprefix("> ")  # bash reads on past "\\"
            steps.append((command, []))
        elif steps:
            steps[-1][1].append(line)
        i += 1
    return steps


def _run_python(body: str, globs: dict, name: str, expected: list[str]) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(body, name, "exec"), globs)  # noqa: S102 - the README's own code
    got = printed.getvalue().splitlines()
    assert _matches(expected, got), f"{name} printed:\n" + "\n".join(got) + \
        "\nthe README shows:\n" + "\n".join(expected)


def _run_shell(shell: Shell, body: str, background: bool) -> None:
    for command, expected in _session(body):
        if background:
            first = shell.start(command)
            assert _matches(expected[:1], [first]), f"$ {command}\nfirst line: {first}"
            continue
        status, got = shell.run(command)
        wanted = 0
        if expected and re.fullmatch(r"\[\d+\]", expected[-1].strip()):  # cram's exit status
            wanted, expected = int(expected[-1].strip()[1:-1]), expected[:-1]
        assert status == wanted and _matches(expected, got), \
            f"$ {command}\nexit {status}, printed:\n" + "\n".join(got) + \
            "\nthe README shows:\n" + "\n".join(expected)


@pytest.mark.timeout(900)
def test_the_tour_runs_as_written(tmp_path, monkeypatch):
    blocks = _blocks(_section(README.read_text(), "A five-minute tour"))
    assert {lang for lang, _, _ in blocks} >= {"python", "sh"}
    monkeypatch.chdir(tmp_path)
    shell = Shell(tmp_path)
    globs: dict = {}
    try:
        for number, (lang, body, background) in enumerate(blocks):
            if lang == "python":
                following = blocks[number + 1] if number + 1 < len(blocks) else ("", "", False)
                assert following[0] == "text", f"block {number}: show what it prints after it"
                _run_python(body, globs, f"README tour block {number}",
                            following[1].splitlines())
            elif lang == "sh":
                _run_shell(shell, body, background)
    finally:
        shell.stop()
        for value in globs.values():  # close what the Python blocks left open
            close = getattr(value, "close", None)
            if callable(close) and type(value).__module__.startswith("tsunagi"):
                close()


def test_the_readme_test_command_is_what_ci_runs():
    text = README.read_text()
    section = _section(text, "Two commands")
    commands = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = commands[1].split("&&")[-1].strip()
    assert test_command in ci.splitlines()
    install = commands[1].split("&&")[-2].strip()  # the install step CI takes too
    assert install.replace("pip install", "python -m pip install --quiet") in ci
