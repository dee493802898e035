"""The inode table of a FUSE session: which node the kernel knows by which number, how
many lookups it holds on it, and when the node may go - including the entries that
vanish without the kernel noticing (a closed socket's ``tcp/N``), which the table
invalidates itself. docs/fuse.md, "Inode lifetime: dynamic entries and FORGET".

A node gets a number when the kernel first looks it up (LOOKUP, or a READDIRPLUS entry)
and keeps it until the kernel FORGETs every lookup; numbers are never reused. The
operations (ops.py) call ``enter`` for every entry they hand out and ``forget`` for
every FORGET; the session runs ``sweep``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import trio

from rmgr.fuse import abi
from rmgr.nodes import Directory, Node
from stack.counters import Counters

#: how often (seconds) entries found through ``dynamic`` are checked for having vanished
DYN_SWEEP_INTERVAL = 1.0


class InodeTable:
    """Node ↔ inode number, with the kernel's lookup count of each (root excluded)."""

    def __init__(self, root: Node, counters: Counters) -> None:
        self.counters = counters
        # never reuse a number while the kernel may know it
        self._nodes: dict[int, Node] = {abi.ROOT_ID: root}
        self._ino_of: dict[int, int] = {id(root): abi.ROOT_ID}  # id(node) -> ino
        self._nlookup: dict[int, int] = {}
        #: inodes found through a directory's ``dynamic`` part: ino -> (parent ino, name).
        #: The kernel keeps such a dentry while a cached child (``tcp/N/data``) pins it,
        #: so it never FORGETs it when the entry vanishes and the node (a whole socket)
        #: would stay in this table: ``sweep`` tells the kernel (NOTIFY_INVAL_ENTRY).
        self._dyn: dict[int, tuple[int, str]] = {}
        #: inodes found below a dynamic one (``tcp/N/status``): ino -> (parent ino, name),
        #: and per parent its children. When ``tcp/N`` vanishes they are invalidated too:
        #: a child open at that moment keeps its dentry hashed, and once closed it would
        #: sit in the kernel's dentry cache (cached ENTRY_TTL, and no lookup can reach it
        #: to find it expired once ``tcp/N`` is unhashed) pinning ``tcp/N`` - and the
        #: socket its node holds - for good (issue 14, item 6). Unhashed, it is dropped
        #: on its last close and the kernel FORGETs both.
        self._below: dict[int, tuple[int, str]] = {}
        self._kids: dict[int, set[int]] = {}
        #: dynamic inodes (and the ones below them) whose entry has vanished: nothing
        #: more is looked up in them, so no new child can be hung under an unhashed one
        self._dead: set[int] = set()
        self._dyn_added = trio.Event()
        self._next_ino = abi.ROOT_ID + 1

    def __len__(self) -> int:
        return len(self._nodes)

    def node(self, ino: int) -> Node:
        node = self._nodes.get(ino)
        if node is None:
            raise OSError(errno.ESTALE, f"unknown inode {ino}")
        return node

    def ino_of(self, node: Node, default: int) -> int:
        """The number the kernel knows ``node`` by, or ``default`` if none."""
        return self._ino_of.get(id(node), default)

    def is_dead(self, ino: int) -> bool:
        """A dynamic entry (or one below it) that has vanished: look nothing up in it."""
        return ino in self._dead

    def known(self) -> dict[int, int]:
        """ino -> kernel lookup count (root excluded)."""
        return dict(self._nlookup)

    # -- lookups and FORGET -----------------------------------------------------------------
    def enter(self, node: Node, ttl: int, parent: int = 0, name: str = "") -> int:
        """``node`` is handed to the kernel as ``name`` in ``parent`` (cached for ``ttl``
        seconds: 0 for a dynamic entry): count one lookup and return its number."""
        ino = self._ref(node)
        self._dead.discard(ino)  # found in a live parent (else the sweep finds it again)
        if not ttl and parent:
            self._dyn[ino] = (parent, name)
            self._dyn_added.set()
        if (parent in self._dyn or parent in self._below) and ino not in self._below:
            # below a dynamic entry: invalidated with it when it vanishes (_vanished)
            self._below[ino] = (parent, name)
            self._kids.setdefault(parent, set()).add(ino)
        return ino

    def _ref(self, node: Node) -> int:
        """The inode number for ``node``, counting one kernel lookup."""
        key = id(node)
        ino = self._ino_of.get(key)
        if ino is None:
            ino = self._next_ino
            self._next_ino += 1
            self._ino_of[key] = ino
            self._nodes[ino] = node
            self._nlookup[ino] = 1
        elif ino != abi.ROOT_ID:
            self._nlookup[ino] += 1
        return ino

    def forget(self, ino: int, count: int) -> None:
        """The kernel drops ``count`` lookups; at none the node and its bookkeeping go."""
        if ino == abi.ROOT_ID:
            return
        left = self._nlookup.get(ino)
        if left is None:
            self.counters["forget_unknown"] += 1
            return
        left -= count
        if left > 0:
            self._nlookup[ino] = left
            return
        del self._nlookup[ino]
        self._dyn.pop(ino, None)
        self._dead.discard(ino)
        self._kids.pop(ino, None)
        up = self._below.pop(ino, None)
        if up is not None:
            siblings = self._kids.get(up[0])
            if siblings is not None:
                siblings.discard(ino)
                if not siblings:
                    del self._kids[up[0]]
        node = self._nodes.pop(ino)
        del self._ino_of[id(node)]

    # -- dynamic entries that vanish ------------------------------------------------------------
    async def sweep(self, fd: int, stopped: Callable[[], bool]) -> None:
        """Invalidate the kernel's entries for dynamic nodes that have gone (a closed
        socket's ``tcp/N``) so it FORGETs them and their children, and the nodes are freed.

        The notification is written from a worker thread with its own fd (a dup of the
        session's ``fd``): the kernel takes the parent directory's lock for it, which a
        LOOKUP waiting for the session's reply may hold."""
        while True:
            if not self._dyn:
                self._dyn_added = trio.Event()
                await self._dyn_added.wait()
            await trio.sleep(DYN_SWEEP_INTERVAL)
            notes = self._vanished()
            if notes and not stopped():
                self.counters["inval_entry"] += len(notes)
                await trio.to_thread.run_sync(write_notes, os.dup(fd), notes,
                                              abandon_on_cancel=True)

    def _vanished(self) -> list[bytes]:
        """NOTIFY_INVAL_ENTRY messages for the dynamic entries no longer there."""
        notes = []
        for ino, (pino, name) in list(self._dyn.items()):
            parent, node = self._nodes.get(pino), self._nodes.get(ino)
            try:
                live = isinstance(parent, Directory) and parent.lookup(name) is node
            except Exception:
                live = False
            if not live:
                del self._dyn[ino]
                # what the kernel knows below it first (deepest first), then itself
                for kid in reversed(self._descendants(ino)):
                    self._dead.add(kid)
                    notes.append(inval_entry(*self._below[kid]))
                self._dead.add(ino)
                notes.append(inval_entry(pino, name))
        return notes

    def _descendants(self, ino: int) -> list[int]:
        """The inodes handed out below ``ino``, parents before their children."""
        out: list[int] = []
        todo = [ino]
        while todo:
            kids = self._kids.get(todo.pop())
            if kids:
                out.extend(kids)
                todo.extend(kids)
        return out


def inval_entry(pino: int, name: str) -> bytes:
    """A NOTIFY_INVAL_ENTRY message: the kernel unhashes ``name`` in ``pino``."""
    raw = name.encode()
    return b"".join((
        abi.OUT_HEADER.pack(16 + abi.NOTIFY_INVAL_ENTRY_OUT.size + len(raw) + 1,
                            abi.NOTIFY_INVAL_ENTRY, 0),
        abi.NOTIFY_INVAL_ENTRY_OUT.pack(pino, len(raw), 0), raw, b"\0"))


def write_notes(fd: int, notes: list[bytes]) -> None:
    """(worker thread) write notifications on ``fd``, then close it; ENOENT = the kernel
    had no such entry."""
    try:
        for msg in notes:
            try:
                os.write(fd, msg)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    break
    finally:
        os.close(fd)
