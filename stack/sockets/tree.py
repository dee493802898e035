"""The socket door's files, made from the socket table (``stack.registries.sockets``).

Every row of the table is served as ``<family>/<type>/<proto>`` (QNX's numbering:
``2/1/6``), a default row also as ``<family>/<type>/0``, and under its family's readable
directory by its name and aliases (``inet/tcp``, ``inet/stream``). An any-protocol row
(raw) is a directory of protocol numbers (``2/3/P``, ``inet/raw/P``; the well-known ones
are listed, any 1-255 opens). The tree is rebuilt whenever the table changes, so a row
registered later (AF_INET6 as ``24/...`` and ``inet6/...``, a module's protocol) appears
and disappears with its registration, with no change here.

Nodes and directories keep their identity across rebuilds (the FUSE session knows them
by identity); a node opens whatever row the table holds for its key *at open time*, so a
path the kernel still caches after its row went away fails with EPROTONOSUPPORT.

``accepted/K`` are the handover slots of accepted connections (``IOP_ACCEPT`` with
``IOP_F_HANDOVER``; ``SocketTable.hand_over``): file K opens whatever connection slot K
holds at open time. The files stay (they are few: as many as connections were ever
waiting to be opened at once), so the kernel keeps its entries and an accept costs no
LOOKUP.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from rmgr.nodes import Directory, Handle, HandleFile, Node, OpenRequest
from stack.registry import FAMILY_NAMES, SocketType, SocketTypes

from .conn import SocketTable
from .door import SocketHandle

log = logging.getLogger("io-pkt.sockets")

#: protocols an any-protocol row's directory lists (any other 1-255 opens too)
WELL_KNOWN_PROTOCOLS = (1, 6, 17, 255)

Key = tuple[int, int, int]  # (family, type, protocol)


class SharedDir:
    """The names one door puts into a directory others share (the stack's tree root):
    each ``set`` replaces exactly those; a name someone else holds is left alone."""

    def __init__(self, root: Directory, who: str) -> None:
        self.root = root
        self.who = who
        self.names: set[str] = set()

    def set(self, entries: Mapping[str, Node]) -> None:
        for name in self.names - entries.keys():
            self.root.remove(name)
        mine: set[str] = set()
        for name, node in entries.items():
            if name not in self.names and name in self.root.entries:
                log.warning("%s: %r is taken in the socket tree; not published", self.who, name)
                continue
            self.root.add(name, node)
            mine.add(name)
        self.names = mine


@dataclass
class _Spec:
    """A directory to build: entries (files or more directories), and for an
    any-protocol row the mapping that serves every protocol number."""

    entries: dict[str, HandleFile | _Spec] = field(default_factory=dict)
    dynamic: _AnyProtocol | None = None

    def sub(self, name: str) -> _Spec:
        got = self.entries.setdefault(name, _Spec())
        if not isinstance(got, _Spec):
            raise ValueError(f"{name!r} is a socket file, not a directory")
        return got

    def leaf(self, name: str, node: HandleFile) -> None:
        self.entries.setdefault(name, node)

    def any_protocol(self, nodes: _AnyProtocol) -> None:
        for p in WELL_KNOWN_PROTOCOLS:
            self.leaf(str(p), nodes[str(p)])
        self.dynamic = nodes


class _AnyProtocol(Mapping[str, HandleFile]):
    """``P`` (1-255, canonical decimal) of one (family, type) served by an any-protocol
    row; lists the ones made so far."""

    def __init__(self, door: SocketDoor, family: int, sock_type: int) -> None:
        self.door = door
        self.family = family
        self.type = sock_type

    def __getitem__(self, name: str) -> HandleFile:
        if not name.isdigit() or name != str(int(name)) or not 0 < int(name) < 256:
            raise KeyError(name)
        return self.door.node(self.family, self.type, int(name))

    def _made(self) -> list[int]:
        return sorted(p for f, t, p in self.door.nodes if (f, t) == (self.family, self.type))

    def __iter__(self) -> Iterator[str]:
        return iter([str(p) for p in self._made()])

    def __len__(self) -> int:
        return len(self._made())


class SocketDoor:
    """``<family>/<type>/<proto>`` and ``<family name>/...``: opening one makes a socket."""

    def __init__(self, sockets: SocketTable, root: Directory) -> None:
        self.sockets = sockets
        self.types: SocketTypes = sockets.types
        self.nodes: dict[Key, HandleFile] = {}
        self._dirs: dict[tuple[str, ...], Directory] = {}
        self._top = SharedDir(root, "socket door")
        self.accepted = Directory(mode=0o555)  # accepted/K, the handover slots

    def publish(self) -> None:
        """Serve the table now and follow its changes."""
        self.types.watchers.append(self._changed)
        self.sockets.on_new_slot.append(self._new_slot)
        for k in range(self.sockets.slot_count):
            self._new_slot(k)
        self.sync()

    def _changed(self, _key: object, _row: SocketType | None) -> None:
        self.sync()

    # -- nodes -----------------------------------------------------------------------------
    def node(self, family: int, sock_type: int, proto: int) -> HandleFile:
        key = (family, sock_type, proto)
        node = self.nodes.get(key)
        if node is None:
            row = self.types.lookup(*key)
            mode = 0o600 if row is not None and row.privileged else 0o666
            node = self.nodes[key] = HandleFile(
                functools.partial(self.open_socket, family, sock_type, proto), mode=mode)
        return node

    def open_socket(self, family: int, sock_type: int, proto: int,
                    req: OpenRequest) -> Handle:
        conn = self.sockets.create(family, sock_type, proto, req.caller)
        try:
            return SocketHandle(self.sockets, conn, req.caller, req.nonblock)
        except BaseException:
            conn.close(abort=True)
            raise

    # -- handover slots --------------------------------------------------------------------
    def _new_slot(self, k: int) -> None:
        self.accepted.add(str(k), HandleFile(functools.partial(self.open_accepted, k),
                                             mode=0o666))

    def open_accepted(self, k: int, req: OpenRequest) -> Handle:
        """``accepted/K``: the connection slot K holds, for the thread it was handed to
        (a slot freed and handed to another thread meanwhile is not the caller's: ENOENT,
        as for a connection that is gone) and its owner (or root)."""
        got = self.sockets.handover.get(k)
        if got is None:
            raise OSError(errno.ENOENT, f"no accepted connection in slot {k}")
        conn, pid = got
        if pid and req.caller.pid and pid != req.caller.pid:
            raise OSError(errno.ENOENT, f"slot {k} was handed to another thread")
        if not req.caller.is_root and req.caller.uid != conn.uid:
            raise OSError(errno.EACCES, f"{conn.name} belongs to uid {conn.uid}")
        return SocketHandle(self.sockets, conn, req.caller, req.nonblock)

    # -- the tree --------------------------------------------------------------------------
    def sync(self) -> None:
        """Rebuild the tree from the table (nodes whose row is gone or changed go)."""
        for key, node in list(self.nodes.items()):
            row = self.types.lookup(*key)
            if row is None or (node.mode == 0o600) != row.privileged:
                del self.nodes[key]
        top: dict[str, _Spec] = {}
        for row in self.types.rows():
            by_number = top.setdefault(str(row.family), _Spec()).sub(str(row.type))
            fname = FAMILY_NAMES.get(row.family)
            by_name = top.setdefault(fname, _Spec()) if fname else None
            if row.proto == SocketTypes.ANY:
                nodes = _AnyProtocol(self, row.family, row.type)
                by_number.any_protocol(nodes)
                if by_name is not None:
                    by_name.sub(row.name).any_protocol(nodes)
            else:
                node = self.node(row.family, row.type, row.proto)
                by_number.leaf(str(row.proto), node)
                if row.default:
                    by_number.leaf("0", node)
                if by_name is not None:
                    by_name.leaf(row.name, node)
            if by_name is not None:
                for alias, proto in row.aliases:
                    by_name.leaf(alias, self.node(row.family, row.type, proto))
        built: dict[tuple[str, ...], Directory] = {}
        entries: dict[str, Node] = {name: self._build((name,), spec, built)
                                    for name, spec in top.items()}
        entries["accepted"] = self.accepted
        self._top.set(entries)
        self._dirs = built

    def _build(self, path: tuple[str, ...], spec: _Spec,
               built: dict[tuple[str, ...], Directory]) -> Directory:
        d = self._dirs.get(path) or Directory()
        built[path] = d
        d.entries = {name: self._build(path + (name,), item, built)
                     if isinstance(item, _Spec) else item
                     for name, item in spec.entries.items()}
        d.dynamic = None if spec.dynamic is None else functools.partial(_identity, spec.dynamic)
        return d


def _identity(nodes: _AnyProtocol) -> _AnyProtocol:
    return nodes
