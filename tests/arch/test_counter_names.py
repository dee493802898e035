"""Every counter the stack counts is declared (stack/counters.py).

The source of stack/, rmgr/ and the bundled modules is scanned for ``c["..."]`` /
``counters["..."]`` / ``stats["..."]`` keys (literals, f-strings and ``"x_" + y`` as
patterns, both arms of ``a if x else b``, a local ``c = self.counters`` followed to what
it names) and for the counting calls (``refused("...")``, ``_refuse("...")``); each key
must be a declared name of the group its receiver counts into (``WHERE`` below). A key
that is not a literal cannot be checked here: it must be listed in ``DYNAMIC`` with the
names it can take. A file or receiver the table does not know fails too, so a new group
gets declared as it is written. At run time, the tests' strict mode (tests/conftest.py)
catches the rest: any name a test reaches that its group does not declare fails it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from rmgr.fuse.counters import FUSE_COUNTERS, REFUSALS
from stack.batch import BATCH_COUNTERS
from stack.bpf.counters import BPF_COUNTERS
from stack.core import STACK_COUNTERS
from stack.counters import (
    CounterKey,
    Counters,
    UndeclaredCounter,
    counter_keys,
    key_matches,
    undeclared_keys,
)
from stack.crypto.counters import CRYPTO_COUNTERS
from stack.dhcp import DHCP_COUNTERS
from stack.dhcp import wire as dhcp_wire
from stack.dhcp import wire6 as dhcp_wire6
from stack.dns import wire as dns_wire
from stack.dns.lookup import DNS_COUNTERS
from stack.dns.lookup import REFUSALS as DNS_REFUSALS
from stack.inet.counters import (
    ARP_COUNTERS,
    ARP_PARSE_REASONS,
    ICMP_COUNTERS,
    ICMP_ERROR_CODES,
    IGMP_COUNTERS,
    IGMP_PARSE_REASONS,
    IP_COUNTERS,
    REASS_COUNTERS,
    ROUTE_COUNTERS,
)
from stack.inet.wire import icmp as wicmp
from stack.inet6.counters import (
    CHAIN_REASONS,
    ICMP6_COUNTERS,
    IP6_COUNTERS,
    MLD_COUNTERS,
    ND_COUNTERS,
    ND_PARSE_REASONS,
)
from stack.ipsec.counters import IPSEC_COUNTERS
from stack.l2.bridge import BridgeInterface
from stack.l2.counters import (
    BRIDGE_COUNTERS,
    ETHER_COUNTERS,
    FASTFWD_COUNTERS,
    FDIO_COUNTERS,
    GSO_REASONS,
    IFACE_COUNTERS,
    ethertype_counters,
)
from stack.l2.fdio import FdInterface
from stack.l2.iface import Interface
from stack.l2.loopback import Loopback
from stack.l2.vlan import VlanInterface
from stack.loader import _load_file
from stack.neighbour import NEIGHBOUR_COUNTERS
from stack.net80211.counters import WLAN_COUNTERS
from stack.pf.counters import (
    BLOCK_BY_DIR,
    COUNTER_NAMES,
    FILTER_NAMES,
    PASS_BY_DIR,
    PF_COUNTERS,
    PF_FILTER_COUNTERS,
)
from stack.pfil import PACKET_HEADS, PFIL_COUNTERS, head_counters
from stack.qnet.counters import DROP_REASONS as QNET_DROP_REASONS
from stack.qnet.counters import QNET_COUNTERS
from stack.sockets.counters import SOCKDOOR_COUNTERS
from stack.transport.counters import PORTS, RAW_COUNTERS, SOCKETS, UDP_COUNTERS
from stack.transport.tcp.counters import TCP_COUNTERS

ROOT = Path(__file__).resolve().parents[2]
#: what is scanned
TREES = ("stack", "rmgr", "modules", "examples/modules")
#: the variables and attributes whose subscripts are counters
NAMES = ("c", "counters", "stats")
#: functions whose first argument is a counter name, with the prefix they add
CALLS = {"refused": "", "_refuse": "update_refused_"}

Declared = frozenset[str] | None  # None: not a Counters (a plain dict of something else)


def _module_file(rel: str) -> ModuleType:
    """A loadable module, loaded by path as the stack loads it."""
    return _load_file(ROOT / rel)[1]


def _where() -> dict[str, dict[str, Declared]]:
    """file (or folder/) → receiver as written (``"*"``: any) → the names it may count."""
    tap = _module_file("modules/devnp-tap.py").TapInterface.counter_names
    packet = _module_file("modules/devnp-packet.py").PacketInterface.counter_names
    vwire = _module_file("modules/devnp-vwire.py").VwireInterface.counter_names
    echo = _module_file("examples/modules/lsm-echo.py").COUNTERS
    cryptosim = _module_file("modules/devnp-cryptosim.py").COUNTERS
    wifisim = _module_file("modules/devnp-wifisim.py").COUNTERS
    return {
        # the transports: every counter of a file is its protocol's
        "stack/transport/tcp/": {"*": TCP_COUNTERS},
        "stack/transport/udp.py": {"*": UDP_COUNTERS},
        "stack/transport/raw.py": {"*": RAW_COUNTERS},
        "stack/transport/ports.py": {"*": PORTS},      # TCP's and UDP's (both declare these)
        "stack/transport/sockopt.py": {"*": SOCKETS},  # every transport's
        # the socket door (message mode)
        "stack/sockets/": {"*": SOCKDOOR_COUNTERS},
        # the IPv4 layer
        "stack/inet/ipv4.py": {"self.counters": IP_COUNTERS},
        "stack/inet/manage.py": {"inet.counters": IP_COUNTERS},
        "stack/inet/icmp.py": {"self.counters": ICMP_COUNTERS},
        "stack/inet/arp.py": {"self.counters": ARP_COUNTERS},
        "stack/inet/reass.py": {"self.counters": REASS_COUNTERS},
        "stack/inet/route.py": {"self.counters": ROUTE_COUNTERS},
        "stack/inet/igmp.py": {"self.counters": IGMP_COUNTERS},
        # the IPv6 layer
        "stack/inet6/ipv6.py": {"self.counters": IP6_COUNTERS, "c": IP6_COUNTERS},
        "stack/inet6/addrconf.py": {"ip6.counters": IP6_COUNTERS, "c": IP6_COUNTERS,
                                    "self.ip6.counters": IP6_COUNTERS},
        "stack/inet6/icmp6.py": {"self.counters": ICMP6_COUNTERS, "c": ICMP6_COUNTERS},
        "stack/inet6/nd.py": {"self.counters": ND_COUNTERS, "c": ND_COUNTERS},
        "stack/inet6/rtadv.py": {"ip6.nd.counters": ND_COUNTERS},
        "stack/inet6/mld.py": {"self.counters": MLD_COUNTERS, "c": MLD_COUNTERS},
        "stack/neighbour.py": {"self.counters": NEIGHBOUR_COUNTERS,
                               "self._refuse": NEIGHBOUR_COUNTERS},
        # layer 2 and the interfaces
        "stack/l2/ether.py": {"self.counters": ETHER_COUNTERS, "iface.counters": IFACE_COUNTERS},
        "stack/l2/fastfwd.py": {"self.counters": FASTFWD_COUNTERS},
        "stack/l2/iface.py": {"self.counters": Interface.counter_names},
        "stack/l2/medium.py": {"iface.counters": IFACE_COUNTERS,
                               "self.iface.counters": IFACE_COUNTERS},
        "stack/l2/fdio.py": {"self.counters": FdInterface.counter_names},
        "stack/l2/bridge.py": {"self.counters": BridgeInterface.counter_names},
        "stack/l2/vlan.py": {"self.counters": VlanInterface.counter_names},
        "stack/l2/loopback.py": {"self.counters": Loopback.counter_names},
        "modules/devnp-tap.py": {"self.counters": tap},
        "modules/devnp-packet.py": {"self.counters": packet},
        "modules/devnp-vwire.py": {"self.counters": vwire},
        # the core, pfil, pf, bpf, FUSE
        "stack/core.py": {"self.counters": STACK_COUNTERS},
        "stack/batch.py": {"self.counters": BATCH_COUNTERS, "c": BATCH_COUNTERS},
        "stack/loader.py": {"self.stack.counters": STACK_COUNTERS},
        "stack/pfil.py": {"self.counters": PFIL_COUNTERS},
        "stack/pf/engine.py": {"self.counters": PF_COUNTERS, "self.stats": PF_FILTER_COUNTERS},
        "stack/bpf/device.py": {"self.counters": BPF_COUNTERS, "self.dev.counters": BPF_COUNTERS},
        # LAN services: the DHCP client, the resolver (the stack's and libsocket's)
        "stack/dhcp/": {"*": DHCP_COUNTERS},
        "stack/dns/": {"*": DNS_COUNTERS},
        "rmgr/libsocket/dns.py": {"*": DNS_COUNTERS},
        "rmgr/fuse/": {"self.counters": FUSE_COUNTERS, "self.sched.refused": FUSE_COUNTERS},
        "examples/modules/lsm-echo.py": {"self.counters": echo},
        # the crypto framework and /dev/crypto; the offload simulator
        "stack/crypto/": {"*": CRYPTO_COUNTERS},
        "modules/devnp-cryptosim.py": {"self.counters": cryptosim},
        "stack/ipsec/": {"*": IPSEC_COUNTERS},
        # 802.11: a wireless interface's group; the simulated radio counts into it
        "stack/net80211/": {"*": WLAN_COUNTERS},
        "modules/devnp-wifisim.py": {"self.wlan.counters": wifisim},
        # Qnet (lsm-qnet): one group
        "stack/qnet/": {"*": QNET_COUNTERS},
        # not counters: the tool's dict of what it parsed from a stack's file
        "stack/tools/nicinfo.py": {"{}": None},
    }


#: keys that are not literals, by (file, key as written): the names each can take, from
#: the code that makes them (checked against that code below where it is not obvious)
DYNAMIC: dict[tuple[str, str], frozenset[str]] = {
    # ParseError.reason of stack/inet/wire/arp.py (test_reason_families)
    ("stack/inet/arp.py", "exc.reason"): frozenset(ARP_PARSE_REASONS),
    # ParseError.reason of stack/inet/wire/igmp.py (test_reason_families)
    ("stack/inet/igmp.py", "exc.reason"): frozenset(IGMP_PARSE_REASONS),
    # ChainError.reason of stack/inet6/wire/ipv6.py, ParseError.reason of wire/icmp6.py
    ("stack/inet6/ipv6.py", "e.reason"): frozenset(CHAIN_REASONS),
    ("stack/inet6/nd.py", "e.reason"): frozenset(ND_PARSE_REASONS),
    # Exchange.accept's refusal reasons (stack/dns/lookup.py)
    ("stack/dns/lookup.py", "reason"): DNS_REFUSALS,
    # Scheduler.refused(kind): its calls are scanned (CALLS) for the kinds
    ("rmgr/fuse/scheduler.py", "kind"): REFUSALS,
    ("stack/pf/engine.py", "_PASS[dirn]"): frozenset(PASS_BY_DIR.values()),
    # Ipsec._count: what setkey counts (stack/ipsec/setkey.py's count(...) calls)
    ("stack/ipsec/__init__.py", "name"): frozenset({"sa_added", "sa_deleted", "sp_added",
                                                    "sp_deleted"}),
    ("stack/pf/engine.py", "_BLOCK[dirn]"): frozenset(BLOCK_BY_DIR.values()),
    # ParseError.reason of stack/qnet/wire.py
    ("stack/qnet/node.py", "exc.reason"): QNET_DROP_REASONS,
    # WifisimRadio._count(key): the names its calls pass (COUNTERS of the module)
    ("modules/devnp-wifisim.py", "key"): _module_file("modules/devnp-wifisim.py").COUNTERS,
}


def _files() -> Iterator[tuple[str, Path]]:
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def _table_for(rel: str, where: dict[str, dict[str, Declared]]) -> dict[str, Declared] | None:
    for key, table in where.items():
        if rel == key or (key.endswith("/") and rel.startswith(key)):
            return table
    return None


def _scan() -> Iterator[tuple[str, CounterKey]]:
    for rel, path in _files():
        for k in counter_keys(path.read_text(), NAMES, CALLS):
            yield rel, k


def test_every_counter_key_is_declared() -> None:
    where = _where()
    problems = []
    seen_dynamic = set()
    n_keys = 0
    for rel, k in _scan():
        n_keys += 1
        table = _table_for(rel, where)
        if table is None or (k.where not in table and "*" not in table):
            problems.append(f"{rel}:{k.line}: counts into {k.where!r}, which no group of "
                            f"this test's WHERE table names (declare the group, add it)")
            continue
        declared = table[k.where] if k.where in table else table["*"]
        if declared is None:
            continue
        if k.kind == "dynamic":
            names = DYNAMIC.get((rel, k.key))
            if names is None:
                problems.append(f"{rel}:{k.line}: counter key {k.key!r} is not a literal "
                                f"(make it one, or list it in DYNAMIC with its names)")
                continue
            seen_dynamic.add((rel, k.key))
            if not names <= declared:
                problems.append(f"{rel}:{k.line}: {k.key!r} may be {sorted(names - declared)}, "
                                f"not declared")
        elif not key_matches(k, declared):
            problems.append(f"{rel}:{k.line}: {k.kind} counter key {k.key!r} into {k.where} "
                            f"is not declared")
    assert n_keys > 400  # the scan sees the tree
    assert not problems, "undeclared counters (declare them in the component's counters " \
        "module; stack/counters.py says where):\n" + "\n".join(problems)
    assert seen_dynamic == set(DYNAMIC), f"stale DYNAMIC entries: {set(DYNAMIC) - seen_dynamic}"


def _raised_reasons(rel: str, exc: str) -> set[str]:
    """The literal first arguments of ``raise exc("...")`` in a file."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / rel).read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                and isinstance(node.exc.func, ast.Name) and node.exc.func.id == exc:
            arg = node.exc.args[0]
            assert isinstance(arg, ast.Constant), f"{rel}: {exc} with a reason not a literal"
            found.add(arg.value)
    return found


