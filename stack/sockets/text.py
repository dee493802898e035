"""The text door (Plan 9 ``/net``): ``tcp/clone``, ``tcp/N/{ctl,data,listen,local,remote,
status}`` and the same for ``udp`` (and ``raw``, listing raw sockets).

``ctl`` commands (one per write; the write fails with the BSD errno on error):

* ``connect HOST!PORT [LOCALPORT]`` - connect (blocks until established, TCP); UDP: set
  the peer.
* ``announce PORT`` / ``announce *!PORT`` / ``announce HOST!PORT`` - bind and listen (UDP:
  bind); then opening ``listen`` waits for a call.
* ``bind PORT`` / ``bind HOST!PORT`` - choose the local address.
* ``hangup`` - close both directions (FIN); reads of ``data`` then give EOF.
* ``shutdown rd|wr|rdwr`` - half-close.
* ``keepalive [SECONDS]``, ``nodelay``, ``ttl N``, ``linger SECONDS``.
* multicast (UDP, raw): ``addmulti GROUP [IFADDR]``, ``remmulti GROUP [IFADDR]``,
  ``addsource GROUP SOURCE [IFADDR]``, ``remsource ...``, ``block GROUP SOURCE
  [IFADDR]``, ``unblock ...``, ``mcastif IFADDR|*``, ``mcastttl N``, ``mcastloop on|off``
  (stack/transport/mcast.py: the IP_ADD_MEMBERSHIP... options).
* ``send0 [HOST!PORT]`` - UDP: send an empty datagram to HOST!PORT, or to the connected
  peer (a shell cannot: a 0-byte write never reaches the stack). TCP: sends nothing.

Reading ``clone`` or ``ctl`` gives the connection number ``N`` and a newline.

The kinds come from the socket table (``stack.registries.sockets``): every row's name is
a directory listing its sockets (``tcp/``, ``udp/``, ``raw/``), with ``clone`` and
``stats`` when the row can be opened without a protocol number or root (Plan 9's devip
serves every protocol of its table the same way). A row registered later (a module's)
gets its directory then, and loses it when the row goes.
"""

from __future__ import annotations

import errno
import functools
import re
import socket as _std
from collections.abc import Iterator, Mapping
from typing import TypedDict

from rmgr.libsocket import abi
from rmgr.nodes import Caller, Directory, Handle, HandleFile, IoRequest, OpenRequest, TextFile
from stack.addr import AF_INET, AF_INET6, is_v4, unspecified
from stack.addr import parse_addr as _parse_host
from stack.registry import SocketType, SocketTypes
from stack.transport.mcast import TEXT_VERBS as _MCAST_VERBS
from stack.transport.mcast import text_option as _mcast_option

from . import door
from .conn import Conn, SocketTable
from .endpoint import Address
from .tree import SharedDir

#: ``[HOST]:PORT`` (or ``!PORT``), with an optional protocol word first
_BRACKETED = re.compile(r"^(?:\w+[!:])?\[([^\]]*)\](?:[!:](\S*))?$")


def parse_addr(text: str, family: int = AF_INET) -> Address:
    """``10.0.0.1!80``, ``*!80``, ``80``, ``tcp!10.0.0.1!80``, ``10.0.0.1:80``; for an
    IPv6 socket also ``2001:db8::1!80`` and ``[2001:db8::1]:80`` (and IPv4 hosts, as
    IPv4-mapped). A missing or ``*`` host is the family's unspecified address."""
    t = text.strip()
    if m := _BRACKETED.match(t):
        parts = [m.group(1), m.group(2) or ""]
    elif "!" in t and t.count(":") >= 2:  # Plan 9's form with an IPv6 host
        parts = t.split("!")
    else:
        parts = t.replace(":", "!").split("!")
    if parts and parts[0] in ("tcp", "udp", "net", "il"):
        parts = parts[1:]
    try:
        if len(parts) == 1:
            return Address(unspecified(family), _port(parts[0]))
        if len(parts) == 2:
            if parts[0] in ("*", ""):
                return Address(unspecified(family), _port(parts[1]))
            host = _parse_host(parts[0])
            if family == AF_INET6 or is_v4(host):
                return Address(host, _port(parts[1]))
    except ValueError:
        pass
    raise OSError(errno.EINVAL, f"bad address {text!r}; expected HOST!PORT")


def _port(text: str) -> int:
    if text in ("*", ""):
        return 0
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


