"""The Security Association Database and the Security Policy Database (RFC 4301), IPv4
and IPv6.

Addresses are ints here: 32-bit for IPv4 (the IPv4 layer's, as in stack/inet's wire
modules), 128-bit for IPv6 (the IPv6 layer's); an SA or a policy says its ``family`` (4
or 6). IPv6 addresses below 2^32 (IPv4-compatible, deprecated) are refused by setkey,
so the SAD's (dst, SPI) keys of the two families never meet."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from stack.crypto.framework import Session

#: the setkey(8) names of the suites: (crypto cipher, key bytes incl. salt, salt bytes)
ENC_ALGS = {"aes-gcm-16": "gcm", "aes-cbc": "cbc", "rijndael-cbc": "cbc"}
AUTH_ALGS = {"hmac-sha256": 16, "hmac-sha2-256": 16}

REPLAY_DEFAULT = 64
ANY = 255  # upper-layer protocol "any"


def ntoa(a: int, family: int = 4) -> str:
    return str(IPv4Address(a) if family == 4 else IPv6Address(a))


@dataclass(eq=False)
class SA:
    src: int
    dst: int
    spi: int
    mode: str  # "transport" | "tunnel" | "any"
    enc: str  # setkey name
    enc_key: bytes  # key ‖ salt as given
    auth: str = ""
    auth_key: bytes = b""
    replay: int = REPLAY_DEFAULT
    esn: bool = False
    natt_sport: int = 0  # UDP encapsulation (RFC 3948) when both ports are set
    natt_dport: int = 0
    soft_time: float = 0.0
    hard_time: float = 0.0
    soft_bytes: int = 0
    hard_bytes: int = 0
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    session: Session | None = None
    #: outbound: the last sequence number sent (64 bits with ESN)
    seq: int = 0
    #: inbound anti-replay: the highest sequence number accepted and the window bitmap
    #: (bit i = top - i seen)
    top: int = 0
    bitmap: int = 0
    bytes: int = 0
    packets: int = 0
    state: str = "mature"  # mature | dying | dead
    family: int = 4  # of src and dst: 4 or 6

    @property
    def gcm(self) -> bool:
        return ENC_ALGS[self.enc] == "gcm"

    @property
    def natt(self) -> bool:
        return bool(self.natt_sport and self.natt_dport)

    def age(self) -> float:
        return time.monotonic() - self.created

    def check_lifetime(self) -> str:
        """'' (fine), 'soft' (just became dying) or 'hard' (dead)."""
        if self.state == "dead":
            return "hard"
        age = self.age()
        if (self.hard_time and age >= self.hard_time) or \
                (self.hard_bytes and self.bytes >= self.hard_bytes):
            self.state = "dead"
            return "hard"
        if self.state == "mature" and ((self.soft_time and age >= self.soft_time) or
                                       (self.soft_bytes and self.bytes >= self.soft_bytes)):
            self.state = "dying"
            return "soft"
        return ""

    # -- anti-replay (RFC 4303 3.4.3, Appendix A for ESN) ----------------------------
    def infer_seq(self, lo: int) -> int:
        """The full 64-bit sequence number of a received low half."""
        if not self.esn:
            return lo
        w = max(self.replay, 1)
        top = self.top
        tl, th = top & 0xFFFFFFFF, top >> 32
        if tl >= w - 1:
            hi = th + 1 if lo < tl - w + 1 else th
        else:
            hi = th - 1 if lo >= tl - w + 1 + (1 << 32) and th > 0 else th
        return (hi << 32) | lo

    def replay_check(self, seq: int) -> str:
        """'' if ``seq`` may be accepted, else 'replay' or 'out_of_window'."""
        if self.replay == 0:
            return ""
        if seq == 0 and not self.esn:
            return "replay"
        if seq > self.top:
            return ""
        diff = self.top - seq
        if diff >= self.replay:
            return "out_of_window"
        if self.bitmap >> diff & 1:
            return "replay"
        return ""

    def replay_update(self, seq: int) -> None:
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << max(self.replay, 1)) - 1) \
                if shift < 1 << 16 else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)


@dataclass(eq=False)
class Policy:
    src: int
    src_len: int
    dst: int
    dst_len: int
    sport: int  # 0 = any
    dport: int
    proto: int  # ANY or an IP protocol
    direction: str  # "in" | "out"
    action: str  # "discard" | "none" | "ipsec"
    mode: str = "transport"
    tsrc: int = 0  # tunnel endpoints
    tdst: int = 0
    level: str = "require"
    created: float = field(default_factory=time.time)
    hits: int = 0
    family: int = 4  # of the selector's addresses
    tfamily: int = 4  # of the tunnel endpoints

    def matches(self, family: int, s: int, d: int, proto: int, sport: int,
                dport: int) -> bool:
        if family != self.family:
            return False
        bits = 32 if family == 4 else 128
        if self.src_len and (s ^ self.src) >> (bits - self.src_len):
            return False
        if self.dst_len and (d ^ self.dst) >> (bits - self.dst_len):
            return False
        if self.proto != ANY and proto != self.proto:
            return False
        if self.sport and sport != self.sport:
            return False
        return not (self.dport and dport != self.dport)

    def same_selector(self, o: Policy) -> bool:
        return (self.family, self.src, self.src_len, self.dst, self.dst_len, self.sport,
                self.dport, self.proto, self.direction) == (
                    o.family, o.src, o.src_len, o.dst, o.dst_len, o.sport, o.dport, o.proto,
                    o.direction)


class Databases:
    def __init__(self) -> None:
        #: SAD: (dst, spi) → SA (the protocol is always ESP here)
        self.sad: dict[tuple[int, int], SA] = {}
        #: SPD: in order of addition, per direction
        self.spd: dict[str, list[Policy]] = {"in": [], "out": []}

    def lookup(self, direction: str, s: int, d: int, proto: int, sport: int,
               dport: int, family: int = 4) -> Policy | None:
        for p in self.spd[direction]:
            if p.matches(family, s, d, proto, sport, dport):
                p.hits += 1
                return p
        return None

    def out_sa(self, src: int, dst: int, family: int = 4) -> SA | None:
        """The newest usable SA from ``src`` to ``dst`` (NetBSD prefers the newest)."""
        best: SA | None = None
        for sa in self.sad.values():
            if sa.src == src and sa.dst == dst and sa.family == family \
                    and sa.state != "dead":
                if best is None or sa.created >= best.created:
                    best = sa
        return best
