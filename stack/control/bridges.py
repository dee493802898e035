"""``config/bridges``: every bridge with its members and learning table; brconfig verbs.

Commands (several verbs may follow one bridge name, run in order)::

    BRIDGE add IF | delete IF | up | down | timeout SECS | maxaddr N
    BRIDGE static IF MAC | deladdr MAC | flush | flushall
    BRIDGE learn IF | -learn IF | discover IF | -discover IF
"""

from __future__ import annotations

import errno

from rmgr.nodes import Caller
from stack.control import backend
from stack.control.interfaces import flag_names
from stack.control.util import ControlFiles, einval, parse_int, require_root, take
from stack.l2.iface import IFF_UP, Interface, parse_mac


class BridgeFiles(ControlFiles):
    def render(self) -> str:
        out = []
        for br in backend.bridges(self.stack):
            out.append(f"{br.name}:\n")
            out.append(f"\tflags {br.flags:#x} {flag_names(br.flags)}\n")
            out.append(f"\ttimeout {br.timeout}\n")
            out.append(f"\tmaxaddr {br.maxaddr}\n")
            for m in br.members.values():
                out.append(f"\tmember {m.name} flags {backend.MEMBER_FLAGS}\n")
            for mac, port, left, static in br.entries():
                out.append(f"\taddress {mac} {port} expires {'-' if left is None else left} "
                           f"flags {'static' if static else 'dynamic'}\n")
            out.append("\n")
        return "".join(out)

    def command(self, text: str, caller: Caller) -> str:
        require_root(caller, "configuring a bridge")
        words = text.split()
        if not words:
            raise einval("empty command; expected BRIDGE VERB...")
        name, words = words[0], words[1:]
        br = backend.get_bridge(self.stack, name)
        if not words:
            raise einval(f"{name}: no verb given")
        self.control.hold()
        try:
            while words:
                verb = words.pop(0)
                if verb == "add":
                    backend.bridge_add(self.stack, br, self._iface(take(words, verb)))
                elif verb == "delete":
                    backend.bridge_delete(self.stack, br, self._iface(take(words, verb)))
                elif verb in ("up", "down"):
                    iface = self.stack.interfaces[name]
                    if verb == "up":
                        iface.set_flags(IFF_UP)
                    else:
                        iface.set_flags(0, IFF_UP)
                elif verb == "timeout":
                    backend.bridge_set(br, "timeout",
                                       parse_int(take(words, verb), "timeout", 0, 1 << 31))
                elif verb == "maxaddr":
                    backend.bridge_set(br, "maxaddr",
                                       parse_int(take(words, verb), "maxaddr", 0, 1 << 24))
                elif verb == "static":
                    iface = self._iface(take(words, "static"))
                    backend.bridge_static(br, iface, self._mac(take(words, "static IF")))
                elif verb == "deladdr":
                    backend.bridge_deladdr(br, self._mac(take(words, verb)))
                elif verb == "flush":
                    backend.bridge_flush(br, all_entries=False)
                elif verb == "flushall":
                    backend.bridge_flush(br, all_entries=True)
                elif verb in ("learn", "-learn", "discover", "-discover"):
                    backend.bridge_member_flag(br, self._iface(take(words, verb)),
                                               verb.lstrip("-"), not verb.startswith("-"))
                else:
                    raise einval(f"unknown brconfig verb: {verb}")
        finally:
            self.control.changed()
        return "ok\n"

    def _iface(self, name: str) -> Interface:
        iface = self.stack.interfaces.get(name)
        if iface is None:
            raise OSError(errno.ENXIO, f"no such interface: {name}")
        return iface

    @staticmethod
    def _mac(text: str) -> bytes:
        try:
            return parse_mac(text)
        except ValueError:
            raise einval(f"bad MAC address: {text}") from None
