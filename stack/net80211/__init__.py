"""IEEE 802.11 (issue 19): NetBSD's net80211 for io-pkt. See docs/wlan.md.

=====================  ==========================================================
file                   what
=====================  ==========================================================
``wire.py``            frame formats: MAC header, bodies, elements, RSN, radiotap
``wpa.py``             PMK (PBKDF2), PRF, PTK, EAPOL-Key frames and their MIC
``ccmp.py``            CCMP through the crypto framework (stack/crypto)
``ieee80211.py``       ``Radio`` (the driver API), ``WlanInterface`` (station and
                       hostap modes, the handshakes, the data path)
this file              the ``IEEE80211`` service: the wireless interfaces, the
                       file ``config/ieee80211`` (ifconfig's 802.11 verbs) and the
                       RTM_IEEE80211 messages on the route monitor
=====================  ==========================================================

A wireless driver (modules/devnp-wifisim.py) builds its ``Radio`` and calls
``attach(ctx, radio, name)``: the service is made with the first wireless interface of
a stack (as NetBSD's net80211 initialises with the first ieee80211_ifattach).
"""

from __future__ import annotations

import errno
import shlex
import time
from typing import TYPE_CHECKING

import trio

from rmgr.nodes import Caller, ControlFile
from stack.net80211 import wire as W
from stack.net80211.ieee80211 import HOSTAP, STA, Radio, RxInfo, WlanInterface
from stack.registry import ServiceKey
from stack.services import CONTROL, CRYPTO

if TYPE_CHECKING:  # cycle: the Stack loads the modules that attach interfaces; types only
    from stack.core import Stack
    from stack.loader import ModuleContext

__all__ = ["HOSTAP", "IEEE80211", "STA", "Net80211", "Radio", "RxInfo", "WlanInterface",
           "attach"]


