"""ifconfig's 802.11 part (NetBSD syntax) over ``config/ieee80211``:

    ifconfig IF ssid NAME [chan N] [wpakey PASSPHRASE | wpakeyfile FILE] [mediaopt hostap]
    ifconfig IF -ssid | -chan | -wpakey | -mediaopt hostap
    ifconfig IF scan           (station: scan and list the BSSs heard)
    ifconfig IF list sta       (hostap: the associated stations)
    ifconfig IF list scan      (the scan table, without scanning)

The passphrase goes to the stack once and is never shown back (``wpa: ... key set``).
"""

from __future__ import annotations

import shlex

from stack.tools.cfgparse import Stanza, stanzas
from stack.tools.common import ToolError, command, read_file

#: verbs taking one argument / none
WITH_ARG = {"ssid", "nwid", "chan", "channel", "wpakey", "wpakeyfile", "mediaopt",
            "-mediaopt", "inact"}
FLAGS = {"-ssid", "-nwid", "-chan", "-channel", "-wpakey", "-wpa", "wpa", "wpapsk"}
FILE = "config/ieee80211"


def split(args: list[str]) -> tuple[list[str], list[str]]:
    """(the 802.11 words, the others) of an ifconfig command line."""
    wl: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in WITH_ARG:
            if i + 1 >= len(args):
                raise ToolError(f"{a} needs an argument")
            wl += [a, args[i + 1]]
            i += 2
            continue
        if a in FLAGS:
            wl.append(a)
        else:
            rest.append(a)
        i += 1
    return wl, rest


def query(args: list[str]) -> bool:
    return args in (["scan"], ["list", "sta"], ["list", "scan"], ["list", "ap"])


def run_query(prefix: str, name: str, args: list[str]) -> str:
    reply = command(prefix, FILE, " ".join([name, *args]))
    rows = [ln for ln in reply.splitlines() if ln.strip()]
    if args == ["list", "sta"]:
        out = [f"{'ADDR':<17} {'AID':>3} {'STATE':<6} {'AUTH':>4} {'RSSI':>4} {'IDLE':>4} "
               f"{'RXBYTES':>9} {'TXBYTES':>9}"]
        for r in rows:
            w = r.split()
            kv = dict(zip(w[1::2], w[2::2], strict=False))
            out.append(f"{w[0]:<17} {kv.get('aid', '-'):>3} {kv.get('state', '-'):<6} "
                       f"{kv.get('authorized', '-'):>4} {kv.get('signal', '-'):>4} "
                       f"{kv.get('idle', '-'):>4} {kv.get('rxbytes', '-'):>9} "
                       f"{kv.get('txbytes', '-'):>9}")
        return "\n".join(out) + "\n"
    out = [f"{'SSID':<20} {'BSSID':<17} {'CHAN':>4} {'RSSI':>4} {'INT':>4} SECURITY"]
    for r in rows:
        w = shlex.split(r)
        kv = dict(zip(w[1::2], w[2::2], strict=False))
        out.append(f"{kv.get('ssid', ''):<20} {w[0]:<17} {kv.get('chan', '-'):>4} "
                   f"{kv.get('signal', '-'):>4} {kv.get('interval', '-'):>4} "
                   f"{kv.get('security', '-')}")
    return "\n".join(out) + "\n"


def configure(prefix: str, name: str, words: list[str]) -> None:
    command(prefix, FILE, " ".join([name, *(shlex.quote(w) for w in words)]))


def stanza(prefix: str, name: str) -> Stanza | None:
    try:
        text = read_file(prefix, FILE)
    except ToolError:
        return None
    return next((s for s in stanzas(text) if s.name == name), None)


def lines(prefix: str, name: str) -> list[str]:
    """NetBSD's 802.11 lines of ``ifconfig IF``."""
    s = stanza(prefix, name)
    if s is None:
        return []
    ch = s.get("channel").split()
    out = [f"\tssid {s.get('ssid')} channel {ch[0] if ch else '-'}"
           f" ({ch[1].removesuffix('MHz') if len(ch) > 1 else '?'} MHz 11g)"]
    if s.get("bssid"):
        out.append(f"\tbssid {s.get('bssid')}")
    mode = " hostap" if s.get("opmode") == "hostap" else ""
    out.append(f"\tmedia: IEEE802.11 autoselect{mode} (OFDM54 mode 11g{mode})")
    out.append(f"\tieee80211: state {s.get('state')}"
               + (f" stations {s.get('stations')}" if s.get("stations") else ""))
    out.append(f"\twpa: {s.get('wpa')}")
    return out
