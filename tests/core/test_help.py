"""``io-pkt --help`` / ``-h``: the usage on stdout, exit 0, naming every tool of the
registry; a real usage error still exits 2 (issue 14, item 6)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator

import pytest

from stack import main as io_pkt
from stack.tools import TOOLS
from tests.conftest import IO_PKT, REPO, io_pkt_env


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() in this process sets up the io-pkt logger (level, a console handler on
    the captured stderr): undo it, or later tests' log assertions see its records and
    its handler writes to a closed stream."""
    logger = logging.getLogger("io-pkt")
    level, handlers = logger.level, list(logger.handlers)
    yield
    for h in logger.handlers[:]:
        if h not in handlers:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(level)


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["-v", "--help"],
                                  ["-d", "tap", "-h"]])
def test_help_prints_usage_and_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert io_pkt.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: io-pkt "), out
    assert err == ""
    for tool in TOOLS:  # every subcommand, from the registry: pfctl and any added later
        assert tool in out, (tool, out)


def test_usage_lists_exactly_the_registry() -> None:
    from stack.cmdline import usage

    text = usage()
    listed = text.split("TOOL [ARGS]", 1)[1].split("(", 1)[1].split(")", 1)[0]
    names = {w.strip(" ,") for w in listed.split()} - {""}
    assert names == set(TOOLS), (names, text)


def test_help_from_the_console_script() -> None:
    for flag in ("--help", "-h"):
        r = subprocess.run(IO_PKT + [flag], cwd=REPO, env=io_pkt_env(), text=True,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r
        assert r.stdout.startswith("usage: io-pkt ") and "pfctl" in r.stdout, r.stdout
        assert r.stderr == ""


@pytest.mark.parametrize("argv", [["-d"], ["-i", "x"], ["-d", "tap", "stray", "more"],
                                  ["-p", "tcpip", "prefix=relative"]])
def test_usage_errors_still_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert io_pkt.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("io-pkt: "), (out, err)


def test_unknown_tool_exits_2_and_names_the_tools(capsys: pytest.CaptureFixture[str]) -> None:
    assert io_pkt.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert "unknown tool 'frobnicate'" in err and "pfctl" in err
