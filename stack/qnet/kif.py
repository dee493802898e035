"""Qnet's KIF layer here: the remote-file protocol carried by L4 messages (layer KIF).

Every message starts with a 28-byte header, little endian::

    msgtype u16   (0x30..0x3a: private KIF types the qnet6 dissector leaves undecoded)
    size    u16   28, the header's size
    req_id  u32   the request this message is or answers
    uid     u32   the caller's credentials (requests); 0 in replies
    gid     u32
    a, b    u32   operation arguments (below)
    c       i32

| type | a | b | c | body |
|---|---|---|---|---|
| LOOKUP / GETATTR / READDIR | | | | path |
| OPEN | flags | | | path |
| READ | fh | size | nonblock | |
| WRITE | fh | | nonblock | data |
| IOCTL | fh | cmd | out size | arg |
| RELEASE | fh | | | |
| INTERRUPT | req_id to cancel | | | |
| POLLEV (server → client) | fh | mask | | |
| REPLY | errno (0: done) | poll mask | result | attributes / listing / data |

A request runs in a task of its own on the server, so a blocking read waits there
without holding up the others; INTERRUPT cancels it (the local caller got EINTR). A
handle's poll mask travels with every reply about it and, when it changes, in a POLLEV.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from rmgr.nodes import (
    Caller,
    Directory,
    Handle,
    HandleFile,
    IoRequest,
    Node,
    OpenRequest,
    open_node,
)

if TYPE_CHECKING:  # cycle: the node owns the KIF parts, which call back into it; types only
    from stack.qnet.l4 import Conn
    from stack.qnet.node import Qnet

log = logging.getLogger("io-pkt.qnet")

M_LOOKUP = 0x30
M_GETATTR = 0x31
M_READDIR = 0x32
M_OPEN = 0x33
M_READ = 0x34
M_WRITE = 0x35
M_IOCTL = 0x36
M_RELEASE = 0x37
M_INTERRUPT = 0x38
M_POLLEV = 0x39
M_REPLY = 0x3A
REQUESTS = frozenset({M_LOOKUP, M_GETATTR, M_READDIR, M_OPEN, M_READ, M_WRITE, M_IOCTL,
                      M_RELEASE})

_KHDR = struct.Struct("<HHIIIIIi")
KHDR_LEN = _KHDR.size
_ATTR = struct.Struct("<BIIIQB")
HANDLE_FILE_SIZE = 1 << 62
#: largest read the server answers in one reply (the FUSE side asks at most 1 MiB)
MAX_IO = 1 << 20


def pack(msgtype: int, req_id: int, a: int = 0, b: int = 0, c: int = 0, body: bytes = b"",
         uid: int = 0, gid: int = 0) -> bytes:
    return _KHDR.pack(msgtype, KHDR_LEN, req_id, uid & 0xFFFFFFFF, gid & 0xFFFFFFFF,
                      a & 0xFFFFFFFF, b & 0xFFFFFFFF, c) + body


@dataclass(slots=True)
class Msg:
    type: int
    req_id: int
    uid: int
    gid: int
    a: int
    b: int
    c: int
    body: bytes


def unpack(data: bytes) -> Msg:
    if len(data) < KHDR_LEN:
        raise ValueError("KIF message shorter than its header")
    t, size, req, uid, gid, a, b, c = _KHDR.unpack_from(data)
    if size != KHDR_LEN or not M_LOOKUP <= t <= M_REPLY:
        raise ValueError(f"KIF type {t:#x} size {size}")
    return Msg(t, req, uid, gid, a, b, c, data[KHDR_LEN:])


@dataclass(slots=True)
class Attr:
    is_dir: bool
    mode: int
    uid: int
    gid: int
    size: int
    cacheable: bool

    def pack(self) -> bytes:
        return _ATTR.pack(int(self.is_dir), self.mode, self.uid, self.gid, self.size,
                          int(self.cacheable))


def unpack_attr(data: bytes, off: int = 0) -> Attr:
    d, mode, uid, gid, size, cache = _ATTR.unpack_from(data, off)
    return Attr(bool(d), mode, uid, gid, size, bool(cache))


def pack_listing(items: list[tuple[str, Attr]]) -> bytes:
    out = bytearray(struct.pack("<I", len(items)))
    for name, attr in items:
        nb = name.encode()
        out += struct.pack("<H", len(nb)) + nb + attr.pack()
    return bytes(out)


def unpack_listing(data: bytes) -> list[tuple[str, Attr]]:
    (n,) = struct.unpack_from("<I", data)
    off = 4
    items: list[tuple[str, Attr]] = []
    for _ in range(min(n, 100000)):
        (ln,) = struct.unpack_from("<H", data, off)
        off += 2
        name = data[off:off + ln].decode()
        off += ln
        items.append((name, unpack_attr(data, off)))
        off += _ATTR.size
    return items


# -- host directories exported with export=DIR -------------------------------------------------
class HostHandle(Handle):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    async def read(self, size: int, req: IoRequest) -> bytes:
        return os.read(self.fd, size)

    async def write(self, data: memoryview, req: IoRequest) -> int:
        return os.write(self.fd, data)

    def release(self) -> None:
        os.close(self.fd)


class HostFile(HandleFile):
    def __init__(self, path: str, ro: bool) -> None:
        st = os.stat(path)
        super().__init__(self._open, mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid)
        self.path = path
        self.ro = ro
        self.st_size = st.st_size

    def _open(self, req: OpenRequest) -> Handle:
        acc = req.flags & os.O_ACCMODE
        if self.ro and (acc != os.O_RDONLY or req.flags & os.O_TRUNC):
            raise OSError(errno.EROFS, "exported read-only")
        flags = acc | (req.flags & (os.O_TRUNC | os.O_APPEND)) | os.O_NOFOLLOW
        return HostHandle(os.open(self.path, flags))


class HostDir(Directory):
    """A host directory, listed from the file system on each lookup."""

    def __init__(self, path: str, ro: bool) -> None:
        st = os.stat(path)
        super().__init__(mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid,
                         dynamic=self._list)
        self.path = path
        self.ro = ro

    def _child(self, name: str) -> Node | None:
        p = os.path.join(self.path, name)
        try:
            st = os.lstat(p)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return HostDir(p, self.ro)
        if stat.S_ISREG(st.st_mode):
            return HostFile(p, self.ro)
        return None  # no symlinks, devices or sockets: nothing leads out of the export

    def lookup(self, name: str) -> Node | None:
        if name in (".", "..") or "/" in name:
            return None
        return self._child(name)

    def _list(self) -> dict[str, Node]:
        out: dict[str, Node] = {}
        try:
            names = sorted(os.listdir(self.path))[:4096]
        except OSError:
            return out
        for n in names:
            node = self._child(n)
            if node is not None:
                out[n] = node
        return out


def node_attr(node: Node, cacheable: bool) -> Attr:
    if isinstance(node, HostFile):
        size = node.st_size
    elif isinstance(node, HandleFile):
        size = HANDLE_FILE_SIZE
    else:
        size = node.size()
    return Attr(isinstance(node, Directory), node.mode & 0o7777, node.uid, node.gid, size,
                cacheable)


# -- the server: serves this node's export tree to peers ------------------------------------
class _Served:
    __slots__ = ("handle", "listener", "last_mask")

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.listener: Any = None
        self.last_mask = -1


class KifServer:
    def __init__(self, qnet: Qnet, root: Directory) -> None:
        self.qnet = qnet
        self.root = root
        self.handles: dict[int, dict[int, _Served]] = {}  # conn cid -> fh -> handle
        self.inflight: dict[tuple[int, int], trio.CancelScope] = {}
        self._next_fh = 1

    def attach(self, conn: Conn) -> None:
        self.handles[conn.cid] = {}
        conn.on_message = lambda data: self._message(conn, data)
        conn.on_down.append(lambda code: self._conn_down(conn))

    def _conn_down(self, conn: Conn) -> None:
        for key, scope in list(self.inflight.items()):
            if key[0] == conn.cid:
                scope.cancel()
        served = self.handles.pop(conn.cid, {})
        for s in served.values():
            self.qnet.nursery.start_soon(self._release, s)

    async def _release(self, s: _Served) -> None:
        if s.listener is not None:
            s.handle.remove_poll_listener(s.listener)
        try:
            res = s.handle.release()
            if isinstance(res, Awaitable):
                await res
        except Exception:
            log.exception("qnet: release of a served handle failed")

    def _message(self, conn: Conn, data: bytes) -> None:
        c = self.qnet.counters
        try:
            m = unpack(data)
        except ValueError:
            c["drop_bad_kif"] += 1
            return
        if m.type == M_INTERRUPT:
            c["kif_interrupts"] += 1
            scope = self.inflight.get((conn.cid, m.a))
            if scope is not None:
                scope.cancel()
            return
        if m.type not in REQUESTS:
            c["drop_bad_kif"] += 1
            return
        c["kif_served"] += 1
        self.qnet.nursery.start_soon(self._serve, conn, m)

    def _caller(self, m: Msg) -> Caller:
        uid, gid = m.uid, m.gid
        q = self.qnet
        if uid == 0 and q.maproot is not None:
            uid, gid = q.maproot, q.maproot
        elif uid != 0 and q.mapany is not None:
            uid, gid = q.mapany, q.mapany
        return Caller(uid, gid, 0)

    def _walk(self, path: str) -> Node:
        node: Node = self.root
        for part in [p for p in path.split("/") if p]:
            if not isinstance(node, Directory) or part in (".", ".."):
                raise OSError(errno.ENOENT, "no such entry")
            child = node.lookup(part)
            if child is None:
                raise OSError(errno.ENOENT, "no such entry")
            node = child
        return node

    @staticmethod
    def _check(node: Node, who: Caller, want: int) -> None:
        """Mode-bit check as the kernel's default_permissions (root passes)."""
        if who.uid == 0:
            return
        shift = 6 if who.uid == node.uid else 3 if who.gid == node.gid else 0
        if (node.mode >> shift) & want != want:
            raise OSError(errno.EACCES, "permission denied")

    async def _serve(self, conn: Conn, m: Msg) -> None:
        key = (conn.cid, m.req_id)
        scope = trio.CancelScope()
        self.inflight[key] = scope
        reply: bytes
        try:
            with scope:
                try:
                    reply = await self._do(conn, m)
                except OSError as exc:
                    self.qnet.counters["kif_server_errors"] += 1
                    reply = pack(M_REPLY, m.req_id, exc.errno or errno.EIO)
            if scope.cancelled_caught:
                reply = pack(M_REPLY, m.req_id, errno.EINTR)
        except Exception:
            log.exception("qnet: serving a request failed")
            reply = pack(M_REPLY, m.req_id, errno.EIO)
        finally:
            self.inflight.pop(key, None)
        conn.send_message(reply)

    async def _do(self, conn: Conn, m: Msg) -> bytes:
        who = self._caller(m)
        t = m.type
        if t in (M_LOOKUP, M_GETATTR, M_READDIR, M_OPEN):
            path = m.body.decode("utf-8", "strict")
            parent_path, _, _leaf = path.rstrip("/").rpartition("/")
            if t == M_LOOKUP and parent_path:
                self._check(self._walk(parent_path), who, 1)  # search permission
            node = self._walk(path)
            if t in (M_LOOKUP, M_GETATTR):
                cacheable = not _is_dynamic(self.root, path)
                return pack(M_REPLY, m.req_id, body=node_attr(node, cacheable).pack())
            if t == M_READDIR:
                if not isinstance(node, Directory):
                    raise OSError(errno.ENOTDIR, "not a directory")
                self._check(node, who, 4)
                items = [(n, node_attr(ch, False)) for n, ch in node.children().items()]
                return pack(M_REPLY, m.req_id, body=pack_listing(items))
            if isinstance(node, Directory):
                raise OSError(errno.EISDIR, "is a directory")
            acc = m.a & os.O_ACCMODE
            self._check(node, who, 4 if acc == os.O_RDONLY else 2 if acc == os.O_WRONLY else 6)
            handle = await open_node(node, OpenRequest(who, m.a))
            fh = self._next_fh
            self._next_fh += 1
            served = self.handles.get(conn.cid)
            if served is None:  # the connection went down meanwhile
                await self._release(_Served(handle))
                raise OSError(errno.EHOSTDOWN, "connection down")
            new = _Served(handle)
            served[fh] = new
            new.listener = self._make_listener(conn, fh, new)
            handle.add_poll_listener(new.listener)
            new.last_mask = handle.poll()
            return pack(M_REPLY, m.req_id, 0, new.last_mask, fh)
        served = self.handles.get(conn.cid, {})
        s = served.get(m.a)
        if s is None:
            raise OSError(errno.EBADF, "unknown handle")
        h = s.handle
        req = IoRequest(who, bool(m.c) if t in (M_READ, M_WRITE) else False)
        if t == M_READ:
            data = await h.read(min(m.b, MAX_IO), req)
            return self._reply_io(m, s, 0, bytes(data))
        if t == M_WRITE:
            n = await h.write(memoryview(m.body), req)
            return self._reply_io(m, s, n, b"")
        if t == M_IOCTL:
            result, out = await h.ioctl(m.b, m.body, req)
            return self._reply_io(m, s, int(result), bytes(out)[:max(m.c, 0)])
        if t == M_RELEASE:
            served.pop(m.a, None)
            await self._release(s)
            return pack(M_REPLY, m.req_id)
        raise OSError(errno.ENOSYS, "unknown request")

    def _reply_io(self, m: Msg, s: _Served, result: int, body: bytes) -> bytes:
        s.last_mask = s.handle.poll()
        return pack(M_REPLY, m.req_id, 0, s.last_mask, result, body)

    def _make_listener(self, conn: Conn, fh: int, s: _Served) -> Any:
        def changed() -> None:
            mask = s.handle.poll()
            if mask != s.last_mask:
                s.last_mask = mask
                self.qnet.counters["kif_poll_events"] += 1
                conn.send_message(pack(M_POLLEV, 0, fh, mask & 0xFFFFFFFF))
        return changed