def test_reason_families() -> None:
    """Names made from a reason or a number are declared for every value there is."""
    assert set(GSO_REASONS) == _raised_reasons("stack/l2/gso.py", "GsoError")
    assert set(ARP_PARSE_REASONS) == _raised_reasons("stack/inet/wire/arp.py", "ParseError")
    assert set(IGMP_PARSE_REASONS) == _raised_reasons("stack/inet/wire/igmp.py", "ParseError")
    assert set(ICMP_ERROR_CODES) == wicmp.ERROR_TYPES
    assert set(dns_wire.PARSE_REASONS) == _raised_reasons("stack/dns/wire.py", "DnsError")
    assert set(dhcp_wire.PARSE_REASONS) == _raised_reasons("stack/dhcp/wire.py", "DhcpError")
    assert set(dhcp_wire6.PARSE_REASONS) == _raised_reasons("stack/dhcp/wire6.py", "Dhcp6Error")
    for r in GSO_REASONS:  # the three places software segmentation may refuse a frame
        assert f"gso_error_{r}" in IFACE_COUNTERS and f"drop_gso_{r}" in ETHER_COUNTERS \
            and f"drop_prefrag_{r}" in IP_COUNTERS
    assert ethertype_counters(0x0800) == {"in_" + hex(0x0800)}  # Layer2.input's name
    assert set(COUNTER_NAMES) == PF_COUNTERS and set(FILTER_NAMES) <= PF_FILTER_COUNTERS
    assert all(head_counters(h) <= PFIL_COUNTERS for h in PACKET_HEADS)


