"""Shared by the tools: choose the stack (SOCK / --prefix), talk to control files, print
one clear error line and exit non-zero."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path


class ToolError(Exception):
    """One line for the user; the tool exits 1."""


def unknown_option(option: str, usage: str) -> ToolError:
    """``unknown option -Z (usage: ...)``: the error and the usage on one line."""
    return ToolError(f"unknown option {option} ({usage})")


def bad_usage(what: str, usage: str) -> ToolError:
    """``unexpected argument: X (usage: ...)`` and the like, on one line."""
    return ToolError(f"{what} ({usage})")


def wants_help(args: list[str]) -> bool:
    """``-h`` as the first argument, or ``--help`` anywhere: print the usage, exit 0."""
    return bool(args) and (args[0] in ("-h", "--help") or "--help" in args)


def pop_prefix(argv: list[str]) -> tuple[str, list[str]]:
    """Take ``--prefix P`` / ``--prefix=P`` out of argv; else $SOCK; else ''."""
    prefix = os.environ.get("SOCK", "")
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--prefix" and i + 1 < len(argv):
            prefix = argv[i + 1]
            i += 2
            continue
        if a.startswith("--prefix="):
            prefix = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return prefix.rstrip("/"), rest


def socket_dir(prefix: str) -> Path:
    path = Path(f"{prefix}/dev/socket")
    if not (path / "config").is_dir():
        raise ToolError(f"no io-pkt stack at {path} (is it running? set SOCK or --prefix)")
    return path


def read_file(prefix: str, rel: str) -> str:
    path = socket_dir(prefix) / rel
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ToolError(f"{path}: not provided by this stack") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None


def command(prefix: str, rel: str, text: str) -> str:
    """Write one command to a control file under the socket tree; return its reply or
    raise ToolError with the stack's message."""
    return control_command(socket_dir(prefix) / rel, text)


def control_command(path: Path | str, text: str, *, eperm_hint: str = "") -> str:
    """Write one command to the control file at ``path`` (any mount: dev/socket, dev/pf);
    return its reply, or raise ToolError with the message the stack gave."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise ToolError(f"{path}: not provided by this stack") from None
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from None
    try:
        try:
            os.write(fd, text.encode())
        except OSError as exc:
            reply = _read_all(fd).strip()
            msg = reply.removeprefix("error: ") if reply else (
                exc.strerror or errno.errorcode.get(exc.errno or 0, "error"))
            # "ENOENT: message" → "message": the message already says what is wrong
            name, sep, rest = msg.partition(": ")
            if sep and name.isupper() and name.startswith("E"):
                msg = rest
            if exc.errno == errno.EPERM and not reply and eperm_hint:
                msg = eperm_hint
            raise ToolError(msg) from None
        return _read_all(fd)
    finally:
        os.close(fd)


def _read_all(fd: int) -> str:
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def fail(tool: str, exc: Exception) -> int:
    """Print the error as exactly one line ``TOOL: message`` on stderr; return 1."""
    msg = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    print(f"{tool}: {msg}", file=sys.stderr)
    return 1
