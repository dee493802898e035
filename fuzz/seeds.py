"""Seed frames for the receive-path fuzzer, built with scapy: ARP, ICMP echo (plain, with
IP options, to broadcast, over a VLAN), ICMP errors, fragments (in order, overlapping,
tiny), UDP, TCP (SYN with every option, flag combinations, RSTs), forwarding, runts.

``python -m fuzz.seeds`` rewrites fuzz/corpus/rx/ (one file per seed, the fuzz input
encoding of fuzz/rxpath.py: a control byte, then the frame(s))."""

from __future__ import annotations

import os
import struct
import sys

from fuzz.rxpath import (
    ADDR0,
    ADDR1,
    MAC0,
    PEER0,
    PEER_MAC,
    TCP_PORT,
    UDP_PORT,
    VLAN_ADDR,
)

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "rx")

# control bytes (fuzz/rxpath.py)
AS_IS = 0x00
FIX = 0x03  # recompute IP + L4 checksums: mutations keep passing the checksum checks
MULTI = 0x08


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def seed_frames() -> dict[str, tuple[int, list[bytes]]]:
    """name → (control byte, frames)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR, IPOption_Timestamp, fragment
    from scapy.layers.l2 import ARP, Dot1Q, Ether

    def e(pl: object, dst: bytes = MAC0) -> Ether:
        return Ether(dst=_mac(dst), src=_mac(PEER_MAC)) / pl  # type: ignore[operator]

    def ipp(**kw: object) -> IP:
        kw.setdefault("src", PEER0)
        kw.setdefault("dst", ADDR0)
        return IP(**kw)

    bcast = b"\xff" * 6
    tcp_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None),
                ("WScale", 7)]
    s: dict[str, tuple[int, list[bytes]]] = {}

    def add(name: str, pkts: object, ctl: int = AS_IS) -> None:
        lst = pkts if isinstance(pkts, list) else [pkts]
        s[name] = (ctl | (MULTI if len(lst) > 1 else 0), [bytes(p) for p in lst])

    # ARP
    add("arp_request", e(ARP(op=1, hwsrc=_mac(PEER_MAC), psrc=PEER0, pdst=ADDR0), bcast))
    add("arp_reply_unsolicited", e(ARP(op=2, hwsrc=_mac(PEER_MAC), psrc="10.77.0.9",
                                       hwdst=_mac(MAC0), pdst=ADDR0)))
    add("arp_claim_our_address", e(ARP(op=2, hwsrc=_mac(PEER_MAC), psrc=ADDR0,
                                       hwdst="ff:ff:ff:ff:ff:ff", pdst=ADDR0), bcast))
    add("arp_bad_hwlen", e(ARP(op=1, hwlen=8, psrc=PEER0, pdst=ADDR0), bcast))
    add("arp_truncated", bytes(e(ARP(op=1, psrc=PEER0, pdst=ADDR0), bcast))[:30])
    # ICMP
    add("icmp_echo", e(ipp() / ICMP(id=1, seq=1) / (b"x" * 56)))
    add("icmp_echo_fix", e(ipp() / ICMP(id=1, seq=2) / (b"x" * 56)), FIX)
    add("icmp_echo_rr", e(ipp(options=[IPOption_RR(routers=["0.0.0.0"] * 9)]) / ICMP()), FIX)
    add("icmp_echo_ts", e(ipp(options=[IPOption_Timestamp(flg=0, timestamp=[0] * 4)]) / ICMP()), FIX)
    add("icmp_echo_lsrr_raw", e(ipp(options=b"\x83\x07\x04\x0a\x4e\x00\x05\x00") / ICMP()), FIX)
    add("icmp_echo_broadcast", e(ipp(dst="10.77.0.255") / ICMP(), bcast), FIX)
    add("icmp_echo_vlan", e(Dot1Q(vlan=5) / ipp(dst=VLAN_ADDR) / ICMP()), FIX)
    add("icmp_echo_vlan_unknown", e(Dot1Q(vlan=9) / ipp() / ICMP()), FIX)
    add("icmp_unreach_tcp", e(ipp() / ICMP(type=3, code=4, nexthopmtu=576) /
                              IP(src=ADDR0, dst=PEER0) / TCP(sport=TCP_PORT, dport=4000)), FIX)
    add("icmp_unreach_udp", e(ipp() / ICMP(type=3, code=3) /
                              IP(src=ADDR0, dst=PEER0) / UDP(sport=UDP_PORT, dport=4000)), FIX)
    add("icmp_redirect", e(ipp() / ICMP(type=5, code=1, gw="10.77.0.3") /
                           IP(src=ADDR0, dst="10.99.0.1") / UDP()), FIX)
    add("icmp_timestamp", e(ipp() / ICMP(type=13, ts_ori=1, ts_rx=0, ts_tx=0)), FIX)
    add("icmp_time_exceeded", e(ipp() / ICMP(type=11) / IP(src=ADDR0, dst=PEER0) / ICMP()), FIX)
    # fragments
    big = ipp(id=77) / ICMP(id=7) / (b"F" * 1200)
    frags = fragment(big, fragsize=400)
    add("frag_in_order", [e(f) for f in frags])
    add("frag_reversed", [e(f) for f in reversed(frags)])
    add("frag_first_only", e(frags[0]))
    ov = ipp(id=78, flags="MF", frag=0, proto=1) / (b"A" * 24)
    ov2 = ipp(id=78, flags=0, frag=1, proto=1) / (b"B" * 24)
    add("frag_overlap", [e(ov), e(ov2)], FIX)
    add("frag_tiny", [e(ipp(id=79, flags="MF", frag=0, proto=6) / b"\x00\x50\x00\x50"),
                      e(ipp(id=79, frag=1, proto=6) / (b"\0" * 16))])
    # UDP
    add("udp_to_port", e(ipp() / UDP(sport=4000, dport=UDP_PORT) / b"hello"), FIX)
    add("udp_closed_port", e(ipp() / UDP(sport=4000, dport=9) / b"hello"), FIX)
    add("udp_zero_checksum", bytes(e(ipp() / UDP(sport=4000, dport=UDP_PORT, chksum=0) / b"zz")))
    add("udp_length_lies", e(ipp() / UDP(sport=4000, dport=UDP_PORT, len=200) / b"short"), 0x01)
    add("udp_broadcast", e(ipp(dst="255.255.255.255") / UDP(dport=UDP_PORT) / b"b", bcast), FIX)
    # TCP
    add("tcp_syn_opts", e(ipp() / TCP(sport=40000, dport=TCP_PORT, flags="S", seq=1000,
                                      options=tcp_opts)), FIX)
    add("tcp_syn_closed", e(ipp() / TCP(sport=40001, dport=81, flags="S")), FIX)
    add("tcp_ack_listener", e(ipp() / TCP(sport=40002, dport=TCP_PORT, flags="A", seq=5, ack=9)), FIX)
    add("tcp_synfin", e(ipp() / TCP(sport=40003, dport=TCP_PORT, flags="SF")), FIX)
    add("tcp_null", e(ipp() / TCP(sport=40004, dport=TCP_PORT, flags=0)), FIX)
    add("tcp_xmas", e(ipp() / TCP(sport=40005, dport=TCP_PORT, flags="FPU")), FIX)
    add("tcp_rst", e(ipp() / TCP(sport=40006, dport=TCP_PORT, flags="R")), FIX)
    add("tcp_bad_opts", e(ipp() / TCP(sport=40007, dport=TCP_PORT, flags="S",
                                      options=[(2, b"\x05"), ("NOP", None)])), FIX)
    add("tcp_handshake", [e(ipp() / TCP(sport=40008, dport=TCP_PORT, flags="S", seq=100,
                                        options=tcp_opts)),
                          e(ipp() / TCP(sport=40008, dport=TCP_PORT, flags="A", seq=101, ack=1)),
                          e(ipp() / TCP(sport=40008, dport=TCP_PORT, flags="PA", seq=101,
                                        ack=1) / b"GET /\r\n")], FIX)
    # forwarding and oddities
    add("fwd_udp", e(ipp(dst="10.78.0.5") / UDP(dport=53) / b"q"), FIX)
    add("fwd_ttl1", e(ipp(dst="10.78.0.5", ttl=1) / UDP(dport=53) / b"q"), FIX)
    add("fwd_noroute", e(ipp(dst="192.0.2.1") / ICMP()), FIX)
    add("to_other_if", e(ipp(dst=ADDR1) / ICMP()), FIX)
    add("ip_bad_ihl", bytes(e(ipp() / ICMP()))[:14] + b"\x4f" + bytes(e(ipp() / ICMP()))[15:])
    add("ip_total_lies", e(ipp(len=1000) / ICMP()), 0x01)
    add("ip_unknown_proto", e(ipp(proto=200) / b"data"), FIX)
    add("runt", MAC0 + PEER_MAC[:4])
    add("ipv6_ethertype", MAC0 + PEER_MAC + b"\x86\xdd" + b"\x60" + b"\0" * 39)
    add("unknown_ethertype", MAC0 + PEER_MAC + b"\x88\xb5" + b"hello")
    add("not_our_mac", e(ipp() / ICMP(), b"\x02\x99\x99\x99\x99\x99"), FIX)
    add("multicast_allhosts", e(ipp(dst="224.0.0.1") / ICMP(), b"\x01\x00\x5e\x00\x00\x01"), FIX)
    return s


def encode(ctl: int, frames: list[bytes]) -> bytes:
    if ctl & MULTI:
        return bytes([ctl]) + b"".join(struct.pack("!H", len(f)) + f for f in frames)
    return bytes([ctl]) + frames[0]


def seed_inputs() -> dict[str, bytes]:
    return {name: encode(ctl, frames) for name, (ctl, frames) in seed_frames().items()}


def write_corpus(path: str = CORPUS) -> int:
    os.makedirs(path, exist_ok=True)
    n = 0
    for name, data in seed_inputs().items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
        n += 1
    return n


if __name__ == "__main__":
    print(f"{write_corpus(sys.argv[1] if len(sys.argv) > 1 else CORPUS)} seeds written")
