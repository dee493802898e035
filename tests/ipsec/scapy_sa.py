"""The scapy ESP peer's half that both families share (tests/ipsec/test_esp_scapy.py,
test_esp6_scapy.py): the two suites, and the two SAs and policies set up on the stack
with setkey and on scapy's side as SecurityAssociations."""

from __future__ import annotations

from typing import Any

from scapy.layers.ipsec import ESP, SecurityAssociation

from rmgr.nodes import Caller
from stack.core import Stack
from stack.ipsec import IPSEC, Ipsec
from tests.inet.conftest import FakeIface
from tests.ipsec.esp_setup import ALG, CBC_KEY, GCM_KEY, HMAC_KEY, setkey_text

__all__ = ["CBC_KEY", "GCM_KEY", "SUITES", "ScapyEspPeer"]

#: by suite: setkey's algorithm part, SecurityAssociation's arguments
SUITES = {
    "gcm": (ALG["gcm"], {"crypt_algo": "AES-GCM", "crypt_key": GCM_KEY, "auth_algo": "NULL"}),
    "cbc": (ALG["cbc"], {"crypt_algo": "AES-CBC", "crypt_key": CBC_KEY,
                         "auth_algo": "SHA2-256-128", "auth_key": HMAC_KEY}),
}


class ScapyEspPeer:
    """SPI 0x1001 peer → stack, 0x1002 back, in ``mode``; in tunnel mode the inner
    source is ``behind`` (a host behind the peer). ``ip`` is scapy's IP or IPv6 class,
    ``plen`` the host prefix length of the family."""

    def __init__(self, st: Stack, f0: FakeIface, suite: str, mode: str, *, me: str,
                 peer: str, behind: str, ip: Any, plen: int) -> None:
        self.st, self.f0, self.mode = st, f0, mode
        ipsec = st.services.get(IPSEC)
        assert ipsec is not None
        self.ipsec: Ipsec = ipsec
        kw = SUITES[suite][1]
        tun = {"tunnel_header": ip(src=peer, dst=me)} if mode == "tunnel" else {}
        tun_back = {"tunnel_header": ip(src=me, dst=peer)} if mode == "tunnel" else {}
        self.to_stack = SecurityAssociation(ESP, spi=0x1001, **kw, **tun)
        self.from_stack = SecurityAssociation(ESP, spi=0x1002, **kw, **tun_back)
        self.inner_src = behind if mode == "tunnel" else peer
        self.setkey(setkey_text(suite, mode, me=me, peer=peer, inner_me=f"{me}/{plen}",
                                inner_peer=f"{behind}/{plen}"))

    def setkey(self, text: str) -> str:
        return self.ipsec.command(text, Caller())

    def inject(self, frame: bytes) -> None:
        self.f0.inject(frame)
