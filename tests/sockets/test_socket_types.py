"""The socket table is the doors' one source: a row a module registers
(``ModuleContext.register_socket``; tests/sockets/lsm-loopsock.py registers an AF_INET
and an AF_INET6 datagram type, protocol 253, named ``loop``) appears in the socket door
(``2/2/253``, ``24/2/253``, ``inet/loop``, ``inet6/loop``), in the text door (``loop/``)
and to rmgr.libsocket (``socket(AF_INET6, SOCK_DGRAM, 253)``, with sockaddr_in6 in and
out), and unloading the module takes all of it away, leaving the built-in tree as it
was."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

import pytest
import trio

from rmgr.libsocket import abi
from rmgr.nodes import Caller, Directory, Node, OpenRequest
from stack.core import Stack
from stack.loader import ModuleInstance
from stack.options import Options
from stack.registry import AF_INET, AF_INET6, SocketType, SocketTypes
from stack.sockets.inet import inet_socket_types
from tests.conftest import HAVE_FUSE, running_stack

MODULE = Path(__file__).resolve().parent / "lsm-loopsock.py"


def _paths(d: Directory, prefix: str = "") -> dict[str, Node]:
    """Every path of the tree below ``d`` (not config/, not the text door's sockets)."""
    out: dict[str, Node] = {}
    for name, node in d.children().items():
        if name == "config" or name.isdigit() and prefix.count("/") == 1 \
                and prefix.split("/")[0] in ("tcp", "udp", "raw", "loop"):
            continue
        out[prefix + name] = node
        if isinstance(node, Directory):
            out.update(_paths(node, prefix + name + "/"))
    return out


async def _load(st: Stack) -> ModuleInstance:
    return await st.modules.load(str(MODULE), "protocol", Options.parse(""))


async def _unload(st: Stack, inst: ModuleInstance) -> None:
    st.modules.unload(inst)
    for _ in range(100):
        if inst not in st.modules.loaded:
            return
        await trio.sleep(0.01)
    raise AssertionError("the module did not unload")


def test_rows_validate_and_defaults_are_unique() -> None:
    types = SocketTypes()
    for row in inet_socket_types(tcp=print, udp=print, raw=print):  # type: ignore[arg-type]
        types.register(row)
    assert types.lookup(AF_INET, abi.SOCK_STREAM, 0).name == "tcp"  # type: ignore[union-attr]
    assert types.lookup(AF_INET, abi.SOCK_RAW, 200).name == "raw"  # type: ignore[union-attr]
    assert types.lookup(AF_INET, abi.SOCK_RAW, 0) is None  # raw needs a protocol
    assert types.lookup(AF_INET6, abi.SOCK_STREAM, 0) is None
    with pytest.raises(ValueError, match="already has a default"):
        types.register(SocketType(AF_INET, abi.SOCK_STREAM, 132, print, "sctp",  # type: ignore[arg-type]
                                  default=True))
    with pytest.raises(ValueError, match="1-255"):
        SocketType(AF_INET, abi.SOCK_DGRAM, 256, print, "bad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default row needs"):
        SocketType(AF_INET, abi.SOCK_RAW, SocketTypes.ANY, print, "bad", default=True)  # type: ignore[arg-type]


async def test_module_socket_type_in_the_tree_and_gone_at_unload() -> None:
    """Without FUSE: the doors' trees follow the table, nodes keep their identity."""
    async with running_stack() as st:
        before = _paths(st.tree)
        assert "2/2/253" not in before and "loop" not in before
        inst = await _load(st)
        after = _paths(st.tree)
        for path in ("2/2/253", "24/2/253", "inet/loop", "inet/loopback", "inet6/loop",
                     "inet6/loopback", "loop/clone", "loop/stats"):
            assert path in after, path
        # not a default (24/2/0 stays the built-in AF_INET6 UDP's), and no TCP of its own
        assert after["24/2/0"] is after["24/2/17"] is before["24/2/17"]
        assert after["inet6/tcp"] is before["inet6/tcp"]
        assert after["inet/loop"] is after["2/2/253"] is after["inet/loopback"]
        # the built-in files are the very same nodes (the kernel knows them by inode)
        assert all(after[p] is node for p, node in before.items()), \
            [p for p, node in before.items() if after.get(p) is not node]
        assert "socket 2/2/253 loop" in st.registries.render()
        assert "socket 24/2/253 loop" in st.registries.render()

        # the node opens the row: a socket of kind loop, its protocol, its family
        handle = st.tree.lookup("24").lookup("2").lookup("253").factory(  # type: ignore[union-attr]
            OpenRequest(Caller(uid=1000, gid=1000), os.O_RDWR))
        conn = handle.conn  # type: ignore[union-attr]
        assert (conn.kind, conn.family, conn.protocol) == ("loop", AF_INET6, 253)
        assert conn.status_text().startswith(f"loop/{conn.id} Closed uid 1000 proto 253")
        assert conn.local_text() == "::!0\n"
        await handle.release()  # type: ignore[union-attr,misc]

        await _unload(st, inst)
        gone = _paths(st.tree)
        assert set(gone) == set(before)
        assert all(gone[p] is node for p, node in before.items())
        assert "253" not in st.registries.render()
        with pytest.raises(OSError) as exc:  # a cached node of the gone row
            after["2/2/253"].factory(OpenRequest(Caller(), os.O_RDWR))  # type: ignore[attr-defined]
        assert exc.value.errno == errno.EPROTONOSUPPORT


def _ioctl(fd: int, cmd: int, arg: bytes = b"") -> bytes:
    return fcntl.ioctl(fd, cmd, arg.ljust(abi.ioc_size(cmd), b"\0"))  # type: ignore[no-any-return]


def _through_files(prefix: str) -> dict[str, object]:
    """(a thread) Use the loop sockets as a program would."""
    from rmgr import libsocket

    sock = f"{prefix}/dev/socket"
    out: dict[str, object] = {
        "root": sorted(os.listdir(sock)), "2/2": sorted(os.listdir(f"{sock}/2/2")),
        "inet6": sorted(os.listdir(f"{sock}/inet6")),
    }
    # the socket door, by hand: bind, sendto + write, read + recvaddr, sockinfo
    fd = os.open(f"{sock}/inet/loop", os.O_RDWR)
    try:
        _ioctl(fd, abi.IOP_BIND, abi.pack_sockaddr_in("127.0.0.1", 4000))
        out["name"] = abi.unpack_sockaddr_in(_ioctl(fd, abi.IOP_GETSOCKNAME))
        _ioctl(fd, abi.IOP_SENDTO, abi.pack_sockaddr_in("10.1.2.3", 9))
        os.write(fd, b"ping")
        out["read"] = os.read(fd, 100)
        out["from"] = abi.unpack_sockaddr_in(_ioctl(fd, abi.IOP_RECVADDR))
        info = abi.SockInfo.unpack(_ioctl(fd, abi.IOP_SOCKINFO))
        out["info"] = (info.domain, info.type, info.protocol, info.name.split("/")[0])
        out["status"] = Path(f"{sock}/{info.name}/status").read_text()
    finally:
        os.close(fd)
    # rmgr.libsocket: AF_INET6 goes to the stack now that the door serves it
    libsocket.setsockprefix(prefix)
    try:
        with libsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM, 253) as s6:
            out["s6_class"] = type(s6).__module__
            s6.bind(("2001:db8::1", 4002))
            out["s6_name"] = s6.getsockname()
            s6.sendto(b"six", ("2001:db8::2", 7))
            out["s6_recvfrom"] = s6.recvfrom(100)
            out["s6_family"] = (s6.family, s6.info().domain)
            try:  # a sockaddr_in on an AF_INET6 socket: EAFNOSUPPORT, as Linux
                _ioctl(s6.fileno(), abi.IOP_BIND, abi.pack_sockaddr_in("127.0.0.1", 1))
            except OSError as exc:
                out["s6_bind_v4"] = exc.errno
        with libsocket.socket(socket.AF_INET, socket.SOCK_DGRAM, 253) as s4:
            s4.bind(("127.0.0.2", 4001))
            s4.sendto(b"x", ("127.0.0.9", 1))
            out["s4_recvfrom"] = s4.recvfrom(100)
    finally:
        libsocket.clearsockprefix()
    # the text door: clone, ctl, local
    with open(f"{sock}/loop/clone", "r+b", buffering=0) as ctl:
        n = ctl.read(32).decode().strip()
        ctl.write(b"bind 127.0.0.3!4003")
        out["text_local"] = Path(f"{sock}/loop/{n}/local").read_text()
    return out