class CtlHandle(Handle):
    """An open ``clone`` / ``ctl`` / ``listen`` file: holds the connection open."""

    def __init__(self, table: SocketTable, conn: Conn) -> None:
        super().__init__()
        self.table = table
        self.conn = conn
        self.pos = 0
        self.released = False
        conn.hold(self)

    async def read(self, size: int, req: IoRequest) -> bytes:
        text = f"{self.conn.id}\n".encode()
        chunk = text[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    async def write(self, data: memoryview, req: IoRequest) -> int:
        if len(data) > 4096:
            raise OSError(errno.EFBIG, "control message too long")
        try:
            text = bytes(data).decode()
        except UnicodeDecodeError:
            raise OSError(errno.EINVAL, "control message is not text") from None
        for line in text.splitlines():
            if line.strip():
                try:
                    await self.command(line.split(), req.caller)
                except ValueError:  # a number that is not one: int("x"), a bad port
                    raise OSError(errno.EINVAL, f"bad control message {line!r}") from None
        return len(data)

    async def command(self, words: list[str], caller: Caller) -> None:
        conn = self.conn
        if conn.closed:
            raise OSError(errno.EBADF, "connection is closed")
        ep = conn.ep
        verb, args = words[0], words[1:]
        if verb == "connect" and args:
            dest = self._address(args[0])
            if len(args) > 1:
                self._bind(Address(unspecified(conn.family), _port(args[1])), caller)
            await door.connect(conn, dest, nonblock=False)
        elif verb == "announce" and len(args) == 1:
            self._bind(self._address(args[0]), caller)
            if conn.type == abi.SOCK_STREAM:
                ep.listen(128)
            conn.on_state()
        elif verb == "bind" and len(args) == 1:
            self._bind(self._address(args[0]), caller)
        elif verb == "hangup" and not args:
            try:
                ep.shutdown(_std.SHUT_RDWR)
            except OSError as exc:
                if exc.errno != errno.ENOTCONN:
                    raise
            conn.on_state()
        elif verb == "shutdown" and len(args) == 1 and args[0] in ("rd", "wr", "rdwr"):
            ep.shutdown({"rd": 0, "wr": 1, "rdwr": 2}[args[0]])
        elif verb == "keepalive" and len(args) <= 1:
            if args:  # the idle time in seconds, as TCP_KEEPIDLE; a bad one changes nothing
                ep.setsockopt(_std.IPPROTO_TCP, _std.TCP_KEEPIDLE, int(args[0]))
            ep.setsockopt(_std.SOL_SOCKET, _std.SO_KEEPALIVE, 1)
        elif verb == "nodelay" and not args:
            ep.setsockopt(_std.IPPROTO_TCP, _std.TCP_NODELAY, 1)
        elif verb == "ttl" and len(args) == 1:
            if conn.family == AF_INET6:
                ep.setsockopt(_std.IPPROTO_IPV6, _std.IPV6_UNICAST_HOPS, int(args[0]))
            ep.setsockopt(_std.IPPROTO_IP, _std.IP_TTL, int(args[0]))
        elif verb == "send0" and len(args) <= 1:
            to = self._address(args[0]) if args else None
            await door.send(conn, memoryview(b""),
                            None if conn.type == abi.SOCK_STREAM else to, nonblock=False)
        elif verb in _MCAST_VERBS and conn.family == AF_INET:  # addmulti, block...
            opt, value = _mcast_option(verb, args)
            ep.setsockopt(_std.IPPROTO_IP, opt, value)
        elif verb == "linger" and len(args) == 1:
            door.setsockopt(conn, _std.SOL_SOCKET, _std.SO_LINGER,
                            door.LINGER.pack(1, int(args[0])))
        else:
            raise OSError(errno.EINVAL, f"unknown control message {' '.join(words)!r}")

    def _address(self, text: str) -> Address:
        """``text`` as an address of the connection's family; an IPv6 one makes a fresh
        AF_INET socket (``tcp/clone``'s) AF_INET6 (dual-stack), as Plan 9's /net/tcp
        takes either family."""
        conn = self.conn
        try:
            return parse_addr(text, conn.family)
        except OSError:
            if conn.family != AF_INET:
                raise
            addr = parse_addr(text, AF_INET6)
            if not conn.ep.set_family(AF_INET6):
                raise OSError(errno.EAFNOSUPPORT, "the socket is in use with IPv4") from None
            conn.family = AF_INET6
            return addr

    def _bind(self, addr: Address, caller: Caller) -> None:
        if 0 < addr.port < 1024 and not caller.is_root:
            raise OSError(errno.EACCES, f"port {addr.port} needs root")
        self.conn.ep.bind(addr)
        self.conn.on_state()

    def poll(self) -> int:
        return door.POLLIN | door.POLLOUT

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.conn.drop(self)


class _Owner(TypedDict):
    """Owner keywords of the nodes of one connection's directory."""

    uid: int
    gid: int


class _ConnDirs(Mapping[str, Directory]):
    """The ``N`` directories of one protocol, made on demand from the live table."""

    def __init__(self, tdoor: TextDoor, kind: str) -> None:
        self.tdoor = tdoor
        self.kind = kind

    def __getitem__(self, name: str) -> Directory:
        if not name.isdigit():
            raise KeyError(name)
        conn = self.tdoor.table.get(self.kind, int(name))
        if conn is None:
            raise KeyError(name)
        return self.tdoor.conn_dir(conn)

    def __iter__(self) -> Iterator[str]:
        return iter([str(n) for n in sorted(self.tdoor.table.of_kind(self.kind))])

    def __len__(self) -> int:
        return len(self.tdoor.table.of_kind(self.kind))


class TextDoor:
    """``<kind>/`` for every name in the socket table (``tcp/``, ``udp/``, ``raw/``)."""

    def __init__(self, table: SocketTable, root: Directory) -> None:
        self.table = table
        self._top = SharedDir(root, "text door")
        self._dirs: dict[str, Directory] = {}
        #: per kind: the row its clone makes and the clone file (kept while unchanged)
        self._clones: dict[str, tuple[tuple[int, int, int], HandleFile]] = {}

    def publish(self) -> None:
        """Serve the table's kinds now and follow its changes."""
        self.table.types.watchers.append(self._changed)
        self.sync()

    def _changed(self, _key: object, _row: SocketType | None) -> None:
        self.sync()

    def sync(self) -> None:
        # per name, the row its clone makes: the lowest family's that needs neither a
        # protocol number nor root (raw sockets come only through the socket door, but
        # are listed here)
        kinds: dict[str, SocketType | None] = {}
        for row in sorted(self.table.types.rows(), key=lambda r: r.family):
            clonable = not row.privileged and row.proto != SocketTypes.ANY
            if kinds.get(row.name) is None:
                kinds[row.name] = row if clonable else None
        dirs: dict[str, Directory] = {}
        for kind, clone_row in kinds.items():
            d = self._dirs.get(kind) or Directory(
                dynamic=functools.partial(_ConnDirs, self, kind))
            if clone_row is None:
                d.entries = {}
            else:
                stats = d.entries.get("stats") or TextFile(
                    functools.partial(self.render_stats, kind))
                d.entries = {"clone": self._clone(kind, clone_row), "stats": stats}
            dirs[kind] = d
        self._clones = {k: v for k, v in self._clones.items() if kinds.get(k) is not None}
        self._dirs = dirs
        self._top.set(dirs)

    def _clone(self, kind: str, row: SocketType) -> HandleFile:
        key = (row.family, row.type, row.proto)
        known = self._clones.get(kind)
        if known is None or known[0] != key:
            known = self._clones[kind] = (key, HandleFile(
                functools.partial(self.open_clone, *key), mode=0o666))
        return known[1]

    def render_stats(self, kind: str) -> str:
        return "".join(c.status_text() for c in sorted(self.table.of_kind(kind).values(),
                                                       key=lambda c: c.id))

    def open_clone(self, family: int, sock_type: int, proto: int, req: OpenRequest) -> Handle:
        conn = self.table.create(family, sock_type, proto, req.caller)
        try:
            return CtlHandle(self.table, conn)
        except BaseException:
            conn.close(abort=True)
            raise

    def conn_dir(self, conn: Conn) -> Directory:
        if conn.dir is None:
            kw: _Owner = {"uid": conn.uid, "gid": conn.gid}
            conn.dir = Directory({
                "ctl": HandleFile(lambda req: self._open_ctl(conn, req), mode=0o660, **kw),
                "data": HandleFile(lambda req: self._open_data(conn, req), mode=0o660, **kw),
                "listen": HandleFile(lambda req: self._open_listen(conn, req), mode=0o660,
                                     **kw),
                "local": TextFile(conn.local_text, mode=0o444, **kw),
                "remote": TextFile(conn.remote_text, mode=0o444, **kw),
                "status": TextFile(conn.status_text, mode=0o444, **kw),
            }, mode=0o555, **kw)
        return conn.dir

    def _check_owner(self, conn: Conn, caller: Caller) -> None:
        if conn.closed:
            raise OSError(errno.ENOENT, f"{conn.name} is gone")
        if not caller.is_root and caller.uid != conn.uid:
            raise OSError(errno.EACCES, f"{conn.name} belongs to uid {conn.uid}")

    def _open_ctl(self, conn: Conn, req: OpenRequest) -> Handle:
        self._check_owner(conn, req.caller)
        return CtlHandle(self.table, conn)

    def _open_data(self, conn: Conn, req: OpenRequest) -> Handle:
        self._check_owner(conn, req.caller)
        return door.SocketHandle(self.table, conn, req.caller, req.nonblock)

    async def _open_listen(self, conn: Conn, req: OpenRequest) -> Handle:
        self._check_owner(conn, req.caller)
        if conn.type != abi.SOCK_STREAM:
            raise OSError(errno.EOPNOTSUPP, "listen is for tcp")
        conn.hold()  # keep the listener while we wait, even if its ctl is closed
        try:
            child, _peer = await door.accept(self.table, conn, req.nonblock)
        finally:
            conn.drop()
        return CtlHandle(self.table, child)
