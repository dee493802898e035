"""setkey(8) commands (NetBSD's syntax) over the SAD and SPD, and their dumps.

    add [-4|-6] SRC DST esp SPI [-m transport|tunnel|any] [-r WINDOW] [-E ALGO KEY]
        [-A ALGO KEY] [-lh SEC] [-ls SEC] [-bh BYTES] [-bs BYTES] [-esn] ;
    add SRC[PORT] DST[PORT] esp-udp SPI ... ;        (NAT-T, RFC 3948)
    get SRC DST esp SPI ;   delete SRC DST esp SPI ;   deleteall SRC DST esp ;
    flush [esp] ;   dump [esp] ;
    spdadd SRC[/LEN][[PORT]] DST[/LEN][[PORT]] UPPER -P in|out discard|none|
           ipsec esp/transport//require | esp/tunnel/TSRC-TDST/require|use ;
    spddelete SRC DST UPPER -P in|out ;   spdflush ;   spddump ;

Keys are 0x-hex (or "quoted text"); ``-E aes-gcm-16`` takes key ‖ 4-byte salt (RFC 4106),
``-E aes-cbc`` with ``-A hmac-sha256`` (RFC 4868: 128-bit ICV). A dump never shows a key
in full: its first 4 bytes, then its length."""

from __future__ import annotations

import errno
import re
import shlex
import time
from collections.abc import Callable
from ipaddress import IPv6Address, ip_address, ip_network

from stack.ipsec.sa import ANY, AUTH_ALGS, ENC_ALGS, REPLAY_DEFAULT, SA, Databases, Policy, ntoa

UPPER = {"any": ANY, "tcp": 6, "udp": 17, "icmp": 1, "esp": 50, "gre": 47, "ipv4": 4,
         "ipv6-icmp": 58, "icmp6": 58, "ipv6": 41}
UPPER_NAME = {v: k for k, v in UPPER.items()}


class SetkeyError(OSError):
    def __init__(self, msg: str) -> None:
        super().__init__(errno.EINVAL, msg)


def statements(text: str) -> list[list[str]]:
    """Split setkey input into statements (``;``-terminated), comments (#) removed."""
    lines = [ln.split("#", 1)[0] for ln in text.splitlines()]
    out: list[list[str]] = []
    for st in " ".join(lines).split(";"):
        try:
            words = shlex.split(st, posix=True)
        except ValueError as exc:
            raise SetkeyError(f"bad quoting: {exc}") from None
        if words:
            out.append(words)
    return out


def _family(a: IPv6Address | object, text: str) -> int:
    if isinstance(a, IPv6Address):
        if int(a) > 1 and not int(a) >> 32:  # ::a.b.c.d would share the SAD's keys with IPv4
            raise SetkeyError(f"{text!r}: IPv4-compatible IPv6 addresses are not supported")
        return 6
    return 4


def _addr(text: str) -> tuple[int, int]:
    """An IPv4 or IPv6 address → (the int, its family: 4 or 6)."""
    try:
        a = ip_address(text)
    except ValueError:
        raise SetkeyError(f"{text!r} is not an IPv4 or IPv6 address") from None
    return int(a), _family(a, text)


_ADDR_PORT = re.compile(r"^([^\[/]+)(?:/(\d+))?(?:\[(\w+)\])?$")


def _range(text: str) -> tuple[int, int, int, int]:
    """``10.0.0.0/24[80]``, ``2001:db8::/32[any]`` → (address, prefix length, port; 0 =
    any, family: 4 or 6)."""
    m = _ADDR_PORT.match(text)
    if m is None:
        raise SetkeyError(f"bad address range {text!r}")
    addr, plen, port = m.groups()
    _, family = _addr(addr) if addr not in ("0.0.0.0", "::") else (0, 4 if "." in addr else 6)
    bits = 32 if family == 4 else 128
    if addr in ("0.0.0.0", "::") and plen is None:
        plen = "0"
    n = int(plen) if plen is not None else bits
    if not 0 <= n <= bits:
        raise SetkeyError(f"bad prefix length in {text!r}")
    net = ip_network(f"{addr}/{n}", strict=False)
    p = 0 if port in (None, "any") else int(port) if port.isdigit() else -1
    if not 0 <= p <= 65535:
        raise SetkeyError(f"bad port in {text!r}")
    return int(net.network_address), n, p, family


