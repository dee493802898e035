"""The io-pkt tools (``io-pkt ifconfig ...``). Each talks to a running stack only through
its files under ``$SOCK/dev/socket`` (``--prefix`` overrides SOCK)."""

from __future__ import annotations

import importlib
import sys

#: tool name → module under stack.tools implementing ``main(argv) -> int``
TOOLS = {
    "ifconfig": "ifconfig", "route": "route", "arp": "arp", "netstat": "netstat",
    "sysctl": "sysctl", "ping": "ping", "brconfig": "brconfig", "nicinfo": "nicinfo",
    "mount": "mount", "waitfor": "waitfor", "pfctl": "pfctl", "dhcp": "dhcp",
    "ss": "ss", "top": "top", "ndp": "ndp", "ping6": "ping6", "rtadvd": "rtadvd",
    "qnet": "qnet", "setkey": "setkey",
}


def tool_names() -> list[str]:
    """Every tool, in the order ``io-pkt --help`` lists them (the registry's order)."""
    return list(TOOLS)


def run_tool(name: str, argv: list[str]) -> int:
    modname = TOOLS.get(name)
    if modname is None:
        print(f"io-pkt: unknown tool {name!r} (tools: {', '.join(tool_names())})",
              file=sys.stderr)
        return 2
    try:
        mod = importlib.import_module(f"stack.tools.{modname}")
    except ModuleNotFoundError:
        print(f"io-pkt: tool {name} is not available in this build", file=sys.stderr)
        return 2
    try:
        return int(mod.main(argv) or 0)
    except KeyboardInterrupt:
        return 130
