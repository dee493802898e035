"""``<prefix>/net``: the directory of known nodes; ``<prefix>/net/<node>/...`` is that node's
exported tree, every lookup, getattr, readdir, open, read, write, ioctl, poll and release
a KIF request over Qnet (kif.py).

A name may carry a QoS choice, as QNX's: ``nodeb~loadbalance``, ``nodeb~preferred:tap1``,
``nodeb~exclusive:tap1``. Each distinct choice is its own L4 connection.

Lookups wait for the network, which the node API's synchronous ``Directory.lookup`` cannot:
the root names ``QnetOperations`` (``fuse_operations``), which answers LOOKUP, GETATTR and
OPENDIR of remote nodes in a task of their own (the scheduler's ``spawn``), and leaves
everything else to the stock operations (rmgr/fuse/ops.py).
"""

from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING, Any

from rmgr.fuse import abi
from rmgr.fuse.ops import ATTR_TTL, HANDLE_FILE_SIZE, Operations, _DirHandle
from rmgr.nodes import (
    POLLERR,
    POLLHUP,
    Caller,
    Directory,
    Handle,
    HandleFile,
    IoRequest,
    Node,
    OpenRequest,
    TextFile,
)
from stack.qnet import kif, wire

if TYPE_CHECKING:  # cycle: the node owns the tree, whose nodes call into it; types only
    from stack.qnet.l4 import Conn
    from stack.qnet.node import Qnet

_QOS = re.compile(r"^(?P<node>[A-Za-z0-9_.-]+)(~(?P<qos>loadbalance|preferred|exclusive)"
                  r"(:(?P<link>[A-Za-z0-9_.-]+))?)?$")
QOS_BY_NAME = {"loadbalance": wire.QOS_LOADBALANCE, "preferred": wire.QOS_PREFERRED,
               "exclusive": wire.QOS_EXCLUSIVE}


def parse_node_name(name: str) -> tuple[str, int, str | None] | None:
    """``b~preferred:tap1`` → ("b", QOS_PREFERRED, "tap1"); None when not a node name."""
    m = _QOS.match(name)
    if m is None:
        return None
    qos = QOS_BY_NAME[m.group("qos")] if m.group("qos") else wire.QOS_LOADBALANCE
    link = m.group("link")
    if qos != wire.QOS_LOADBALANCE and link is None:
        return None
    return m.group("node"), qos, link


class Route:
    """How a remote tree is reached: node name and QoS (one L4 connection each)."""

    def __init__(self, qnet: Qnet, node: str, qos: int, link: str | None) -> None:
        self.qnet = qnet
        self.node = node
        self.qos = qos
        self.link = link

    async def conn(self) -> Conn:
        return await self.qnet.connect(self.node, self.qos, self.link)

    async def call(self, msgtype: int, caller: Caller, a: int = 0, b: int = 0, c: int = 0,
                   body: bytes = b"") -> tuple[Conn, kif.Msg]:
        conn = await self.conn()
        return conn, await self.qnet.kif_client.call(conn, msgtype, caller, a, b, c, body)


class RemoteNode:
    """Mixin: where a remote node is and its last known attributes."""

    route: Route
    rpath: str
    rsize: int


class RemoteFile(HandleFile, RemoteNode):
    def __init__(self, route: Route, rpath: str, attr: kif.Attr) -> None:
        super().__init__(self._open, mode=attr.mode, uid=attr.uid, gid=attr.gid)
        self.route = route
        self.rpath = rpath
        self.rsize = attr.size

    async def _open(self, req: OpenRequest) -> Handle:
        conn, m = await self.route.call(kif.M_OPEN, req.caller, a=req.flags,
                                        body=self.rpath.encode())
        h = RemoteHandle(self.route, conn, m.c, m.b)
        self.route.qnet.kif_client.handles[(conn.cid, m.c)] = h
        return h


