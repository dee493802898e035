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

GCM_KEY = bytes(range(16)) + b"SALT"
CBC_KEY, HMAC_KEY = bytes(range(16, 32)), bytes(range(32, 64))
SUITES = {
    "gcm": ("-E aes-gcm-16 0x" + GCM_KEY.hex(),
            {"crypt_algo": "AES-GCM", "crypt_key": GCM_KEY, "auth_algo": "NULL"}),
    "cbc": (f"-E aes-cbc 0x{CBC_KEY.hex()} -A hmac-sha256 0x{HMAC_KEY.hex()}",
            {"crypt_algo": "AES-CBC", "crypt_key": CBC_KEY, "auth_algo": "SHA2-256-128",
             "auth_key": HMAC_KEY}),
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
        alg, kw = SUITES[suite]
        tun = {"tunnel_header": ip(src=peer, dst=me)} if mode == "tunnel" else {}
        tun_back = {"tunnel_header": ip(src=me, dst=peer)} if mode == "tunnel" else {}
        self.to_stack = SecurityAssociation(ESP, spi=0x1001, **kw, **tun)
        self.from_stack = SecurityAssociation(ESP, spi=0x1002, **kw, **tun_back)
        self.inner_src = behind if mode == "tunnel" else peer
        if mode == "tunnel":
            pol = (f"spdadd {behind}/{plen} {me}/{plen} any -P in ipsec "
                   f"esp/tunnel/{peer}-{me}/require;\n"
                   f"spdadd {me}/{plen} {behind}/{plen} any -P out ipsec "
                   f"esp/tunnel/{me}-{peer}/require;\n")
        else:
            pol = (f"spdadd {peer} {me} any -P in ipsec esp/transport//require;\n"
                   f"spdadd {me} {peer} any -P out ipsec esp/transport//require;\n")
        self.setkey(f"add {peer} {me} esp 0x1001 -m {mode} {alg};\n"
                    f"add {me} {peer} esp 0x1002 -m {mode} {alg};\n" + pol)

    def setkey(self, text: str) -> str:
        return self.ipsec.command(text, Caller())

    def inject(self, frame: bytes) -> None:
        self.f0.inject(frame)