def _is_dynamic(root: Directory, path: str) -> bool:
    """True when some step of ``path`` comes from a directory's dynamic part (a socket's
    ``tcp/N``), which must not be cached by the peer."""
    node: Node = root
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, Directory):
            return True
        child = node.entries.get(part)
        if child is None:
            return True
        node = child
    return False


# -- the client: requests from this node's /net ------------------------------------------------
class Reply:
    __slots__ = ("event", "msg", "err")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.msg: Msg | None = None
        self.err = 0


class KifClient:
    def __init__(self, qnet: Qnet) -> None:
        self.qnet = qnet
        self.pending: dict[int, tuple[Conn, Reply]] = {}
        self.handles: dict[tuple[int, int], Any] = {}  # (conn cid, fh) -> RemoteHandle
        self._next_req = 1

    def attach(self, conn: Conn) -> None:
        conn.on_message = lambda data: self._message(conn, data)
        conn.on_down.append(lambda code: self._conn_down(conn, code))

    def _conn_down(self, conn: Conn, code: int) -> None:
        for rid, (cn, rep) in list(self.pending.items()):
            if cn is conn:
                rep.err = code
                rep.event.set()
                del self.pending[rid]
        for key, h in list(self.handles.items()):
            if key[0] == conn.cid:
                h.gone(code)
                del self.handles[key]

    def _message(self, conn: Conn, data: bytes) -> None:
        c = self.qnet.counters
        try:
            m = unpack(data)
        except ValueError:
            c["drop_bad_kif"] += 1
            return
        if m.type == M_POLLEV:
            h = self.handles.get((conn.cid, m.a))
            if h is not None:
                h.set_mask(m.b)
            return
        if m.type != M_REPLY:
            c["drop_bad_kif"] += 1
            return
        entry = self.pending.pop(m.req_id, None)
        if entry is None or entry[0] is not conn:
            c["drop_bad_kif"] += 1
            return
        c["kif_replies"] += 1
        entry[1].msg = m
        entry[1].event.set()

    async def call(self, conn: Conn, msgtype: int, caller: Caller, a: int = 0, b: int = 0,
                   c: int = 0, body: bytes = b"") -> Msg:
        """One request; its reply (errno 0), or OSError(errno). Cancelled (the local
        caller was interrupted): INTERRUPT goes to the server and Cancelled propagates."""
        rid = self._next_req
        self._next_req = (self._next_req + 1) & 0xFFFFFFFF or 1
        rep = Reply()
        self.pending[rid] = (conn, rep)
        self.qnet.counters["kif_requests"] += 1
        if not conn.send_message(pack(msgtype, rid, a, b, c, body, caller.uid, caller.gid)):
            self.pending.pop(rid, None)
            raise OSError(errno.EHOSTDOWN, "host is down")
        try:
            await rep.event.wait()
        except trio.Cancelled:
            self.pending.pop(rid, None)
            conn.send_message(pack(M_INTERRUPT, 0, rid))
            raise
        if rep.err:
            raise OSError(rep.err, os.strerror(rep.err))
        m = rep.msg
        assert m is not None
        if m.a:
            self.qnet.counters["kif_errors"] += 1
            raise OSError(m.a, os.strerror(m.a))
        return m
