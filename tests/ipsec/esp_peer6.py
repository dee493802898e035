"""The kernel side's ESP peer over IPv6, run INSIDE the test's namespace (``ip netns
exec NS python esp_peer6.py JSON``): scapy's SecurityAssociation encrypts ICMPv6 echo
requests and UDP datagrams to the stack and sends them through an AF_INET6 raw socket
(IPPROTO_RAW: the header is ours; the kernel routes them out of the TAP and resolves
the stack by Neighbor Discovery), and decrypts what the stack sends back, read from an
AF_PACKET socket on the link (an IPv6 raw socket would not give the header). A raw
socket for protocol 50 stays open so the kernel does not answer ESP with a Parameter
Problem. One JSON line per exchange on stdout."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

from scapy.layers.inet import UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.layers.l2 import Ether

ETH_P_IPV6 = 0x86DD


def main() -> int:
    cfg = json.loads(sys.argv[1])
    keys = {k: bytes.fromhex(v) for k, v in cfg["keys"].items()}
    if cfg["suite"] == "gcm":
        kw = {"crypt_algo": "AES-GCM", "crypt_key": keys["gcm"], "auth_algo": "NULL"}
    else:
        kw = {"crypt_algo": "AES-CBC", "crypt_key": keys["cbc"],
              "auth_algo": "SHA2-256-128", "auth_key": keys["hmac"]}
    me, stack = cfg["me"], cfg["stack"]
    tunnel = cfg["mode"] == "tunnel"
    tun = {"tunnel_header": IPv6(src=me, dst=stack)} if tunnel else {}
    tun_back = {"tunnel_header": IPv6(src=stack, dst=me)} if tunnel else {}
    to_stack = SecurityAssociation(ESP, spi=cfg["spi_in"], **kw, **tun)
    from_stack = SecurityAssociation(ESP, spi=cfg["spi_out"], **kw, **tun_back)
    inner_me, inner_stack = cfg["inner_me"], cfg["inner_stack"]

    tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    keep = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 50)  # noqa: F841 (held open)
    rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    rx.bind((cfg["ifname"], ETH_P_IPV6))

    def exchange(inner: IPv6) -> dict[str, object]:
        pkt = to_stack.encrypt(inner)
        tx.sendto(bytes(pkt), (stack, 0))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            r, _, _ = select.select([rx], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            raw = rx.recv(65535)
            e = Ether(raw)
            if IPv6 not in e or e[IPv6].nh != 50:
                continue
            outer = e[IPv6]
            if outer.src != stack or outer.dst != me:
                continue
            esp = outer[ESP]
            if esp.spi != cfg["spi_out"]:
                return {"error": f"reply under SPI {esp.spi:#x}"}
            try:
                plain = from_stack.decrypt(outer)
            except Exception as exc:  # an ICV or padding failure: the stack got it wrong
                return {"error": f"decrypt: {type(exc).__name__}: {exc}"}
            out: dict[str, object] = {"outer_len": len(bytes(outer)), "seq": esp.seq,
                                      "src": plain[IPv6].src, "dst": plain[IPv6].dst,
                                      "nh": plain[IPv6].nh}
            if ICMPv6EchoReply in plain:
                out.update(kind_got="echo-reply", icmp_seq=plain[ICMPv6EchoReply].seq,
                           data=bytes(plain[ICMPv6EchoReply].data).hex())
            elif UDP in plain:
                out.update(kind_got="udp", sport=plain[UDP].sport, dport=plain[UDP].dport,
                           data=bytes(plain[UDP].payload).hex())
            return out
        return {"error": "no reply"}

    for i in range(cfg["count"]):
        data = os.urandom(40 + 97 * i)
        res = exchange(IPv6(src=inner_me, dst=inner_stack) /
                       ICMPv6EchoRequest(id=0x77, seq=i + 1, data=data))
        res.update(kind="icmp", sent=data.hex())
        print(json.dumps(res), flush=True)
        data = os.urandom(1 + 131 * i)
        res = exchange(IPv6(src=inner_me, dst=inner_stack) / UDP(sport=40000 + i, dport=7) / data)
        res.update(kind="udp", sent=data.hex(), sport_sent=40000 + i)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