def test_shared_names_are_declared_by_their_users() -> None:
    assert SOCKETS <= TCP_COUNTERS and SOCKETS <= UDP_COUNTERS and SOCKETS <= RAW_COUNTERS
    assert PORTS <= TCP_COUNTERS and PORTS <= UDP_COUNTERS
    assert NEIGHBOUR_COUNTERS <= ARP_COUNTERS  # the table counts into its resolver's group
    assert IFACE_COUNTERS <= FDIO_COUNTERS and IFACE_COUNTERS <= BRIDGE_COUNTERS
    for cls in (Loopback, VlanInterface, BridgeInterface, FdInterface):
        assert IFACE_COUNTERS <= cls.counter_names


def test_declared_names_are_used() -> None:
    """A declared name no key of the source can make is dead (or a typo of the real
    one, which then fails above). pf's COUNTER_NAMES are exempt: pfctl shows all of
    OpenBSD's, pf counts four of them."""
    keys = [k for _, k in _scan() if k.kind != "dynamic"]
    made = set().union(*DYNAMIC.values())
    unused = {}
    for group, declared in (("ip", IP_COUNTERS), ("icmp", ICMP_COUNTERS),
                            ("arp", ARP_COUNTERS), ("reass", REASS_COUNTERS),
                            ("route", ROUTE_COUNTERS), ("ether", ETHER_COUNTERS),
                            ("fastfwd", FASTFWD_COUNTERS),
                            ("interfaces", BRIDGE_COUNTERS | FDIO_COUNTERS),
                            ("stack", STACK_COUNTERS), ("pfil", PFIL_COUNTERS),
                            ("pf", PF_FILTER_COUNTERS), ("bpf", BPF_COUNTERS),
                            ("fuse", FUSE_COUNTERS), ("tcp", TCP_COUNTERS),
                            ("udp", UDP_COUNTERS), ("raw", RAW_COUNTERS),
                            ("dhcp", DHCP_COUNTERS), ("dns", DNS_COUNTERS)):
        dead = sorted(n for n in declared - made if not any(key_matches(k, {n}) for k in keys))
        if dead:
            unused[group] = dead
    assert not unused, f"declared counters nothing counts (remove them): {unused}"


