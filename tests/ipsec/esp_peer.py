"""The kernel side's ESP peer, for IPv4 or IPv6, run INSIDE the test's namespace (``ip
netns exec NS python esp_peer.py FAMILY JSON``, FAMILY 4 or 6; tests/ipsec/esp_setup.py
``run_peer``): scapy's SecurityAssociation (scapy.layers.ipsec) encrypts ICMP echo
requests (ICMPv6 over IPv6) and UDP datagrams to the stack, sends them through a raw
socket (IPPROTO_RAW: the header is ours; the kernel routes them out of the TAP and
resolves the stack's address by ARP or Neighbor Discovery), and decrypts what the stack
sends back.

The kernel has no ESP state of its own here; a raw socket for protocol 50 stays open so
that it does not answer ESP with protocol-unreachable (a Parameter Problem over IPv6).
Over IPv4 the replies are read from that socket; over IPv6 from an AF_PACKET socket on
the link (``ifname`` in JSON), as an IPv6 raw socket would not give the header. One
JSON line per exchange on stdout: what came back, decrypted, or why nothing did; the
fields of a reply are those of its family (``proto``/``icmp_type`` over IPv4,
``nh``/``kind_got`` over IPv6)."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from typing import Any

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether

ETH_P_IPV6 = 0x86DD


def suite_args(cfg: dict[str, Any]) -> dict[str, Any]:
    """SecurityAssociation's algorithm arguments for the suite the stack was given."""
    keys = {k: bytes.fromhex(v) for k, v in cfg["keys"].items()}
    if cfg["suite"] == "gcm":
        return {"crypt_algo": "AES-GCM", "crypt_key": keys["gcm"], "auth_algo": "NULL"}
    return {"crypt_algo": "AES-CBC", "crypt_key": keys["cbc"],
            "auth_algo": "SHA2-256-128", "auth_key": keys["hmac"]}


def echo_request(v6: bool, src: str, dst: str, seq: int, data: bytes) -> Any:
    if v6:
        return IPv6(src=src, dst=dst) / ICMPv6EchoRequest(id=0x77, seq=seq, data=data)
    return IP(src=src, dst=dst) / ICMP(id=0x77, seq=seq) / data


def what_came(v6: bool, plain: Any) -> dict[str, object]:
    """The decrypted reply's fields the test checks."""
    if v6:
        out: dict[str, object] = {"src": plain[IPv6].src, "dst": plain[IPv6].dst,
                                  "nh": plain[IPv6].nh}
        if ICMPv6EchoReply in plain:
            out.update(kind_got="echo-reply", icmp_seq=plain[ICMPv6EchoReply].seq,
                       data=bytes(plain[ICMPv6EchoReply].data).hex())
        elif UDP in plain:
            out.update(kind_got="udp", sport=plain[UDP].sport, dport=plain[UDP].dport,
                       data=bytes(plain[UDP].payload).hex())
        return out
    out = {"src": plain[IP].src, "dst": plain[IP].dst, "proto": plain[IP].proto}
    if ICMP in plain:
        out.update(icmp_type=plain[ICMP].type, icmp_seq=plain[ICMP].seq,
                   data=bytes(plain[ICMP].payload).hex())
    elif UDP in plain:
        out.update(sport=plain[UDP].sport, dport=plain[UDP].dport,
                   data=bytes(plain[UDP].payload).hex())
    return out


def main() -> int:
    v6 = sys.argv[1] == "6"
    cfg = json.loads(sys.argv[2])
    ip = IPv6 if v6 else IP
    kw = suite_args(cfg)
    me, stack = cfg["me"], cfg["stack"]
    tunnel = cfg["mode"] == "tunnel"
    tun = {"tunnel_header": ip(src=me, dst=stack)} if tunnel else {}
    tun_back = {"tunnel_header": ip(src=stack, dst=me)} if tunnel else {}
    to_stack = SecurityAssociation(ESP, spi=cfg["spi_in"], **kw, **tun)
    from_stack = SecurityAssociation(ESP, spi=cfg["spi_out"], **kw, **tun_back)
    inner_me, inner_stack = cfg["inner_me"], cfg["inner_stack"]

    af = socket.AF_INET6 if v6 else socket.AF_INET
    tx = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
    esp_sock = socket.socket(af, socket.SOCK_RAW, 50)  # held open (see above)
    if v6:
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
        rx.bind((cfg["ifname"], ETH_P_IPV6))
    else:
        rx = esp_sock

    def outer_of(raw: bytes) -> tuple[Any, int] | None:
        """The ESP packet read and its length; None for another frame on the link."""
        if not v6:
            return IP(raw), len(raw)
        e = Ether(raw)
        if IPv6 not in e or e[IPv6].nh != 50:
            return None
        return e[IPv6], len(bytes(e[IPv6]))

    def exchange(inner: Any) -> dict[str, object]:
        pkt = to_stack.encrypt(inner)
        tx.sendto(bytes(pkt), (stack, 0))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            r, _, _ = select.select([rx], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            got = outer_of(rx.recv(65535))
            if got is None:
                continue
            outer, outer_len = got
            if outer.src != stack or outer.dst != me:
                continue
            esp = outer[ESP]
            if esp.spi != cfg["spi_out"]:
                return {"error": f"reply under SPI {esp.spi:#x}"}
            try:
                plain = from_stack.decrypt(outer)
            except Exception as exc:  # an ICV or padding failure: the stack got it wrong
                return {"error": f"decrypt: {type(exc).__name__}: {exc}"}
            return {"outer_len": outer_len, "seq": esp.seq, **what_came(v6, plain)}
        return {"error": "no reply"}

    for i in range(cfg["count"]):
        data = os.urandom(40 + 97 * i)
        res = exchange(echo_request(v6, inner_me, inner_stack, i + 1, data))
        res.update(kind="icmp", sent=data.hex())
        print(json.dumps(res), flush=True)
        data = os.urandom(1 + 131 * i)
        res = exchange(ip(src=inner_me, dst=inner_stack) / UDP(sport=40000 + i, dport=7) / data)
        res.update(kind="udp", sent=data.hex(), sport_sent=40000 + i)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