class RemoteDir(Directory, RemoteNode):
    def __init__(self, route: Route, rpath: str, attr: kif.Attr | None = None) -> None:
        super().__init__(mode=attr.mode if attr else 0o755, uid=attr.uid if attr else 0,
                         gid=attr.gid if attr else 0)
        self.route = route
        self.rpath = rpath
        self.rsize = 0
        #: the children handed out, by name: the same object while the entry exists
        self.known: dict[str, Node] = {}

    def lookup(self, name: str) -> Node | None:
        return self.known.get(name)

    def children(self) -> dict[str, Node]:
        return dict(self.known)

    def child_path(self, name: str) -> str:
        return f"{self.rpath}/{name}" if self.rpath else name

    def update(self, name: str, attr: kif.Attr) -> Node:
        """The child ``name`` with ``attr``: the known object when its kind is unchanged."""
        old = self.known.get(name)
        if old is not None and isinstance(old, Directory) == attr.is_dir:
            old.mode, old.uid, old.gid = attr.mode, attr.uid, attr.gid
            if isinstance(old, RemoteFile):
                old.rsize = attr.size
            return old
        path = self.child_path(name)
        node: Node = RemoteDir(self.route, path, attr) if attr.is_dir else \
            RemoteFile(self.route, path, attr)
        self.known[name] = node
        return node


