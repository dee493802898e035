"""Sockets as the files see them: ``Conn`` (one socket, whichever door made it) and the
``SocketTable`` that makes them from the stack's socket types (``stack.registries.sockets``)
and numbers them per kind, the row's name (``tcp/N``, ``udp/N``, ``raw/N``)."""

from __future__ import annotations

import errno
import heapq
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from rmgr.libsocket import abi
from rmgr.nodes import Caller, Handle
from stack.addr import format_addr, unspecified
from stack.counters import Counters
from stack.registry import SocketTypes

from .counters import SOCKDOOR_COUNTERS
from .endpoint import Address, Endpoint

if TYPE_CHECKING:
    from rmgr.nodes import Directory

log = logging.getLogger("io-pkt.sockets")

#: an accepted connection nobody opens within this many seconds is reset and dropped
ACCEPT_CLAIM_TIMEOUT = 30.0


class Conn:
    """One socket. Lives while some open file holds it (``refs``); an accepted
    connection not yet opened is *unclaimed* and reaped after a timeout or when its
    listener goes away."""

    def __init__(self, table: SocketTable, ep: Endpoint, *, uid: int, gid: int, family: int,
                 sock_type: int, protocol: int, kind: str) -> None:
        self.table = table
        self.ep = ep
        self.uid = uid
        self.gid = gid
        self.family = family  # the door's numbering (2, 24), as stack.addr.family()
        self.type = sock_type
        # never 0: a request for 0 got its type's default, as socket(2) ("proto 6")
        self.protocol = protocol
        self.kind = kind  # the socket type's name: tcp, udp, raw...
        self.id = table.next_id(kind)
        self.refs = 0
        self.claimed = True
        self.closed = False
        self.listener: Conn | None = None  # for unclaimed accepted connections
        self.children: set[Conn] = set()  # unclaimed connections accepted from us
        self.handles: set[Handle] = set()
        #: set at the next change; made only when someone waits (a datagram that
        #: arrives while nobody waits costs no Event)
        self._event: trio.Event | None = None
        self.dir: Directory | None = None  # text-door directory, made on demand
        self.rcvtimeo: float | None = None  # SO_RCVTIMEO (seconds, None = forever)
        self.sndtimeo: float | None = None  # SO_SNDTIMEO
        self.linger: tuple[int, int] = (0, 0)  # SO_LINGER (onoff, seconds)
        #: the handover slot (``accepted/K``) naming this unclaimed connection, if any
        self.slot: int | None = None
        ep.set_listener(self._on_change)

    # -- readiness -------------------------------------------------------------------
    def _on_change(self) -> None:
        ev = self._event
        if ev is not None:
            self._event = None
            ev.set()
        for h in list(self.handles):
            h.notify()

    def on_state(self) -> None:
        """A state change made by us (bind, listen, connect): wake waiters too."""
        self._on_change()

    async def wait_change(self) -> None:
        """Wait for the next readiness change (callers re-check their condition)."""
        if self.closed:  # as a set Event: a checkpoint, no wait
            await trio.lowlevel.checkpoint()
            return
        ev = self._event
        if ev is None:
            ev = self._event = trio.Event()
        await ev.wait()

    # -- lifetime --------------------------------------------------------------------
    def hold(self, handle: Handle | None = None) -> None:
        if self.closed:
            raise OSError(errno.ECONNABORTED, "socket is closed")
        self.refs += 1
        if handle is not None:
            self.handles.add(handle)
        if not self.claimed:
            self.claimed = True
            self.table.claimed(self)
            if self.listener is not None:
                self.listener.children.discard(self)
                self.listener = None

    def drop(self, handle: Handle | None = None) -> None:
        if handle is not None:
            self.handles.discard(handle)
        self.refs -= 1
        if self.refs <= 0:
            self.close()

    def close(self, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for child in list(self.children):
            child.close(abort=True)
        self.children.clear()
        try:
            if abort or self.linger == (1, 0):
                self.ep.abort()
            else:
                self.ep.close()
        except Exception:  # a transport that fails to close must not break release
            log.exception("closing %s/%d", self.kind, self.id)
        self.ep.set_listener(None)
        self.table.forget(self)
        if self._event is not None:
            self._event.set()

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.id}"

    # -- text renderings ----------------------------------------------------------------
    def _text(self, get: Callable[[], Address]) -> str:
        try:
            a = get()
        except OSError:
            a = Address(unspecified(self.family), 0)
        return f"{format_addr(a.addr)}!{a.port}\n"

    def local_text(self) -> str:
        return self._text(self.ep.getsockname)

    def remote_text(self) -> str:
        return self._text(self.ep.getpeername)

    def state_name(self) -> str:
        try:
            st = self.ep.state()
        except Exception:
            st = abi.ST_CLOSED
        return abi.STATE_NAMES[st] if 0 <= st < len(abi.STATE_NAMES) else str(st)

    def status_text(self) -> str:
        try:
            nread = self.ep.nread()
        except OSError:
            nread = 0
        flags = []
        if not self.claimed:
            flags.append("unclaimed")
        return (f"{self.kind}/{self.id} {self.state_name()} uid {self.uid} proto "
                f"{self.protocol} refs {self.refs} nread {nread}"
                f"{' ' + ' '.join(flags) if flags else ''}\n")


