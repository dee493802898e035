"""The kernel side's ESP peer, run INSIDE the test's namespace (``ip netns exec NS python
esp_peer.py JSON``): scapy's SecurityAssociation (scapy.layers.ipsec) encrypts ICMP
echo requests and UDP datagrams to the stack, sends them through a raw socket (the
kernel routes them out of the TAP and resolves the stack's address by ARP), and
decrypts what the stack sends back, read from a raw socket for protocol 50 (the
kernel has no ESP state of its own here; the open raw socket also keeps it from
answering ESP with protocol-unreachable). One JSON line per exchange on stdout:
what came back, decrypted, or why nothing did."""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation


def main() -> int:
    cfg = json.loads(sys.argv[1])
    suite = cfg["suite"]
    keys = {k: bytes.fromhex(v) for k, v in cfg["keys"].items()}
    if suite == "gcm":
        kw = {"crypt_algo": "AES-GCM", "crypt_key": keys["gcm"], "auth_algo": "NULL"}
    else:
        kw = {"crypt_algo": "AES-CBC", "crypt_key": keys["cbc"],
              "auth_algo": "SHA2-256-128", "auth_key": keys["hmac"]}
    me, stack = cfg["me"], cfg["stack"]
    tunnel = cfg["mode"] == "tunnel"
    tun = {"tunnel_header": IP(src=me, dst=stack)} if tunnel else {}
    tun_back = {"tunnel_header": IP(src=stack, dst=me)} if tunnel else {}
    to_stack = SecurityAssociation(ESP, spi=cfg["spi_in"], **kw, **tun)
    from_stack = SecurityAssociation(ESP, spi=cfg["spi_out"], **kw, **tun_back)
    inner_me, inner_stack = cfg["inner_me"], cfg["inner_stack"]

    tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)

    def exchange(inner: IP) -> dict[str, object]:
        pkt = to_stack.encrypt(inner)
        tx.sendto(bytes(pkt), (stack, 0))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            r, _, _ = select.select([rx], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            raw = rx.recv(65535)
            outer = IP(raw)
            if outer.src != stack or outer.dst != me:
                continue
            esp = outer[ESP]
            if esp.spi != cfg["spi_out"]:
                return {"error": f"reply under SPI {esp.spi:#x}"}
            try:
                plain = from_stack.decrypt(outer)
            except Exception as exc:  # an ICV or padding failure: the stack got it wrong
                return {"error": f"decrypt: {type(exc).__name__}: {exc}"}
            out: dict[str, object] = {"outer_len": len(raw), "seq": esp.seq,
                                      "src": plain[IP].src, "dst": plain[IP].dst,
                                      "proto": plain[IP].proto}
            if ICMP in plain:
                out.update(icmp_type=plain[ICMP].type, icmp_seq=plain[ICMP].seq,
                           data=bytes(plain[ICMP].payload).hex())
            elif UDP in plain:
                out.update(sport=plain[UDP].sport, dport=plain[UDP].dport,
                           data=bytes(plain[UDP].payload).hex())
            return out
        return {"error": "no reply"}

    for i in range(cfg["count"]):
        data = os.urandom(40 + 97 * i)
        res = exchange(IP(src=inner_me, dst=inner_stack) / ICMP(id=0x77, seq=i + 1) / data)
        res.update(kind="icmp", sent=data.hex())
        print(json.dumps(res), flush=True)
        data = os.urandom(1 + 131 * i)
        res = exchange(IP(src=inner_me, dst=inner_stack) / UDP(sport=40000 + i, dport=7) / data)
        res.update(kind="udp", sent=data.hex(), sport_sent=40000 + i)
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
