"""One interface's DHCP client (RFC 2131 §4.4): the state machine, as a trio task.

::

    INIT-REBOOT --REQUEST(50)--> REBOOTING --ACK--> (check) --> BOUND
    INIT --DISCOVER--> SELECTING --OFFER--> REQUESTING --ACK--> (check) --> BOUND
    BOUND --T1--> RENEWING (REQUEST unicast to the server)
          --T2--> REBINDING (REQUEST broadcast) --expiry--> INIT (address removed)
    NAK anywhere: INIT; a conflict found by the check: DECLINE, wait, INIT

The check is RFC 5227's probe: ``net.inet.dhcp.arp_probes`` ARP requests from 0.0.0.0
for the new address, ``net.inet.dhcp.arp_probe_ms`` apart, while an "ether" pfil hook
watches for anyone using the address (a reply or request from it, or another prober).

Messages before an address exists leave as whole frames handed to layer 2 (source
0.0.0.0, or the lease's address while rebinding; see wire.frame), unicast renewals and
the release through the service's UDP socket on port 68, which also receives every
answer; the service hands each to the client whose transaction id it carries.

What a reply must be to be taken (else counted in group ``dhcp`` and ignored): a
BOOTREPLY for our hardware address (``drop_bad_chaddr``), of a type the state waits for
(``drop_unexpected``), with a server identifier (``drop_no_server_id``) that is the
server we asked when we asked one (``drop_wrong_server``: a spoofed or second server),
offering a usable unicast address (``drop_bad_address``).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from stack.addr import ANY4, Prefix, format_addr, v4
from stack.dhcp import wire
from stack.inet.wire import arp as warp
from stack.inet.wire.ipv4 import int_to_ip, mask_to_prefix
from stack.l2.ether import ETHERTYPE_ARP, ETHERTYPE_IPV4
from stack.l2.iface import BROADCAST_MAC, IFF_UP, Interface
from stack.packet import Packet
from stack.pfil import PFIL_IN

if TYPE_CHECKING:  # cycle: the service owns its clients and each calls back into it; types only
    from stack.dhcp import Dhcp

log = logging.getLogger("io-pkt.dhcp")

ARP_TYPE = ETHERTYPE_ARP.to_bytes(2, "big")

INIT, SELECTING, REQUESTING, BOUND = "init", "selecting", "requesting", "bound"
RENEWING, REBINDING, INIT_REBOOT, REBOOTING = "renewing", "rebinding", "init-reboot", "rebooting"
CHECKING, DECLINED, STOPPED = "checking", "declined", "stopped"


@dataclass
class Lease:
    address: int
    plen: int
    server: int
    lease_time: int
    t1: int
    t2: int
    routers: list[int] = field(default_factory=list)
    dns: list[int] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    hostname: str = ""
    mtu: int = 0
    #: trio clock and wall clock when the ACK came
    obtained: float = 0.0
    obtained_wall: float = 0.0

    @classmethod
    def from_ack(cls, msg: wire.DhcpMessage, now: float) -> Lease:
        lease_time = msg.u32(wire.OPT_LEASE_TIME) or 0xFFFFFFFF
        mask = msg.addr(wire.OPT_SUBNET_MASK)
        plen = mask_to_prefix(mask) if mask is not None else _classful(msg.yiaddr)
        t1 = msg.u32(wire.OPT_T1)
        t2 = msg.u32(wire.OPT_T2)
        if lease_time == 0xFFFFFFFF:
            t1 = t2 = 0xFFFFFFFF
        else:
            if t2 is None or not 0 < t2 < lease_time:
                t2 = lease_time * 7 // 8
            if t1 is None or not 0 < t1 < t2:
                t1 = min(lease_time // 2, t2)
        return cls(msg.yiaddr, plen, msg.addr(wire.OPT_SERVER_ID) or 0, lease_time, t1, t2,
                   msg.addrs(wire.OPT_ROUTER), msg.addrs(wire.OPT_DNS),
                   msg.text(wire.OPT_DOMAIN), msg.search(), msg.text(wire.OPT_HOSTNAME),
                   msg.u16(wire.OPT_MTU) or 0, now, time.time())

    def deadline(self, which: int) -> float:
        return float("inf") if which == 0xFFFFFFFF else self.obtained + which

    def expired(self, now: float) -> bool:
        return now >= self.deadline(self.lease_time)


def _classful(a: int) -> int:
    return 8 if a >> 31 == 0 else 16 if a >> 30 == 2 else 24


class Client:
    """The DHCP client of one interface. ``run()`` is its task (cancel to stop)."""

    def __init__(self, service: Dhcp, iface: Interface, remembered: Lease | None = None) -> None:
        self.service = service
        self.iface = iface
        self.state = INIT_REBOOT if remembered is not None else INIT
        self.lease: Lease | None = None
        self.remembered = remembered
        self.installed: Lease | None = None
        self.xid = 0
        self.started = trio.current_time()
        self.declines = 0
        self.last_error = ""
        self._inbox_send, self._inbox = trio.open_memory_channel[wire.DhcpMessage](16)
        self.scope = trio.CancelScope()
        self._conflict = False
        self.bound_event = trio.Event()
        #: set by ``renew IF``: renew at once instead of at T1
        self.renew_now = trio.Event()

    @property
    def counters(self) -> dict[str, int]:
        return self.service.counters

    # -- input (from the service's socket) ---------------------------------------------
    def deliver(self, msg: wire.DhcpMessage) -> None:
        try:
            self._inbox_send.send_nowait(msg)
        except trio.WouldBlock:
            self.counters["drop_queue_full"] += 1

    def _new_xid(self) -> None:
        self.service.forget_xid(self.xid)
        self.xid = random.getrandbits(32)
        self.service.register_xid(self.xid, self)

    async def _wait_reply(self, types: tuple[int, ...], deadline: float,
                          server: int | None = None) -> wire.DhcpMessage | None:
        """The next acceptable reply of one of ``types`` before ``deadline``."""
        c = self.counters
        with trio.move_on_at(deadline):
            while True:
                msg = await self._inbox.receive()
                if msg.xid != self.xid:
                    c["drop_bad_xid"] += 1  # an old transaction's late answer
                    continue
                if msg.chaddr != self.iface.mac:
                    c["drop_bad_chaddr"] += 1
                    continue
                if msg.msg_type not in types:
                    c["drop_unexpected"] += 1
                    continue
                sid = msg.addr(wire.OPT_SERVER_ID)
                if sid is None:
                    c["drop_no_server_id"] += 1
                    continue
                if server is not None and sid != server:
                    c["drop_wrong_server"] += 1
                    continue
                if msg.msg_type != wire.NAK and not _usable(msg.yiaddr):
                    c["drop_bad_address"] += 1
                    continue
                c[f"in_{wire.TYPE_NAMES[msg.msg_type].lower()}"] += 1
                return msg
        return None

    # -- output ------------------------------------------------------------------------
    def _message(self, msg_type: int, *, ciaddr: int = 0, requested: int | None = None,
                 server: int | None = None, broadcast_flag: bool = True) -> wire.DhcpMessage:
        opts: dict[int, bytes] = {
            wire.OPT_CLIENT_ID: b"\x01" + self.iface.mac,
        }
        if msg_type in (wire.DISCOVER, wire.REQUEST):
            opts[wire.OPT_PARAM_REQUEST] = bytes(wire.REQUESTED)
            opts[wire.OPT_MAX_SIZE] = (max(576, min(self.iface.mtu, 1500))).to_bytes(2, "big")
        if requested is not None:
            opts[wire.OPT_REQUESTED_IP] = wire.u32(requested)
        if server is not None:
            opts[wire.OPT_SERVER_ID] = wire.u32(server)
        secs = min(0xFFFF, int(trio.current_time() - self.started))
        return wire.DhcpMessage(wire.BOOTREQUEST, self.xid, self.iface.mac, msg_type, secs,
                                wire.FLAG_BROADCAST if broadcast_flag else 0, ciaddr,
                                options=opts)

    def _broadcast(self, msg: wire.DhcpMessage, src: int = 0) -> None:
        payload = wire.build(msg)
        frame = wire.frame(src, 0xFFFFFFFF, payload)
        self.service.stack.l2.output(self.iface, BROADCAST_MAC, ETHERTYPE_IPV4, frame)
        self._count_out(msg)

    def _unicast(self, msg: wire.DhcpMessage, server: int) -> None:
        sock = self.service.sock
        if sock is None:
            return
        try:
            sock.sendto_nowait(wire.build(msg), (int_to_ip(server),
                                                               wire.SERVER_PORT))
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.last_error = f"send to {int_to_ip(server)}: {exc.strerror}"
            return
        self._count_out(msg)

    def _count_out(self, msg: wire.DhcpMessage) -> None:
        self.counters[f"out_{wire.TYPE_NAMES[msg.msg_type].lower()}"] += 1

    def _backoff(self, attempt: int) -> float:
        """RFC 2131 §4.1: 4, 8, 16, 32, 64 s (from ``net.inet.dhcp.retransmit_ms``),
        each randomized by ±1 s (scaled down with the base)."""
        base = self.service.k_retransmit.value / 1000  # type: ignore[operator]
        delay = min(base * (1 << attempt), 16 * base)
        jitter = min(1.0, base / 4)
        return max(0.01, delay + random.uniform(-jitter, jitter))

    # -- the state machine --------------------------------------------------------------
    async def run(self) -> None:
        iface = self.iface
        if not iface.up:
            iface.set_flags(IFF_UP)
        try:
            with self.scope:
                await self._run()
        finally:
            self.service.forget_xid(self.xid)

    async def _run(self) -> None:
        remembered, self.remembered = self.remembered, None
        lease: Lease | None = None
        if remembered is not None and not remembered.expired(trio.current_time()):
            self.state = INIT_REBOOT
            lease = await self._reboot(remembered)
        while True:
            if lease is None:
                self.state = INIT
                lease = await self._acquire()
            if not await self._check(lease):
                continue_after = self.service.k_decline_wait.value
                self._decline(lease)
                lease = None
                self.state = DECLINED
                await trio.sleep(float(continue_after))  # type: ignore[arg-type]
                continue
            self._bind(lease)
            lease = await self._bound(lease)

    async def _acquire(self) -> Lease:
        """INIT → SELECTING → REQUESTING until an ACK."""
        while True:
            self._new_xid()
            self.started = trio.current_time()
            self.state = SELECTING
            offer = None
            attempt = 0
            while offer is None:
                self._broadcast(self._message(wire.DISCOVER))
                offer = await self._wait_reply((wire.OFFER,),
                                               trio.current_time() + self._backoff(attempt))
                attempt += 1
            sid = offer.addr(wire.OPT_SERVER_ID)
            self.state = REQUESTING
            for attempt in range(4):
                self._broadcast(self._message(wire.REQUEST, requested=offer.yiaddr, server=sid))
                ack = await self._wait_reply((wire.ACK, wire.NAK),
                                             trio.current_time() + self._backoff(attempt),
                                             server=sid)
                if ack is None:
                    continue
                if ack.msg_type == wire.NAK:
                    self.last_error = f"NAK from {int_to_ip(sid or 0)}: {ack.text(wire.OPT_MESSAGE)}"
                    break
                return Lease.from_ack(ack, trio.current_time())
            # no ACK (or a NAK): start over

    async def _reboot(self, old: Lease) -> Lease | None:
        """INIT-REBOOT: ask for the remembered address again (no server identifier)."""
        self._new_xid()
        self.started = trio.current_time()
        self.state = REBOOTING
        tries = int(self.service.k_reboot_tries.value)
        for attempt in range(tries):
            self._broadcast(self._message(wire.REQUEST, requested=old.address))
            ack = await self._wait_reply((wire.ACK, wire.NAK),
                                         trio.current_time() + self._backoff(attempt))
            if ack is None:
                continue
            if ack.msg_type == wire.NAK or ack.yiaddr != old.address:
                self.counters["reboot_nak"] += 1
                return None
            self.counters["reboot_ack"] += 1
            return Lease.from_ack(ack, trio.current_time())
        return None

    async def _check(self, lease: Lease) -> bool:
        """RFC 5227 probe of a new address: True when nobody answered."""
        probes = int(self.service.k_arp_probes.value)
        if probes <= 0 or not self.iface.medium.resolves:
            return True
        if self.installed is not None and self.installed.address == lease.address:
            return True  # ours already (a reboot into the same address)
        self.state = CHECKING
        self._conflict = False
        target = lease.address
        iface = self.iface
        arp = self.service.stack.inet.arp

        def watch(pkt: Packet, on: Interface, direction: str) -> None:
            # (the "ether" head runs before layer 2 sets pkt.ethertype: read the header)
            if on is not iface or bytes(pkt.data[12:14]) != ARP_TYPE:
                return None
            try:
                a = warp.parse(pkt.data[pkt.l3:])
            except Exception:
                return None
            if a.sha == iface.mac:
                return None
            if a.spa == target or (a.op == warp.OP_REQUEST and a.spa == 0 and a.tpa == target):
                self._conflict = True
            return None

        hook = self.service.stack.pfil.add_hook(watch, "ether", PFIL_IN, name=f"dhcp-{iface.name}")
        try:
            interval = int(self.service.k_arp_probe_ms.value) / 1000
            for _ in range(probes):
                arp.request(iface, target, src=0)
                self.counters["arp_probes"] += 1
                await trio.sleep(interval)
                if self._conflict:
                    break
        finally:
            self.service.stack.pfil.remove_hook(hook)
        if self._conflict:
            self.counters["arp_conflicts"] += 1
            log.warning("%s: %s is in use by another host: declining it", iface.name,
                        int_to_ip(target))
            return False
        return True

    def _decline(self, lease: Lease) -> None:
        self.declines += 1
        self.last_error = f"declined {int_to_ip(lease.address)} (ARP conflict)"
        self._broadcast(self._message(wire.DECLINE, requested=lease.address,
                                      server=lease.server, broadcast_flag=False))

    def _bind(self, lease: Lease) -> None:
        self.lease = lease
        self.state = BOUND
        self.service.install(self, lease)
        self.bound_event.set()
        if lease.server:  # learn its MAC now: renewals and the release are unicast
            self.service.stack.inet.arp.request(self.iface, lease.server, src=lease.address)
        log.info("%s: bound to %s/%d from %s, lease %ss", self.iface.name,
                 int_to_ip(lease.address), lease.plen, int_to_ip(lease.server), lease.lease_time)

    async def _bound(self, lease: Lease) -> Lease | None:
        """BOUND → RENEWING → REBINDING; returns a new lease to check (another address
        after a rebind), or None to start over (NAK, expiry)."""
        while True:
            self.state = BOUND
            with trio.move_on_at(lease.deadline(lease.t1)):
                await self.renew_now.wait()
            self.renew_now = trio.Event()
            self.state = RENEWING
            self._new_xid()
            self.started = trio.current_time()
            ack = await self._renew(lease, rebinding=False)
            if ack is None:
                self.state = REBINDING
                ack = await self._renew(lease, rebinding=True)
            if ack is None or ack.msg_type == wire.NAK:
                self.counters["lease_expired" if ack is None else "renew_nak"] += 1
                self.last_error = "lease expired" if ack is None else "NAK on renewal"
                self.service.uninstall(self)
                self.lease = None
                return None
            new = Lease.from_ack(ack, trio.current_time())
            self.counters["renewed" if self.state == RENEWING else "rebound"] += 1
            if new.address != lease.address:
                self.service.uninstall(self)
                self.lease = None
                return new
            self.lease = lease = new
            self.service.install(self, lease)  # updated options, times

    async def _renew(self, lease: Lease, *, rebinding: bool) -> wire.DhcpMessage | None:
        until = lease.deadline(lease.lease_time if rebinding else lease.t2)
        while True:
            now = trio.current_time()
            left = until - now
            if left <= 0:
                return None
            msg = self._message(wire.REQUEST, ciaddr=lease.address, broadcast_flag=False)
            if rebinding:
                self._broadcast(msg, src=lease.address)
            else:
                self._unicast(msg, lease.server)
            # RFC 2131 §4.4.5: half the remaining time, at least 60 s
            wait = left if left < 60 else max(60.0, left / 2)
            ack = await self._wait_reply((wire.ACK, wire.NAK), now + wait,
                                         server=None if rebinding else lease.server)
            if ack is not None:
                return ack

    def release(self) -> None:
        """DHCPRELEASE to the server (unicast), then the address goes."""
        lease = self.lease
        if lease is None or self.state not in (BOUND, RENEWING, REBINDING):
            return
        self._new_xid()
        msg = self._message(wire.RELEASE, ciaddr=lease.address, server=lease.server,
                            broadcast_flag=False)
        # a whole frame, now: the stack may be stopping, with no time to resolve the
        # server (known from the ARP request at bind time; else the frame is broadcast)
        mac = self.service.stack.inet.arp.lookup(self.iface.name, lease.server)
        frame = wire.frame(lease.address, lease.server, wire.build(msg))
        self.service.stack.l2.output(self.iface, mac or BROADCAST_MAC, ETHERTYPE_IPV4, frame)
        self._count_out(msg)
        self.service.uninstall(self)
        self.lease = None
        self.state = STOPPED

    # -- the config/dhcp file ------------------------------------------------------------
    def render(self) -> str:
        now = trio.current_time()
        lines = [f"interface {self.iface.name}", f"state {self.state}",
                 f"xid {self.xid:#010x}"]
        lease = self.lease
        if lease is not None:
            def left(t: int) -> str:
                d = lease.deadline(t)
                return "infinite" if d == float("inf") else f"{max(0.0, d - now):.0f}"

            lines += [
                f"address {int_to_ip(lease.address)}/{lease.plen}",
                f"server {int_to_ip(lease.server)}",
                f"routers {' '.join(map(int_to_ip, lease.routers)) or '-'}",
                f"dns {' '.join(map(int_to_ip, lease.dns)) or '-'}",
                f"domain {lease.domain or '-'}",
                f"search {' '.join(lease.search) or '-'}",
                f"hostname {lease.hostname or '-'}",
                f"mtu {lease.mtu or '-'}",
                f"lease {lease.lease_time}",
                f"t1 {lease.t1}",
                f"t2 {lease.t2}",
                f"obtained {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(lease.obtained_wall))}",
                f"renew_in {left(lease.t1)}",
                f"rebind_in {left(lease.t2)}",
                f"expires_in {left(lease.lease_time)}",
            ]
        lines.append(f"declines {self.declines}")
        if self.last_error:
            lines.append(f"last_error {self.last_error}")
        return "\n".join(lines) + "\n"


def _usable(a: int) -> bool:
    return a != 0 and a >> 24 not in (0, 127) and a >> 28 < 14


def lease_prefix(lease: Lease) -> Prefix:
    return Prefix(v4(lease.address), lease.plen)


__all__ = ["Client", "Lease", "ANY4", "format_addr", "lease_prefix"]