class SocketTable:
    """All sockets of one stack, numbered per kind.

    Accepted connections not yet opened (*unclaimed*) wait in ``_unclaimed`` (in order
    of their reap deadline, the timeout being the same for all) for one reaper task, and
    may be named by a *handover slot*: ``accepted/K`` (stack/sockets/tree.py), K the
    smallest free number, so one acceptor after another reuses the same few names and
    the kernel's cached entries for them (no LOOKUP per connection; docs/sockets.md)."""

    def __init__(self, types: SocketTypes, spawn: Callable[..., object] | None = None) -> None:
        self.types = types
        self.spawn = spawn  # nursery.start_soon, for the reaper
        self.conns: dict[str, dict[int, Conn]] = {}
        self._next: dict[str, int] = {}
        self.on_forget: list[Callable[[Conn], None]] = []
        self.counters = Counters("sockdoor", SOCKDOOR_COUNTERS)
        #: unclaimed connection -> its reap deadline (insertion order = deadline order)
        self._unclaimed: dict[Conn, float] = {}
        self._reaping = False  # the reaper task runs
        self._reap_at = math.inf  # the deadline the reaper sleeps until
        self._reap_wake = trio.Event()
        #: handover slot -> (unclaimed connection, pid of the thread it was handed to)
        self.handover: dict[int, tuple[Conn, int]] = {}
        self._free_slots: list[int] = []  # a heap: the smallest free slot is reused
        self.slot_count = 0  # slots made so far (0..slot_count-1)
        #: called with K when slot K is made (the socket door adds ``accepted/K``)
        self.on_new_slot: list[Callable[[int], None]] = []

    def next_id(self, kind: str) -> int:
        n = self._next.get(kind, 0)
        self._next[kind] = n + 1
        return n

    def create(self, family: int, sock_type: int, protocol: int, caller: Caller) -> Conn:
        """socket(family, type, protocol) for ``caller``: the table's row, or
        EPROTONOSUPPORT; EPERM for a privileged row (raw) unless root."""
        row = self.types.lookup(family, sock_type, protocol)
        if row is None:
            raise OSError(errno.EPROTONOSUPPORT, f"no socket type {family}/{sock_type}/{protocol}")
        if row.privileged and not caller.is_root:
            raise OSError(errno.EPERM, f"{row.name} sockets need root")
        proto = protocol if row.proto == SocketTypes.ANY else row.proto
        ep = row.factory(proto)
        if not isinstance(ep, Endpoint):
            ep.close()
            raise TypeError(f"socket type {row.name}: its factory made a {type(ep).__name__}, "
                            "not a stack.sockets.endpoint.Endpoint")
        conn = Conn(self, ep, uid=caller.uid, gid=caller.gid, family=row.family,
                    sock_type=row.type, protocol=proto, kind=row.name)
        self.conns.setdefault(conn.kind, {})[conn.id] = conn
        return conn

    def adopt(self, parent: Conn, ep: Endpoint) -> Conn:
        """An accepted connection: listed at once, unclaimed until someone opens it."""
        conn = Conn(self, ep, uid=parent.uid, gid=parent.gid, family=parent.family,
                    sock_type=parent.type, protocol=parent.protocol, kind=parent.kind)
        conn.claimed = False
        conn.listener = parent
        parent.children.add(conn)
        self.conns.setdefault(conn.kind, {})[conn.id] = conn
        if self.spawn is not None:
            deadline = trio.current_time() + ACCEPT_CLAIM_TIMEOUT
            self._unclaimed[conn] = deadline
            if not self._reaping:
                self._reaping = True
                self.spawn(self._reaper)
            elif deadline < self._reap_at:  # a shorter timeout than the one slept on
                self._reap_wake.set()
        return conn

    async def _reaper(self) -> None:
        """Reset accepted connections nobody opened within ACCEPT_CLAIM_TIMEOUT (one task
        for all of them; it ends when none is left)."""
        try:
            while self._unclaimed:
                # only the deadline while asleep: a connection claimed or closed meanwhile
                # must not be kept alive by this frame until then
                deadline = next(iter(self._unclaimed.values()))
                if trio.current_time() < deadline:
                    self._reap_at = deadline
                    self._reap_wake = trio.Event()
                    with trio.move_on_at(deadline):
                        await self._reap_wake.wait()
                    self._reap_at = math.inf
                    continue
                conn = next(iter(self._unclaimed))
                del self._unclaimed[conn]
                if not conn.claimed and not conn.closed:
                    log.info("%s: accepted connection never opened; reset", conn.name)
                    conn.close(abort=True)
                del conn
        finally:
            self._reaping = False

    def hand_over(self, conn: Conn, pid: int) -> int:
        """Name the unclaimed ``conn`` by a handover slot for the thread ``pid``: its
        number K (opened as ``accepted/K``; the slot is freed when ``conn`` is claimed
        or closed)."""
        if self._free_slots:
            k = heapq.heappop(self._free_slots)
        else:
            k = self.slot_count
            self.slot_count += 1
            for fn in list(self.on_new_slot):
                fn(k)
        self.handover[k] = (conn, pid)
        conn.slot = k
        return k

    def _release_slot(self, conn: Conn) -> None:
        k = conn.slot
        if k is not None:
            conn.slot = None
            del self.handover[k]
            heapq.heappush(self._free_slots, k)

    def claimed(self, conn: Conn) -> None:
        """``conn`` (accepted) has been opened: no longer reaped, its slot is free."""
        self._unclaimed.pop(conn, None)
        self._release_slot(conn)

    def forget(self, conn: Conn) -> None:
        self.conns.get(conn.kind, {}).pop(conn.id, None)
        self._unclaimed.pop(conn, None)
        self._release_slot(conn)
        for fn in list(self.on_forget):
            fn(conn)

    def get(self, kind: str, n: int) -> Conn | None:
        return self.conns.get(kind, {}).get(n)

    def of_kind(self, kind: str) -> dict[int, Conn]:
        return self.conns.get(kind, {})

    def all(self) -> list[Conn]:
        return [c for d in self.conns.values() for c in d.values()]