class Net80211:
    """The wireless interfaces of a stack and their configuration file."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.wlans: dict[str, WlanInterface] = {}

    # -- RTM_IEEE80211 ---------------------------------------------------------------
    def event(self, wlan: WlanInterface, what: str, text: str) -> None:
        control = self.stack.services.get(CONTROL)
        if control is not None:
            control.monitor.post("RTM_IEEE80211", f"if {wlan.name} {what} {text}")

    # -- config/ieee80211 --------------------------------------------------------------
    def render(self) -> str:
        return "".join(self.render_one(w) for w in list(self.wlans.values()))

    def render_one(self, w: WlanInterface) -> str:
        out = [f"{w.name}:\n", f"\topmode {w.opmode}\n",
               f"\tssid {shlex.quote(W.ssid_str(w.ssid)) if w.ssid else '-'}\n",
               f"\tchannel {w.radio.channel} {W.channel_freq(w.radio.channel)}MHz"
               f"{' fixed' if w.des_chan else ''}\n",
               f"\tstate {w.state}\n"]
        if w.bss is not None and w.opmode == STA:
            out.append(f"\tbssid {W.mac_str(w.bss.bssid)}\n")
            if w.node is not None:
                out.append(f"\tsignal {w.node.signal}\n")
        elif w.opmode == HOSTAP:
            out.append(f"\tbssid {W.mac_str(w.mac)}\n")
        # the key itself is never shown
        out.append(f"\twpa {'wpa2-psk ccmp wpakey set' if w.passphrase else 'off'}\n")
        if w.gtk is not None:
            out.append(f"\tcrypto_provider {w.gtk.provider}\n")
        elif w.node is not None and w.node.key is not None:
            out.append(f"\tcrypto_provider {w.node.key.provider}\n")
        if w.opmode == HOSTAP:
            out.append(f"\tstations {len(w.nodes)}\n")
            out += [f"\tsta {line}\n" for line in self.sta_lines(w)]
        out += [f"\tscan {line}\n" for line in self.scan_lines(w)]
        out.append("\n")
        return "".join(out)

    def sta_lines(self, w: WlanInterface) -> list[str]:
        now = trio.current_time()
        lines = []
        for n in sorted(w.nodes.values(), key=lambda n: n.aid):
            idle = int(now - n.last_seen)
            lines.append(f"{W.mac_str(n.mac)} aid {n.aid} state {n.state} "
                         f"authorized {int(n.authorized)} signal {n.signal} idle {idle} "
                         f"rxbytes {n.rx_bytes} txbytes {n.tx_bytes}")
        return lines

    def scan_lines(self, w: WlanInterface) -> list[str]:
        now = time.monotonic()
        lines = []
        for e in sorted(w.scan_table.values(), key=lambda e: -e.signal):
            sec = "wpa2-psk" if e.rsn is not None else ("wep" if e.cap & W.CAP_PRIVACY
                                                        else "open")
            lines.append(f"{W.mac_str(e.bssid)} ssid {shlex.quote(W.ssid_str(e.ssid))} "
                         f"chan {e.channel} signal {e.signal} interval {e.interval} "
                         f"security {sec} age {now - e.seen:.1f}")
        return lines

    async def command(self, text: str, caller: Caller) -> str:
        """``NAME verb...``: ssid S | nwid S | -ssid | chan N | -chan | wpakey P |
        wpakeyfile PATH | -wpakey | mediaopt hostap | -mediaopt hostap | scan |
        list sta | list scan | rekey | inact SECONDS."""
        if not caller.is_root:
            raise OSError(errno.EPERM, "configuring a wireless interface needs root")
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise OSError(errno.EINVAL, f"bad quoting: {exc}") from None
        if len(words) < 2:
            raise OSError(errno.EINVAL, "usage: NAME ssid S [chan N] [wpakey P] "
                                        "[mediaopt hostap] | NAME scan | NAME list sta")
        w = self.wlans.get(words[0])
        if w is None:
            raise OSError(errno.ENXIO, f"{words[0]}: not a wireless interface")
        verbs = words[1:]
        if verbs == ["scan"]:
            if w.opmode == HOSTAP:
                raise OSError(errno.EINVAL, f"{w.name}: scan is for stations")
            if w.state in ("INIT", "SCAN"):
                await w.scan()
            return "\n".join(self.scan_lines(w)) + "\n"
        if verbs in (["list", "sta"], ["list", "stations"]):
            return "\n".join(self.sta_lines(w)) + "\n"
        if verbs in (["list", "scan"], ["list", "ap"]):
            return "\n".join(self.scan_lines(w)) + "\n"
        if verbs == ["rekey"]:
            return f"rekeyed {w.rekey_group()} stations\n"
        kw: dict[str, object] = {}
        i = 0

        def arg() -> str:
            nonlocal i
            i += 1
            if i >= len(verbs):
                raise OSError(errno.EINVAL, f"{verbs[i - 1]} needs an argument")
            return verbs[i]

        while i < len(verbs):
            v = verbs[i]
            if v in ("ssid", "nwid"):
                s = arg().encode()
                if len(s) > 32:
                    raise OSError(errno.EINVAL, "an SSID has at most 32 bytes")
                kw["ssid"] = s
            elif v in ("-ssid", "-nwid"):
                kw["ssid"] = b""
            elif v in ("chan", "channel"):
                a = arg()
                if not a.isdigit() or int(a) not in w.radio.channels:
                    raise OSError(errno.EINVAL, f"channel {a}: not one of "
                                                f"{','.join(map(str, w.radio.channels))}")
                kw["chan"] = int(a)
            elif v in ("-chan", "-channel"):
                kw["chan"] = 0
            elif v == "wpakey":
                kw["passphrase"] = _check_key(arg())
            elif v == "wpakeyfile":
                path = arg()
                try:
                    with open(path, encoding="utf-8") as f:
                        kw["passphrase"] = _check_key(f.readline().rstrip("\r\n"))
                except OSError as exc:
                    raise OSError(errno.EINVAL, f"wpakeyfile {path}: {exc.strerror}") from None
            elif v in ("-wpakey", "-wpa"):
                kw["passphrase"] = None
            elif v in ("wpa", "wpapsk"):
                pass  # implied by wpakey
            elif v in ("mediaopt", "-mediaopt"):
                a = arg()
                if a != "hostap":
                    raise OSError(errno.EINVAL, f"mediaopt {a}: only hostap")
                kw["opmode"] = HOSTAP if v == "mediaopt" else STA
            elif v == "inact":
                a = arg()
                if not a.isdigit() or int(a) < 1:
                    raise OSError(errno.EINVAL, "inact takes seconds >= 1")
                w.inact_timeout = float(a)
            else:
                raise OSError(errno.EINVAL, f"unknown 802.11 verb: {v}")
            i += 1
        if kw:
            w.configure(**kw)  # type: ignore[arg-type]
        return "ok\n"


def _check_key(key: str) -> str:
    if not 8 <= len(key) <= 63 or not key.isascii():
        raise OSError(errno.EINVAL, "a WPA passphrase has 8 to 63 ASCII characters")
    return key


#: the 802.11 layer of a stack (made with its first wireless interface)
IEEE80211: ServiceKey[Net80211] = ServiceKey("ieee80211")


def service(stack: Stack) -> Net80211:
    n = stack.services.get(IEEE80211)
    if n is None:
        n = Net80211(stack)
        stack.services.register(IEEE80211, n)
        stack.config_dir.add("ieee80211", ControlFile(n.command, n.render))
    return n


def attach(ctx: ModuleContext, radio: Radio, name: str) -> WlanInterface:
    """A driver's radio → a wireless interface attached to the stack, its task started
    in the driver's nursery; removed with the driver."""
    stack = ctx.stack
    n = service(stack)
    crypto = stack.services.get(CRYPTO)
    if crypto is None:
        raise RuntimeError("802.11 needs the crypto framework (stack.crypto)")
    w = WlanInterface(name, radio, n, crypto)
    n.wlans[name] = w

    def gone() -> None:
        n.wlans.pop(name, None)
        w.destroy()

    ctx.add_cleanup(gone)
    ctx.attach_interface(w)
    w.start(ctx.nursery)
    return w