class RemoteHandle(Handle):
    """An open remote file: every call a KIF request; the poll mask as the server last
    reported it (in each reply and in POLLEV messages)."""

    def __init__(self, route: Route, conn: Conn, fh: int, mask: int) -> None:
        super().__init__()
        self.route = route
        self.conn = conn
        self.fh = fh
        self.mask = mask
        self.dead = 0

    def set_mask(self, mask: int) -> None:
        if mask != self.mask:
            self.mask = mask
            self.notify()

    def gone(self, code: int) -> None:
        self.dead = code or errno.EHOSTDOWN
        self.set_mask(POLLERR | POLLHUP)

    async def _call(self, msgtype: int, caller: Caller, b: int = 0, c: int = 0,
                    body: bytes = b"") -> kif.Msg:
        if self.dead:
            raise OSError(self.dead, os.strerror(self.dead))
        m = await self.route.qnet.kif_client.call(self.conn, msgtype, caller, self.fh, b, c,
                                                  body)
        self.set_mask(m.b)
        return m

    async def read(self, size: int, req: IoRequest) -> bytes:
        m = await self._call(kif.M_READ, req.caller, size, int(req.nonblock))
        return m.body

    async def write(self, data: memoryview, req: IoRequest) -> int:
        m = await self._call(kif.M_WRITE, req.caller, 0, int(req.nonblock), bytes(data))
        return m.c

    async def ioctl(self, cmd: int, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        size = abi.ioc_size(cmd) if abi.ioc_dir(cmd) & abi.IOC_READ else 0
        m = await self._call(kif.M_IOCTL, req.caller, cmd, size, arg)
        return m.c, m.body

    def poll(self) -> int:
        return self.mask

    async def release(self) -> None:
        self.route.qnet.kif_client.handles.pop((self.conn.cid, self.fh), None)
        if self.dead:
            return
        try:
            await self._call(kif.M_RELEASE, Caller())
        except OSError:
            pass


class NetRoot(Directory):
    """``<prefix>/net``: one entry per known node, plus ``.qnet`` (status files)."""

    fuse_operations: Any = None  # set below, after QnetOperations

    def __init__(self, qnet: Qnet) -> None:
        super().__init__(dynamic=self._nodes)
        self.qnet = qnet
        self.dirs: dict[str, RemoteDir] = {}
        status = self.add(".qnet", Directory())
        status.add("nodes", TextFile(qnet.render_nodes))
        status.add("stats", TextFile(qnet.render_stats))

    def node_dir(self, name: str) -> RemoteDir | None:
        parsed = parse_node_name(name)
        if parsed is None:
            return None
        d = self.dirs.get(name)
        if d is None:
            d = RemoteDir(Route(self.qnet, *parsed), "")
            self.dirs[name] = d
        return d

    def _nodes(self) -> dict[str, Node]:
        out: dict[str, Node] = {}
        for name in self.qnet.peer_names():
            d = self.node_dir(name)
            if d is not None:
                out[name] = d
        for name in list(self.dirs):  # a node that left /net: its QoS names go too
            node = parse_node_name(name)
            if node is None or node[0] not in out:
                del self.dirs[name]
        for name, d in self.dirs.items():
            out.setdefault(name, d)
        return out

    def lookup(self, name: str) -> Node | None:
        node = self.entries.get(name)
        if node is not None:
            return node
        parsed = parse_node_name(name)
        if parsed is None or not self.qnet.knows(parsed[0]):
            return None
        return self.node_dir(name)


class QnetOperations(Operations):
    """The stock operations, with LOOKUP/GETATTR/OPENDIR of remote nodes sent over Qnet."""

    def table(self) -> dict[int, Any]:
        t = super().table()
        t[abi.LOOKUP] = self._q_lookup
        t[abi.GETATTR] = self._q_getattr
        t[abi.OPENDIR] = self._q_opendir
        return t

    def _attr(self, node: Node, ino: int) -> tuple[int, ...]:
        out = super()._attr(node, ino)
        if isinstance(node, RemoteFile) and node.rsize != kif.HANDLE_FILE_SIZE:
            out = (out[0], node.rsize, *out[2:])
        elif isinstance(node, RemoteFile):
            out = (out[0], HANDLE_FILE_SIZE, *out[2:])
        return out

    def _q_lookup(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                  body: memoryview) -> None:
        parent = self.inodes.node(nodeid)
        if len(body) < 2 or body[-1] != 0:
            self._op_lookup(unique, nodeid, uid, gid, pid, body)
            return
        try:
            name = bytes(body[:-1]).decode()
        except UnicodeDecodeError:
            raise OSError(errno.ENOENT, "no such entry") from None
        if isinstance(parent, RemoteDir):
            self.sched.spawn(unique, abi.LOOKUP, self._remote_lookup, nodeid, parent, name,
                             Caller(uid, gid, pid))
        elif isinstance(parent, NetRoot) and parent.lookup(name) is None \
                and parse_node_name(name) is not None:
            self.sched.spawn(unique, abi.LOOKUP, self._resolve_node, nodeid, parent, name)
        else:
            self._op_lookup(unique, nodeid, uid, gid, pid, body)

    async def _remote_lookup(self, unique: int, nodeid: int, parent: RemoteDir, name: str,
                             caller: Caller) -> None:
        if name in (".", ".."):
            raise OSError(errno.ENOENT, "no such entry")
        try:
            _conn, m = await parent.route.call(kif.M_LOOKUP, caller,
                                               body=parent.child_path(name).encode())
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                parent.known.pop(name, None)
            raise
        attr = kif.unpack_attr(m.body)
        child = parent.update(name, attr)
        ttl = 1 if attr.cacheable else 0
        self.sched.reply(unique, self._entry(child, ttl, nodeid, name)[1])

    async def _resolve_node(self, unique: int, nodeid: int, root: NetRoot, name: str) -> None:
        parsed = parse_node_name(name)
        assert parsed is not None
        if not await root.qnet.resolve(parsed[0]):
            raise OSError(errno.ENOENT, "no such node")
        d = root.node_dir(name)
        assert d is not None
        self.sched.reply(unique, self._entry(d, 0, nodeid, name)[1])

    def _q_getattr(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        node = self.inodes.node(nodeid)
        if isinstance(node, (RemoteDir, RemoteFile)) and node.rpath:
            self.sched.spawn(unique, abi.GETATTR, self._remote_getattr, nodeid, node,
                             Caller(uid, gid, pid))
        else:
            self._op_getattr(unique, nodeid, uid, gid, pid, body)

    async def _remote_getattr(self, unique: int, nodeid: int, node: RemoteDir | RemoteFile,
                              caller: Caller) -> None:
        _conn, m = await node.route.call(kif.M_GETATTR, caller, body=node.rpath.encode())
        attr = kif.unpack_attr(m.body)
        node.mode, node.uid, node.gid = attr.mode, attr.uid, attr.gid
        node.rsize = attr.size
        self.sched.reply(unique, abi.ATTR_OUT.pack(ATTR_TTL, 0, 0, *self._attr(node, nodeid)))

    def _q_opendir(self, unique: int, nodeid: int, uid: int, gid: int, pid: int,
                   body: memoryview) -> None:
        node = self.inodes.node(nodeid)
        if isinstance(node, RemoteDir):
            self.sched.spawn(unique, abi.OPENDIR, self._remote_opendir, node,
                             Caller(uid, gid, pid))
        else:
            self._op_opendir(unique, nodeid, uid, gid, pid, body)

    async def _remote_opendir(self, unique: int, node: RemoteDir, caller: Caller) -> None:
        _conn, m = await node.route.call(kif.M_READDIR, caller, body=node.rpath.encode())
        listing = kif.unpack_listing(m.body)
        names = set()
        for name, attr in listing:
            node.update(name, attr)
            names.add(name)
        for gone in [n for n in node.known if n not in names]:
            del node.known[gone]
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = _DirHandle(node)
        self.sched.reply(unique, abi.OPEN_OUT.pack(fh, 0, 0))


NetRoot.fuse_operations = QnetOperations

__all__ = ["NetRoot", "QnetOperations", "RemoteDir", "RemoteFile", "RemoteHandle", "Route",
           "parse_node_name"]
