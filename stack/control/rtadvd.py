"""``config/rtadvd``: the router-advertisement daemon's interface (rtadvd's job, done by
stack/inet6/rtadv.py in router mode, ``net.inet6.ip6.forwarding=1``).

Reading gives one stanza per advertising interface::

    tap0:
        state advertising           (waiting: enabled, but not in router mode)
        mtu 1400                    (0: no MTU option)
        prefix 2001:db8:1::/64      (one per prefix; "prefix derived": the /64s of the
                                     interface's global addresses)
        rdnss 2001:db8::53          (one per server)
        lifetime 1800
        interval 600
        hoplimit 64
        sent 3

Commands (root)::

    enable IF [mtu N] [prefix P/LEN]... [rdnss ADDR]... [lifetime S] [interval S]
              [hoplimit N] [managed] [other]
    disable IF      (sends a final advertisement with router lifetime 0)

An ``enable`` of an interface already advertising replaces its settings.
"""

from __future__ import annotations

import errno

from rmgr.nodes import Caller
from stack.addr import Addr, Prefix, format_addr
from stack.control import backend
from stack.control.util import (
    ControlFiles,
    einval,
    parse_addr6,
    parse_int,
    parse_prefix6,
    require_root,
    take,
)
from stack.inet6.rtadv import AdvertConfig

#: RFC 4861 §6.2.1: MaxRtrAdvInterval 4..1800 s, AdvDefaultLifetime 0 or
#: MaxRtrAdvInterval..9000 s, AdvLinkMTU at least IPv6's minimum
MIN_INTERVAL, MAX_INTERVAL, MAX_LIFETIME, MIN_MTU = 4, 1800, 9000, 1280


class RtadvdFiles(ControlFiles):
    def render(self) -> str:
        out = []
        routing = backend.rtadv_forwarding(self.stack)
        for ifname, cfg in sorted(backend.rtadv_configs(self.stack).items()):
            lines = [f"{ifname}:", f"\tstate {'advertising' if routing else 'waiting'}",
                     f"\tmtu {cfg.mtu}"]
            if cfg.prefixes is None:
                lines.append("\tprefix derived")
            else:
                lines += [f"\tprefix {p}" for p in cfg.prefixes]
            lines += [f"\trdnss {format_addr(a)}" for a in cfg.rdnss]
            lines += [f"\tlifetime {cfg.lifetime}", f"\tinterval {int(cfg.interval)}",
                      f"\thoplimit {cfg.hop_limit}", f"\tsent {cfg.sent}"]
            flags = [f for f, on in (("managed", cfg.managed), ("other", cfg.other)) if on]
            if flags:
                lines.append(f"\tflags {','.join(flags)}")
            out.append("\n".join(lines) + "\n\n")
        return "".join(out)

    def command(self, text: str, caller: Caller) -> str:
        require_root(caller, "router advertisements")
        words = text.split()
        if len(words) < 2 or words[0] not in ("enable", "disable"):
            raise einval("usage: enable IF [mtu N] [prefix P/LEN]... [rdnss ADDR]... "
                         "[lifetime S] [interval S] [hoplimit N] [managed] [other] | "
                         "disable IF")
        verb, ifname, args = words[0], words[1], words[2:]
        iface = self.stack.interfaces.get(ifname)
        if iface is None:
            raise OSError(errno.ENXIO, f"no such interface: {ifname}")
        if verb == "disable":
            if args:
                raise einval(f"unexpected words after disable {ifname}: {' '.join(args)}")
            backend.rtadv_disable(self.stack, ifname)
            return f"disabled {ifname}\n"
        cfg = AdvertConfig()
        prefixes: list[Prefix] = []
        rdnss: list[Addr] = []
        while args:
            kw = args.pop(0)
            if kw == "mtu":
                cfg.mtu = parse_int(take(args, kw), "mtu", 0, 65535)
                if cfg.mtu and not MIN_MTU <= cfg.mtu <= iface.mtu:
                    raise einval(f"mtu {cfg.mtu}: the advertised MTU must be between "
                                 f"{MIN_MTU} and {ifname}'s MTU {iface.mtu}")
            elif kw == "prefix":
                spec = take(args, kw)
                if "/" not in spec:
                    raise einval(f"prefix {spec}: give its length (PREFIX/LEN)")
                p, zone = parse_prefix6(spec)
                if zone is not None or p.plen == 0 or p.addr >> 120 == 0xFF or \
                        p.addr >> 118 == 0xFE80 >> 6:
                    raise einval(f"prefix {spec}: not a global unicast prefix")
                net = Prefix(p.network, p.plen)
                if net not in prefixes:
                    prefixes.append(net)
            elif kw == "rdnss":
                spec = take(args, kw)
                a, zone = parse_addr6(spec)
                if zone is not None or a >> 120 == 0xFF or a in (0, 1):
                    raise einval(f"rdnss {spec}: not a unicast address")
                rdnss.append(a)
            elif kw == "lifetime":
                cfg.lifetime = parse_int(take(args, kw), "lifetime", 0, MAX_LIFETIME)
            elif kw == "interval":
                cfg.interval = float(parse_int(take(args, kw), "interval", MIN_INTERVAL,
                                               MAX_INTERVAL))
            elif kw == "hoplimit":
                cfg.hop_limit = parse_int(take(args, kw), "hoplimit", 0, 255)
            elif kw in ("managed", "other"):
                setattr(cfg, kw, True)
            else:
                raise einval(f"unknown rtadvd option: {kw}")
        if cfg.lifetime and cfg.lifetime < cfg.interval:
            raise einval(f"lifetime {cfg.lifetime} is below the interval "
                         f"{int(cfg.interval)} (0, or interval..{MAX_LIFETIME})")
        cfg.prefixes = prefixes or None
        cfg.rdnss = rdnss
        self.control.hold()
        try:
            backend.rtadv_enable(self.stack, ifname, cfg)
        finally:
            self.control.changed()
        if backend.rtadv_forwarding(self.stack):
            return f"advertising {ifname}\n"
        return (f"enabled {ifname} (advertisements start when "
                "net.inet6.ip6.forwarding=1)\n")