def _key(text: str) -> bytes:
    if text.lower().startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise SetkeyError("a key is 0x followed by an even number of hex digits") from None
    return text.encode()


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise SetkeyError(f"{text!r} is not a number") from None


def mask_key(k: bytes) -> str:
    return f"{k[:4].hex()}... ({len(k)} bytes)"


class Setkey:
    """Runs setkey statements against ``db``; ``on_add``/``on_delete`` make and free the
    crypto sessions of SAs (the engine's)."""

    def __init__(self, db: Databases, on_add: Callable[[SA], None],
                 on_delete: Callable[[SA], None], on_change: Callable[[], None],
                 count: Callable[[str], None]) -> None:
        self.db = db
        self.on_add = on_add
        self.on_delete = on_delete
        self.on_change = on_change
        self.count = count

    def run(self, text: str) -> str:
        out: list[str] = []
        try:
            for words in statements(text):
                out.append(self._one(words))
        finally:
            self.on_change()
        return "".join(out)

    def _one(self, w: list[str]) -> str:
        verb, args = w[0], w[1:]
        if verb == "add":
            return self._add(args)
        if verb in ("get", "delete"):
            return self._get_delete(verb, args)
        if verb == "deleteall":
            if len(args) != 3 or args[2] != "esp":
                raise SetkeyError("usage: deleteall SRC DST esp")
            (s, fs), (d, fd) = _addr(args[0]), _addr(args[1])
            for key, sa in list(self.db.sad.items()):
                if sa.src == s and sa.dst == d and sa.family == fs == fd:
                    self._delete(key)
            return ""
        if verb == "flush":
            if args not in ([], ["esp"]):
                raise SetkeyError("only esp SAs exist here")
            for key in list(self.db.sad):
                self._delete(key)
            return ""
        if verb == "dump":
            return self.dump()
        if verb == "spdadd":
            return self._spdadd(args)
        if verb == "spddelete":
            return self._spddelete(args)
        if verb == "spdflush":
            n = len(self.db.spd["in"]) + len(self.db.spd["out"])
            self.db.spd = {"in": [], "out": []}
            for _ in range(n):
                self.count("sp_deleted")
            return ""
        if verb == "spddump":
            return self.spddump()
        raise SetkeyError(f"unknown command {verb!r}")

    # -- SAs ------------------------------------------------------------------------------
    def _add(self, a: list[str]) -> str:
        while a and a[0] in ("-4", "-6", "-n"):
            a = a[1:]
        if len(a) < 4:
            raise SetkeyError("usage: add SRC DST esp SPI [options] ALGORITHMS")
        proto = a[2]
        if proto not in ("esp", "esp-udp"):
            raise SetkeyError(f"protocol {proto!r}: only esp and esp-udp are supported")
        s, _, sport, fs = _range(a[0])
        d, _, dport, fd = _range(a[1])
        if fs != fd:
            raise SetkeyError("source and destination of different address families")
        spi = _int(a[3])
        if not 256 <= spi <= 0xFFFFFFFF:
            raise SetkeyError(f"SPI {spi} out of range (256..4294967295)")
        sa = SA(s, d, spi, "any", "", b"", family=fs)
        if proto == "esp-udp":
            if fs != 4:
                raise SetkeyError("esp-udp (NAT traversal) is IPv4 only")
            sa.natt_sport = sport or 4500
            sa.natt_dport = dport or 4500
        i = 4
        while i < len(a):
            opt = a[i]
            val = a[i + 1] if i + 1 < len(a) else None
            if opt == "-esn":
                sa.esn = True
                i += 1
                continue
            if val is None:
                raise SetkeyError(f"{opt} needs a value")
            if opt == "-m":
                if val not in ("transport", "tunnel", "any"):
                    raise SetkeyError(f"mode {val!r}")
                sa.mode = val
            elif opt == "-r":
                sa.replay = _int(val)
                if not 0 <= sa.replay <= 1024:
                    raise SetkeyError("replay window 0..1024")
            elif opt in ("-E", "-e"):
                if val not in ENC_ALGS or i + 2 >= len(a):
                    raise SetkeyError(f"encryption algorithm {val!r}: aes-gcm-16, aes-cbc")
                sa.enc, sa.enc_key = val, _key(a[i + 2])
                i += 1
            elif opt == "-A":
                if val not in AUTH_ALGS or i + 2 >= len(a):
                    raise SetkeyError(f"authentication algorithm {val!r}: hmac-sha256")
                sa.auth, sa.auth_key = val, _key(a[i + 2])
                i += 1
            elif opt in ("-lh", "-ls"):
                t = float(_int(val))
                if opt == "-lh":
                    sa.hard_time = t
                else:
                    sa.soft_time = t
            elif opt in ("-bh", "-bs"):
                if opt == "-bh":
                    sa.hard_bytes = _int(val)
                else:
                    sa.soft_bytes = _int(val)
            elif opt == "-u":
                pass  # reqid: unique SAs are not distinguished here
            else:
                raise SetkeyError(f"unknown option {opt!r}")
            i += 2
        if not sa.enc:
            raise SetkeyError("no encryption algorithm (-E)")
        if sa.gcm and sa.auth:
            raise SetkeyError("aes-gcm-16 takes no -A")
        if (d, spi) in self.db.sad:
            raise OSError(errno.EEXIST, f"SA {ntoa(d, fd)} spi {spi:#x} exists")
        self.on_add(sa)  # makes the crypto session (raises on a bad key)
        self.db.sad[(d, spi)] = sa
        self.count("sa_added")
        return ""

    def _get_delete(self, verb: str, a: list[str]) -> str:
        if len(a) != 4 or a[2] not in ("esp", "esp-udp"):
            raise SetkeyError(f"usage: {verb} SRC DST esp SPI")
        dr, sr = _range(a[1]), _range(a[0])
        key = (dr[0], _int(a[3]))
        sa = self.db.sad.get(key)
        if sa is None or sa.src != sr[0] or sa.family != dr[3] or sa.family != sr[3]:
            raise OSError(errno.ESRCH, "No such process: no such SA")
        if verb == "get":
            return self._dump_sa(sa)
        self._delete(key)
        return ""

    def _delete(self, key: tuple[int, int]) -> None:
        sa = self.db.sad.pop(key)
        self.on_delete(sa)
        self.count("sa_deleted")

    def dump(self) -> str:
        if not self.db.sad:
            return "No SAD entries.\n"
        return "".join(self._dump_sa(sa) for sa in self.db.sad.values())

    @staticmethod
    def _dump_sa(sa: SA) -> str:
        proto = "esp-udp" if sa.natt else "esp"
        ports = (f"[{sa.natt_sport}]", f"[{sa.natt_dport}]") if sa.natt else ("", "")
        lines = [f"{ntoa(sa.src, sa.family)}{ports[0]} {ntoa(sa.dst, sa.family)}{ports[1]} ",
                 f"\t{proto} mode={sa.mode} spi={sa.spi}(0x{sa.spi:08x}) reqid=0(0x00000000)",
                 f"\tE: {sa.enc}  {mask_key(sa.enc_key)}"]
        if sa.auth:
            lines.append(f"\tA: {sa.auth}  {mask_key(sa.auth_key)}")
        flags = "esn " if sa.esn else ""
        lines.append(f"\tseq=0x{sa.seq & 0xFFFFFFFF:08x} replay={sa.replay} "
                     f"flags={flags}state={sa.state}")
        now = time.time()
        lines.append(f"\tcreated: {time.ctime(sa.created_wall)}\tcurrent: {time.ctime(now)}")
        lines.append(f"\tdiff: {int(sa.age())}(s)\thard: {int(sa.hard_time)}(s)\t"
                     f"soft: {int(sa.soft_time)}(s)")
        lines.append(f"\tcurrent: {sa.bytes}(bytes)\thard: {sa.hard_bytes}(bytes)\t"
                     f"soft: {sa.soft_bytes}(bytes)")
        lines.append(f"\tallocated: {sa.packets}\treplay_top: {sa.top}")
        return "\n".join(lines) + "\n"

    # -- policies -------------------------------------------------------------------------
    def _selector(self, a: list[str]) -> tuple[int, int, int, int, int, int, int, int]:
        s, sl, sp, fs = _range(a[0])
        d, dl, dp, fd = _range(a[1])
        if fs != fd:
            raise SetkeyError("source and destination of different address families")
        up = a[2]
        proto = UPPER.get(up, None)
        if proto is None:
            proto = _int(up)
            if not 0 <= proto <= 255:
                raise SetkeyError(f"upper-layer protocol {up!r}")
        return s, sl, d, dl, sp, dp, proto, fs

    def _spdadd(self, a: list[str]) -> str:
        while a and a[0] in ("-4", "-6", "-n"):
            a = a[1:]
        if len(a) < 6 or a[3] != "-P":
            raise SetkeyError("usage: spdadd SRC DST UPPER -P DIR ACTION [RULE]")
        s, sl, d, dl, sp, dp, proto, fam = self._selector(a)
        direction, action = a[4], a[5]
        if direction not in ("in", "out"):
            raise SetkeyError(f"direction {direction!r}: in or out")
        if action not in ("discard", "none", "ipsec"):
            raise SetkeyError(f"policy {action!r}: discard, none or ipsec")
        pol = Policy(s, sl, d, dl, sp, dp, proto, direction, action, family=fam)
        if action == "ipsec":
            if len(a) != 7:
                raise SetkeyError("ipsec needs one rule: esp/MODE/[TSRC-TDST]/LEVEL")
            parts = a[6].split("/")
            if len(parts) != 4 or parts[0] != "esp" or parts[1] not in ("transport", "tunnel") \
                    or parts[3] not in ("require", "use", "default"):
                raise SetkeyError(f"rule {a[6]!r}: esp/transport//require or "
                                  f"esp/tunnel/SRC-DST/require")
            pol.mode = parts[1]
            pol.level = "use" if parts[3] == "use" else "require"
            if pol.mode == "tunnel":
                ends = parts[2].split("-")
                if len(ends) != 2:
                    raise SetkeyError("tunnel mode needs TSRC-TDST")
                (pol.tsrc, ft), (pol.tdst, fd) = _addr(ends[0]), _addr(ends[1])
                if ft != fd:
                    raise SetkeyError("tunnel endpoints of different address families")
                pol.tfamily = ft
            elif parts[2]:
                raise SetkeyError("transport mode takes no endpoints")
        elif len(a) != 6:
            raise SetkeyError(f"{action} takes no rule")
        lst = self.db.spd[direction]
        if any(p.same_selector(pol) for p in lst):
            raise OSError(errno.EEXIST, "File exists: the policy exists")
        lst.append(pol)
        self.count("sp_added")
        return ""

    def _spddelete(self, a: list[str]) -> str:
        if len(a) < 5 or a[3] != "-P" or a[4] not in ("in", "out"):
            raise SetkeyError("usage: spddelete SRC DST UPPER -P in|out")
        s, sl, d, dl, sp, dp, proto, fam = self._selector(a)
        probe = Policy(s, sl, d, dl, sp, dp, proto, a[4], "none", family=fam)
        lst = self.db.spd[a[4]]
        for p in lst:
            if p.same_selector(probe):
                lst.remove(p)
                self.count("sp_deleted")
                return ""
        raise OSError(errno.ENOENT, "No such file or directory: no such policy")

    def spddump(self) -> str:
        pols = self.db.spd["in"] + self.db.spd["out"]
        if not pols:
            return "No SPD entries.\n"
        out = []
        for p in pols:
            sp = f"[{p.sport}]" if p.sport else "[any]"
            dp = f"[{p.dport}]" if p.dport else "[any]"
            up = UPPER_NAME.get(p.proto, str(p.proto))
            lines = [f"{ntoa(p.src, p.family)}/{p.src_len}{sp} "
                     f"{ntoa(p.dst, p.family)}/{p.dst_len}{dp} {up}",
                     f"\t{p.direction} {p.action}"]
            if p.action == "ipsec":
                ends = f"{ntoa(p.tsrc, p.tfamily)}-{ntoa(p.tdst, p.tfamily)}" \
                    if p.mode == "tunnel" else ""
                lines.append(f"\tesp/{p.mode}/{ends}/{p.level}")
            lines.append(f"\tcreated: {time.ctime(p.created)}  hits: {p.hits}")
            out.append("\n".join(lines) + "\n")
        return "".join(out)


__all__ = ["REPLAY_DEFAULT", "Setkey", "SetkeyError", "mask_key", "statements"]