async def test_a_running_stack_declares_every_group() -> None:
    """Every ``Counters`` a stack holds (walked as config/stats walks it) declares its
    names, and each group's are the ones declared for it."""
    from stack.control.stats import _parts
    from stack.services import PF
    from tests.conftest import running_stack

    expected = {"ip": IP_COUNTERS, "icmp": ICMP_COUNTERS, "arp": ARP_COUNTERS,
                "reass": REASS_COUNTERS, "route": ROUTE_COUNTERS,
                "fastfwd": FASTFWD_COUNTERS, "stack": STACK_COUNTERS, "pfil": PFIL_COUNTERS,
                "fuse": FUSE_COUNTERS, "bpf": BPF_COUNTERS, "tcp": TCP_COUNTERS,
                "udp": UDP_COUNTERS, "raw": RAW_COUNTERS}
    async with running_stack(protocols=[("pf", ""), ("bpf", "")]) as stack:
        found: dict[int, Counters] = {}
        seen: set[int] = set()

        def walk(obj: object, depth: int) -> None:
            if isinstance(obj, Counters):
                found[id(obj)] = obj
            elif id(obj) not in seen and depth < 4:
                seen.add(id(obj))
                for sub in _parts(obj):
                    walk(sub, depth + 1)

        for part in (stack, stack.l2, stack.pfil, *stack.interfaces.values(),
                     *(v for _, v in stack.services.items())):
            walk(part, 0)
        groups = {c.group for c in found.values()}
        assert {"ip", "arp", "tcp", "udp", "ether", "bpf", "fuse", "lo0"} <= groups
        for c in found.values():
            assert c.declared is not None, f"group {c.group!r} declares no names"
            if c.group in expected:
                assert c.declared == expected[c.group], c.group
        assert stack.l2.counters.declared is not None
        assert ETHER_COUNTERS <= stack.l2.counters.declared  # + the registered EtherTypes
        assert stack.interfaces["lo0"].counters.declared == Loopback.counter_names
        pf = stack.services.get(PF)
        assert pf is not None  # pf's are plain dicts of exactly its declared names
        assert set(pf.counters) == PF_COUNTERS and set(pf.stats) == PF_FILTER_COUNTERS


