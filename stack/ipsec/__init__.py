"""IPsec ESP (RFC 4303) for IPv4 and IPv6, built in (issue 18): SAD, SPD, ESP in both modes
(AES-GCM-16 per RFC 4106, AES-CBC + HMAC-SHA-256-128 per RFC 4868), anti-replay, ESN,
lifetimes, NAT-T (RFC 3948), enc0, and setkey(8) through ``config/setkey``.

Nothing is hooked into the data path until the first setkey command: then ESP is
registered as the transport (AF_INET, 50) and (AF_INET6, 50), the "inet_out_prefrag",
"inet" in, "inet6_out_prefrag" and "inet6" in hooks are added and ``enc0`` is attached.
docs/ipsec.md."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from rmgr.nodes import Caller, ControlFile, TextFile
from stack.ipsec.esp import PROTO_ESP, Esp, Esp6
from stack.ipsec.sa import SA
from stack.ipsec.setkey import Setkey
from stack.pfil import INET6_OUT_PREFRAG, INET_OUT_PREFRAG, PFIL_IN, PFIL_OUT
from stack.registry import AF_INET, AF_INET6, ServiceKey
from stack.services import IPV6

if TYPE_CHECKING:  # cycle: the Stack imports its built-in parts; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.ipsec")


class Ipsec:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.esp = Esp(stack)
        self.db = self.esp.db
        self.counters = self.esp.counters
        self.active = False
        self.setkey = Setkey(self.db, self.esp.make_session, self.esp.free_session,
                             self._changed, self._count)

    def _count(self, name: str) -> None:
        self.counters[name] += 1

    def activate(self) -> None:
        if self.active:
            return
        st = self.stack
        self.active = True
        st.registries.transports.register((AF_INET, PROTO_ESP), self.esp)
        st.attach_interface(self.esp.enc0)
        st.pfil.add_hook(self.esp.prefrag_hook, INET_OUT_PREFRAG, PFIL_OUT, priority=100,
                         name="ipsec_out")
        st.pfil.add_hook(self.esp.inet_in_hook, "inet", PFIL_IN, priority=-100,
                         name="ipsec_in")
        if st.services.get(IPV6) is not None:
            st.registries.transports.register((AF_INET6, PROTO_ESP), Esp6(self.esp))
            st.pfil.add_hook(self.esp.prefrag6_hook, INET6_OUT_PREFRAG, PFIL_OUT,
                             priority=100, name="ipsec6_out")
            st.pfil.add_hook(self.esp.inet6_in_hook, "inet6", PFIL_IN, priority=-100,
                             name="ipsec6_in")
        log.info("IPsec active: ESP, enc0")

    def _changed(self) -> None:
        return None

    def command(self, text: str, caller: Caller) -> str:
        """setkey statements, one write (``-c`` / ``-f`` input as it is)."""
        reading = all(w[0] in ("dump", "spddump", "get") for w in _words(text))
        if not reading and not caller.is_root:
            raise OSError(errno.EPERM, "changing the SAD or SPD needs root")
        if not reading:
            self.activate()
        return self.setkey.run(text) or "ok\n"

    def render(self) -> str:
        return self.setkey.dump() + self.setkey.spddump()

    def render_stats(self) -> str:
        lines = [f"sad {len(self.db.sad)}",
                 f"spd {len(self.db.spd['in']) + len(self.db.spd['out'])}"]
        lines += [f"counter {k} {v}" for k, v in self.counters.snapshot().items()]
        return "\n".join(lines) + "\n"

    def sa(self, dst: int, spi: int) -> SA | None:
        return self.db.sad.get((dst, spi))


def _words(text: str) -> list[list[str]]:
    from stack.ipsec.setkey import statements

    try:
        return statements(text) or [["dump"]]
    except OSError:
        return [["?"]]


#: the IPsec engine (SAD, SPD, counters)
IPSEC: ServiceKey[Ipsec] = ServiceKey("ipsec")


def attach(stack: Stack) -> None:
    ipsec = Ipsec(stack)
    stack.registries.services.register(IPSEC, ipsec)
    stack.config_dir.add("setkey", ControlFile(ipsec.command, ipsec.render, mode=0o600))
    stack.config_dir.add("ipsec", TextFile(ipsec.render_stats))
