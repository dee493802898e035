"""io-pkt's command line, as QNX's: ``io-pkt [-i N] [-v] -d DRIVER [OPTS] ... -p PROTO [OPTS]``.

``-d tap`` / ``-dtap`` load ``devnp-tap``; ``-p tcpip`` loads nothing and carries the
built-in IP stack's options; the word after a module, if it does not start with ``-``, is
its comma-separated options.
"""

from __future__ import annotations

import logging
import textwrap

from stack.core import StackConfig
from stack.options import OptionError, Options

log = logging.getLogger("io-pkt")

#: options the built-in stack (-p tcpip) understands
TCPIP_OPTIONS = {"prefix", "forward", "forward6", "auto_linklocal", "allow_other", "stacksize",
                 "mbuf_cache", "pagesize", "threads"}


class UsageError(Exception):
    pass


class HelpRequested(Exception):
    """``-h`` / ``--help``: print ``usage()`` on stdout and exit 0 (not a usage error)."""


def usage() -> str:
    """The main usage; the tool list comes from the tools registry, so it cannot go stale."""
    from stack.tools import tool_names

    lead = "       io-pkt TOOL [ARGS]     ("
    tools = textwrap.fill(", ".join(tool_names()) + ")",
                          width=88, initial_indent=lead,
                          subsequent_indent=" " * len(lead))
    return f"""\
usage: io-pkt [-i N] [-v] -d DRIVER [OPTS] ... -p PROTOCOL [OPTS] ...
{tools}
  -d tap name=tap0,netns=demo   load devnp-tap with options
  -p tcpip prefix=/alt,forward  options of the built-in IP stack
  -i N                          instance number (run stacks side by side)
  -v                            log to the console as well (repeat for debug)
  -h, --help                    this text
  io-pkt TOOL -h                a tool's own usage; SOCK=/prefix chooses the stack
"""


def parse_args(argv: list[str]) -> StackConfig:
    cfg = StackConfig()
    i = 0

    def take_opts() -> Options:
        nonlocal i
        if i < len(argv) and not argv[i].startswith("-"):
            word = argv[i]
            i += 1
            try:
                return Options.parse(word)
            except OptionError as exc:  # malformed, not merely unknown: say so, start nothing
                raise UsageError(f"io-pkt: {exc}") from None
        return Options()

    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            raise HelpRequested()
        if arg.startswith("-v") and set(arg[1:]) == {"v"}:
            cfg.verbose += len(arg) - 1
        elif arg.startswith("-i"):
            value = arg[2:] or (argv[i] if i < len(argv) else "")
            if not arg[2:]:
                i += 1
            if not value.isdigit():
                raise UsageError(f"io-pkt: -i takes an instance number, not {value!r}")
            cfg.instance = int(value)
        elif arg.startswith(("-d", "-p")):
            spec = arg[2:]
            if not spec:
                if i >= len(argv) or argv[i].startswith("-"):
                    raise UsageError(f"io-pkt: {arg} needs a module name")
                spec = argv[i]
                i += 1
            opts = take_opts()
            if arg.startswith("-d"):
                cfg.drivers.append((spec, opts))
            elif spec == "tcpip":
                cfg.tcpip.update(opts)
            else:
                cfg.protocols.append((spec, opts))
        elif arg.startswith("-"):
            log.warning("io-pkt: unknown option %s ignored", arg)
        else:
            raise UsageError(f"io-pkt: unexpected argument {arg!r} (options follow -d/-p)\n{usage()}")
    tcpip = cfg.tcpip
    prefix = tcpip.get_str("prefix", "") or ""
    if prefix and not prefix.startswith("/"):
        raise UsageError(f"io-pkt: prefix={prefix!r} must be an absolute path")
    cfg.prefix = prefix.rstrip("/")
    tcpip.flag("forward")
    tcpip.flag("forward6")
    tcpip.get_int("auto_linklocal", 1, lo=0, hi=1)
    tcpip.flag("allow_other")
    for key in tcpip:
        if key not in TCPIP_OPTIONS:
            log.warning("tcpip: unknown option %r ignored", key)
    return cfg