async def test_registrations_declare_their_names() -> None:
    """A pfil head a protocol creates and an EtherType it registers bring their names."""
    from tests.conftest import running_stack

    async with running_stack() as stack:
        stack.pfil.create_head("demo")
        assert head_counters("demo") <= (stack.pfil.counters.declared or set())
        stack.l2.register(0x88B5, lambda iface, pkt: None)
        assert "in_0x88b5" in (stack.l2.counters.declared or set())


def test_the_scan_finds_typos_patterns_and_unknowable_keys() -> None:
    src = '''
def f(self, c, err, state):
    c["drop_bad_chksum"] += 1
    self.c[f"state_{state}_to_CLOSED"] += 1
    self.proto.counters["syn_out" if err else "synack_oot"] += 1
    c[err] += 1
    other["not_a_counter"] += 1
'''
    declared = {"drop_bad_checksum", "state_LISTEN_to_CLOSED", "syn_out", "synack_out"}
    assert [(k.kind, k.key) for k in counter_keys(src)] == [
        ("literal", "drop_bad_chksum"), ("pattern", "state_.+_to_CLOSED"),
        ("literal", "syn_out"), ("literal", "synack_oot"), ("dynamic", "err")]
    bad = [(k.line, k.key) for k in undeclared_keys(src, declared)]
    assert bad == [(3, "drop_bad_chksum"), (5, "synack_oot"), (6, "err")]


def test_the_scan_follows_aliases_concatenations_and_counting_calls() -> None:
    src = '''
def f(self, iface, exc):
    c = self.counters
    c["a"] += 1
    iface.counters["gso_error_" + exc.reason] += 1
    self.refuse("static")
    self.refuse(exc.reason)

def g(self):
    c["b"] += 1
'''
    keys = [(k.where, k.kind, k.key) for k in counter_keys(src, calls={"refuse": "refused_"})]
    assert keys == [("self.counters", "literal", "a"),
                    ("iface.counters", "pattern", "gso_error_.+"),
                    ("self.refuse", "literal", "refused_static"),
                    ("self.refuse", "pattern", "refused_.+"),
                    ("c", "literal", "b")]


def test_strict_mode_raises_on_an_undeclared_name() -> None:
    assert Counters.strict  # tests/conftest.py: for every test
    c = Counters("demo", {"known"})
    c["known"] += 1
    with pytest.raises(UndeclaredCounter):
        c["unknown"] += 1
    c.declare({"unknown"})
    c["unknown"] += 1
    Counters.strict = False  # the conftest fixture restores it
    c["other"] += 1  # a running stack counts it and remembers the name
    assert c["other"] == 1 and c.undeclared == {"other"}
    assert Counters("free")["anything"] == 0  # no declaration: no check