def _after_unload(prefix: str) -> dict[str, object]:
    from rmgr import libsocket

    sock = f"{prefix}/dev/socket"
    out: dict[str, object] = {"root": sorted(os.listdir(sock)),
                              "2/2": sorted(os.listdir(f"{sock}/2/2"))}
    try:
        os.close(os.open(f"{sock}/2/2/253", os.O_RDWR))
    except OSError as exc:
        out["open"] = exc.errno
    libsocket.setsockprefix(prefix)
    try:
        libsocket.socket(socket.AF_INET, socket.SOCK_DGRAM, 253)
    except OSError as exc:
        out["libsocket"] = exc.errno
    finally:
        libsocket.clearsockprefix()
    return out


@pytest.mark.skipif(not HAVE_FUSE, reason="needs root, /dev/fuse and fusermount3")
async def test_module_socket_type_through_the_files(tmp_path: Path) -> None:
    prefix = str(tmp_path / "s")
    async with running_stack(prefix=prefix, mount=True) as st:
        inst = await _load(st)
        got = await trio.to_thread.run_sync(_through_files, prefix)
        assert {"24", "inet6", "loop", "2", "inet", "tcp", "udp", "raw"} <= set(got["root"])  # type: ignore[call-overload]
        assert got["2/2"] == ["0", "17", "253"]
        # beside the built-in AF_INET6 rows
        assert got["inet6"] == ["dgram", "icmp6", "loop", "loopback", "raw", "stream", "tcp",
                                "udp"]
        assert got["name"] == ("127.0.0.1", 4000)
        assert got["read"] == b"ping" and got["from"] == ("127.0.0.1", 4000)
        assert got["info"] == (socket.AF_INET, socket.SOCK_DGRAM, 253, "loop")
        assert " proto 253 " in got["status"]  # type: ignore[operator]
        assert got["s6_class"] == "rmgr.libsocket.sock"
        assert got["s6_name"] == ("2001:db8::1", 4002, 0, 0)
        assert got["s6_recvfrom"] == (b"six", ("2001:db8::1", 4002, 0, 0))
        assert got["s6_family"] == (socket.AF_INET6, socket.AF_INET6)
        assert got["s6_bind_v4"] == errno.EAFNOSUPPORT
        assert got["s4_recvfrom"] == (b"x", ("127.0.0.2", 4001))
        assert got["text_local"] == "127.0.0.3!4003\n"

        await _unload(st, inst)
        gone = await trio.to_thread.run_sync(_after_unload, prefix)
        assert "loop" not in set(gone["root"])  # type: ignore[call-overload]
        assert {"24", "inet6"} <= set(gone["root"])  # type: ignore[call-overload]  # built in
        assert gone["2/2"] == ["0", "17"]
        # the kernel may still hold the entry for a second: then the stack says no
        assert gone["open"] in (errno.ENOENT, errno.EPROTONOSUPPORT)
        assert gone["libsocket"] == errno.EPROTONOSUPPORT
