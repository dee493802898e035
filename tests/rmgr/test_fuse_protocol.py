"""The request dispatcher driven with crafted requests: the test plays the kernel over a
SOCK_SEQPACKET pair (one message per request, like /dev/fuse). Needs no root and no mount,
so hostile input the kernel would never send can be tried too."""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trio

from rmgr.fuse import abi
from rmgr.fuse.session import FuseSession
from rmgr.nodes import CONTROL_WRITE_MAX
from tests.rmgr.fuse_tree import GET_VALUE, IOC_GET, IOC_SET, IOC_XOR, FuseTree

MAX_WRITE = 128 * 1024  # a socketpair cannot carry a 1 MiB message


@dataclass
class Reply:
    error: int
    unique: int
    body: bytes


class FakeKernel:
    def __init__(self, fd: int, session: FuseSession, tree: FuseTree) -> None:
        self.fd = fd
        self.session = session
        self.tree = tree
        self.unique = 0x100

    def send_raw(self, data: bytes) -> None:
        os.write(self.fd, data)

    def send(self, opcode: int, body: bytes = b"", nodeid: int = abi.ROOT_ID,
             uid: int = 0, gid: int = 0, pid: int = 1) -> int:
        self.unique += 2
        self.send_raw(abi.IN_HEADER.pack(40 + len(body), opcode, self.unique, nodeid, uid,
                                         gid, pid, 0, 0) + body)
        return self.unique

    async def recv(self, timeout: float = 2.0) -> Reply:
        with trio.fail_after(timeout):
            while True:
                try:
                    data = os.read(self.fd, 1 << 20)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.fd)
        length, error, unique = abi.OUT_HEADER.unpack_from(data)
        assert length == len(data)
        return Reply(error, unique, data[16:])

    async def no_reply(self, wait: float = 0.1) -> None:
        with trio.move_on_after(wait):
            r = await self.recv(wait + 1)
            raise AssertionError(f"unexpected reply {r}")

    async def call(self, opcode: int, body: bytes = b"", nodeid: int = abi.ROOT_ID,
                   **kw: int) -> Reply:
        unique = self.send(opcode, body, nodeid, **kw)
        r = await self.recv()
        assert r.unique == unique
        return r

    async def lookup(self, name: str, parent: int = abi.ROOT_ID) -> int:
        r = await self.call(abi.LOOKUP, name.encode() + b"\0", parent)
        assert r.error == 0, r
        return abi.ENTRY_OUT.unpack_from(r.body)[0]

    async def open(self, ino: int, flags: int = os.O_RDWR) -> int:
        r = await self.call(abi.OPEN, abi.OPEN_IN.pack(flags, 0), ino)
        assert r.error == 0, r
        fh, oflags, _ = abi.OPEN_OUT.unpack(r.body)
        assert oflags & abi.FOPEN_DIRECT_IO and oflags & abi.FOPEN_STREAM
        assert oflags & abi.FOPEN_NONSEEKABLE
        return fh


def read_in(fh: int, size: int, flags: int = 0) -> bytes:
    return abi.READ_IN.pack(fh, 0, size, 0, 0, flags, 0)


def write_in(fh: int, data: bytes, flags: int = 0, size: int | None = None) -> bytes:
    return abi.WRITE_IN.pack(fh, 0, len(data) if size is None else size, 0, 0, flags, 0) + data


def ioctl_in(fh: int, cmd: int, data: bytes = b"", in_size: int | None = None,
             out_size: int | None = None) -> bytes:
    d, sz = abi.ioc_dir(cmd), abi.ioc_size(cmd)
    i = (sz if d & abi.IOC_WRITE else 0) if in_size is None else in_size
    o = (sz if d & abi.IOC_READ else 0) if out_size is None else out_size
    return abi.IOCTL_IN.pack(fh, 0, cmd, 0, i, o) + data


@pytest.fixture
async def kernel() -> AsyncIterator[FakeKernel]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.setblocking(False)
    tree = FuseTree()
    session = FuseSession(tree.root, theirs.fileno(), name="fake", max_write=MAX_WRITE)
    k = FakeKernel(ours.fileno(), session, tree)
    try:
        async with trio.open_nursery() as nursery:
            unique = k.send(abi.INIT, abi.INIT_IN.pack(7, 40, 65536, 0xFFFFFFFF) + bytes(48))

            async def run() -> None:
                await session.handshake()
                await session.serve()

            nursery.start_soon(run)
            r = await k.recv()
            assert r.error == 0 and r.unique == unique
            yield k
            nursery.cancel_scope.cancel()
    finally:
        ours.close()
        theirs.close()


async def test_init_negotiates_big_writes(kernel: FakeKernel) -> None:
    s = kernel.session
    assert s.initialized and s.proto_minor == 38
    for flag in (abi.MAX_PAGES, abi.BIG_WRITES, abi.ASYNC_READ):
        assert s.init_flags & flag


async def test_init_reply_fields() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        session = FuseSession(FuseTree().root, theirs.fileno())
        theirs.setblocking(False)
        k = FakeKernel(ours.fileno(), session, FuseTree())
        k.send(abi.GETATTR, bytes(16))  # before INIT: EIO
        k.send(abi.INIT, abi.INIT_IN.pack(7, 38, 131072, 0xFFFFFFFF) + bytes(48))
        await session.handshake()
        assert (await k.recv()).error == -errno.EIO
        r = await k.recv()
        (major, minor, readahead, flags, _bg, _cong, max_write, _gran, max_pages, _al,
         _f2) = abi.INIT_OUT.unpack(r.body)
        assert (major, minor, readahead) == (7, 38, 131072)
        assert max_write == 1 << 20 and max_pages >= 256
        assert flags & abi.MAX_PAGES


async def test_short_and_bad_length_requests_get_einval(kernel: FakeKernel) -> None:
    c = kernel.session.counters
    kernel.send_raw(b"\x01\x02\x03")  # too short to carry a unique: counted, no reply
    await kernel.no_reply()
    assert c["malformed"] == 1
    hdr = abi.IN_HEADER.pack(40, abi.GETATTR, 77, 1, 0, 0, 0, 0, 0)
    kernel.send_raw(hdr[:24])  # short header with a unique
    r = await kernel.recv()
    assert (r.error, r.unique) == (-errno.EINVAL, 77)
    kernel.send_raw(abi.IN_HEADER.pack(999, abi.GETATTR, 79, 1, 0, 0, 0, 0, 0) + bytes(16))
    r = await kernel.recv()
    assert (r.error, r.unique) == (-errno.EINVAL, 79)
    # a body too short for its op
    r = await kernel.call(abi.READ, b"\0" * 8)
    assert r.error == -errno.EINVAL
    assert c["malformed"] == 4
    # still serving
    assert (await kernel.call(abi.GETATTR, bytes(16))).error == 0


async def test_unknown_opcodes_enosys(kernel: FakeKernel) -> None:
    for op in (abi.MKDIR, abi.SYMLINK, abi.GETXATTR, abi.CREATE, 99, 4096):
        assert (await kernel.call(op, bytes(16))).error == -errno.ENOSYS
    assert kernel.session.counters["enosys"] == 6


async def test_lookup_getattr_and_modes(kernel: FakeKernel) -> None:
    r = await kernel.call(abi.LOOKUP, b"secret\0")
    nodeid, _gen, entry_valid, _av, _evn, _avn, *attr = abi.ENTRY_OUT.unpack(r.body)
    assert attr[0] == nodeid and entry_valid > 0
    assert attr[9] == 0o100600  # S_IFREG | 0600
    r = await kernel.call(abi.GETATTR, bytes(16), nodeid)
    assert abi.ATTR_OUT.unpack(r.body)[3 + 9] == 0o100600
    assert (await kernel.call(abi.LOOKUP, b"nope\0")).error == -errno.ENOENT
    text = await kernel.lookup("text")
    assert (await kernel.call(abi.LOOKUP, b"x\0", text)).error == -errno.ENOTDIR
    assert (await kernel.call(abi.LOOKUP, b"unterminated")).error == -errno.EINVAL
    assert (await kernel.call(abi.GETATTR, bytes(16), 12345)).error == -errno.ESTALE


async def test_forget_counts_and_no_inode_reuse(kernel: FakeKernel) -> None:
    a = await kernel.lookup("text")
    assert await kernel.lookup("text") == a
    s = kernel.session
    assert s.known_inodes()[a] == 2
    kernel.send(abi.FORGET, abi.FORGET_IN.pack(1), a)
    await kernel.no_reply(0.05)
    assert s.known_inodes()[a] == 1
    kernel.send(abi.FORGET, abi.FORGET_IN.pack(1), a)
    await kernel.no_reply(0.05)
    assert a not in s.known_inodes()
    b = await kernel.lookup("text")
    assert b != a  # a new number: the kernel may still hold the old one somewhere
    c = await kernel.lookup("ctl")
    kernel.send(abi.BATCH_FORGET, abi.BATCH_FORGET_IN.pack(2, 0) + abi.FORGET_ONE.pack(b, 1)
                + abi.FORGET_ONE.pack(c, 1))
    await kernel.no_reply(0.05)
    assert s.known_inodes() == {}


async def test_dynamic_entries_not_cached(kernel: FakeKernel) -> None:
    dyn = await kernel.lookup("dyn")
    r = await kernel.call(abi.LOOKUP, b"one\0", dyn)
    assert r.error == 0 and abi.ENTRY_OUT.unpack_from(r.body)[2] == 0  # entry_valid 0
    kernel.tree.dyn_names = {"two"}
    assert (await kernel.call(abi.LOOKUP, b"one\0", dyn)).error == -errno.ENOENT
    assert (await kernel.call(abi.LOOKUP, b"two\0", dyn)).error == 0


async def test_vanished_dynamic_entry_invalidated(kernel: FakeKernel,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A dynamic entry that disappears (a closed socket's tcp/N) is invalidated in the
    kernel (NOTIFY_INVAL_ENTRY), so the kernel FORGETs it and the node is freed; live
    entries are left alone. (Without it the kernel kept tcp/N pinned by its cached
    children and the session kept every socket ever accepted: the soak's RSS growth.)"""
    from rmgr.fuse import inodes

    monkeypatch.setattr(inodes, "DYN_SWEEP_INTERVAL", 0.02)
    kernel.tree.dyn_names = {"one", "two"}
    dyn = await kernel.lookup("dyn")
    one = await kernel.lookup("one", dyn)
    await kernel.lookup("two", dyn)
    kernel.tree.dyn_names = {"two"}
    r = await kernel.recv()
    assert (r.unique, r.error) == (0, abi.NOTIFY_INVAL_ENTRY)
    parent, namelen, flags = abi.NOTIFY_INVAL_ENTRY_OUT.unpack_from(r.body)
    assert (parent, namelen, flags) == (dyn, 3, 0)
    assert r.body[abi.NOTIFY_INVAL_ENTRY_OUT.size:] == b"one\0"
    await kernel.no_reply(0.1)  # once only, and "two" is still there
    assert kernel.session.counters["inval_entry"] == 1
    kernel.send(abi.FORGET, abi.FORGET_IN.pack(1), one)
    await kernel.no_reply(0.05)
    assert one not in kernel.session.known_inodes()


async def test_readdir_and_readdirplus(kernel: FakeKernel) -> None:
    r = await kernel.call(abi.OPENDIR, abi.OPEN_IN.pack(0, 0))
    fh = abi.OPEN_OUT.unpack(r.body)[0]

    def names(body: bytes, plus: bool) -> list[str]:
        out, off = [], 0
        while off < len(body):
            if plus:
                off += abi.ENTRY_OUT.size
            _ino, _next, namelen, _type = abi.DIRENT.unpack_from(body, off)
            out.append(body[off + 24:off + 24 + namelen].decode())
            off += abi.dirent_size(namelen)
        return out

    r = await kernel.call(abi.READDIR, read_in(fh, 4096))
    assert names(r.body, False) == [".", "..", "text", "ctl", "chan", "secret", "boom", "sub",
                                    "dyn"]
    # a small buffer: listing in pieces, resumed at the offset of the last entry
    r = await kernel.call(abi.READDIR, read_in(fh, 80))
    first = names(r.body, False)
    assert first == [".", ".."]
    r = await kernel.call(abi.READDIRPLUS, abi.READ_IN.pack(fh, 2, 4096, 0, 0, 0, 0))
    assert names(r.body, True)[:2] == ["text", "ctl"]
    # readdirplus counted one lookup per entry (not for . and ..)
    assert sorted(kernel.session.known_inodes().values()) == [1] * 7
    assert (await kernel.call(abi.RELEASEDIR, abi.RELEASE_IN.pack(fh, 0, 0, 0))).error == 0
    assert (await kernel.call(abi.READDIR, read_in(fh, 4096))).error == -errno.EBADF


async def test_open_read_write_release(kernel: FakeKernel) -> None:
    ino = await kernel.lookup("chan")
    fh = await kernel.open(ino)
    r = await kernel.call(abi.WRITE, write_in(fh, b"hello"))
    assert r.error == 0 and abi.WRITE_OUT.unpack(r.body)[0] == 5
    r = await kernel.call(abi.READ, read_in(fh, 3))
    assert r.body == b"hel"
    assert (await kernel.call(abi.FLUSH, abi.FLUSH_IN.pack(fh, 0, 0, 0))).error == 0
    assert (await kernel.call(abi.RELEASE, abi.RELEASE_IN.pack(fh, 0, 0, 0))).error == 0
    assert kernel.tree.releases == 1
    assert (await kernel.call(abi.READ, read_in(fh, 3))).error == -errno.EBADF
    assert (await kernel.call(abi.OPEN, abi.OPEN_IN.pack(0, 0))).error == -errno.EISDIR


async def test_write_size_mismatch_einval(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("chan"))
    r = await kernel.call(abi.WRITE, write_in(fh, b"abc", size=10))
    assert r.error == -errno.EINVAL
    assert kernel.tree.write_sizes == []


async def test_big_write_one_call(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("chan"))
    payload = os.urandom(MAX_WRITE)
    r = await kernel.call(abi.WRITE, write_in(fh, payload))
    assert abi.WRITE_OUT.unpack(r.body)[0] == MAX_WRITE
    assert kernel.tree.write_sizes == [MAX_WRITE]


async def test_blocked_write_keeps_its_buffer(kernel: FakeKernel) -> None:
    """A large write that waits keeps its payload while later requests reuse the buffer."""
    fh = await kernel.open(await kernel.lookup("chan"))
    seen: list[bytes] = []
    h = kernel.tree.handles[0]
    gate = trio.Event()

    async def slow_write(data: memoryview, req: object) -> int:
        await gate.wait()
        seen.append(bytes(data))
        return len(data)

    h.write = slow_write  # type: ignore[method-assign]
    big = b"B" * 65536
    u = kernel.send(abi.WRITE, write_in(fh, big))
    await kernel.no_reply(0.05)
    kernel.send(abi.WRITE, write_in(fh, b"C" * 65536))  # lands in the read buffer
    await kernel.no_reply(0.05)
    gate.set()
    replies = {(await kernel.recv()).unique, (await kernel.recv()).unique}
    assert u in replies
    assert sorted(seen) == [big, b"C" * 65536]  # each payload intact


async def test_ioctl_restricted(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("chan"))
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_GET))
    result, _flags, _ii, _oi = abi.IOCTL_OUT.unpack_from(r.body)
    assert result == 0 and struct.unpack("<Q", r.body[16:]) == (GET_VALUE,)
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_SET, b"s" * 16))
    assert r.error == 0 and kernel.tree.handles[0].stored == b"s" * 16
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_XOR, bytes(range(32))))
    assert abi.IOCTL_OUT.unpack_from(r.body)[0] == 32
    assert r.body[16:] == bytes(i ^ 0xA5 for i in range(32))
    # wrong sizes: EINVAL, counted; unknown command: ENOTTY from the handler
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_SET, b"s" * 8, in_size=8))
    assert r.error == -errno.EINVAL
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_GET, out_size=4))
    assert r.error == -errno.EINVAL
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_SET, b"s" * 20))  # data != in_size
    assert r.error == -errno.EINVAL
    assert kernel.session.counters["ioctl_bad_size"] == 3
    r = await kernel.call(abi.IOCTL, ioctl_in(fh, abi.IOR(ord("T"), 77, 4)))
    assert r.error == -errno.ENOTTY
    assert kernel.session.counters["ioctl_unknown"] == 1


def _refusal_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "io-pkt.rmgr" and f"[{kind};" in r.getMessage()]


async def test_hostile_input_counted_and_logged_once(kernel: FakeKernel,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Input no correct client sends gets its errno every time, a counter per kind, and
    one log line per kind (the first occurrence), however often it is repeated."""
    c = kernel.session.counters
    fh = await kernel.open(await kernel.lookup("chan"))
    ctl = await kernel.open(await kernel.lookup("ctl"))
    unknown = abi.IOR(ord("T"), 77, 4)
    with caplog.at_level(logging.WARNING, logger="io-pkt.rmgr"):
        # an ioctl no handler knows: ENOTTY (the handler's answer), counted, logged once
        for _ in range(3):
            r = await kernel.call(abi.IOCTL, ioctl_in(fh, unknown), pid=4242)
            assert r.error == -errno.ENOTTY
        # on a directory: refused by the session itself, same kind
        dir_ioctl = abi.IOCTL_IN.pack(0, abi.IOCTL_DIR, unknown, 0, 0, 4)
        assert (await kernel.call(abi.IOCTL, dir_ioctl)).error == -errno.ENOTTY
        assert c["ioctl_unknown"] == 4
        lines = _refusal_lines(caplog, "ioctl_unknown")
        assert len(lines) == 1, lines
        assert f"{unknown:#x}" in lines[0] and "pid 4242" in lines[0] and "ENOTTY" in lines[0]
        # sizes contradicting the command's encoding: EINVAL before any handler runs
        for _ in range(3):
            r = await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_SET, b"s" * 8, in_size=8))
            assert r.error == -errno.EINVAL
        assert c["ioctl_bad_size"] == 3 and kernel.tree.handles[0].stored == b""
        lines = _refusal_lines(caplog, "ioctl_bad_size")
        assert len(lines) == 1 and f"{IOC_SET:#x}" in lines[0] and "in=8/8" in lines[0], lines
        # a control-file write over the limit: EFBIG, the command never runs
        for _ in range(2):
            r = await kernel.call(abi.WRITE, write_in(ctl, b"x" * (CONTROL_WRITE_MAX + 1)))
            assert r.error == -errno.EFBIG
        assert c["write_too_big"] == 2 and kernel.tree.commands == []
        lines = _refusal_lines(caplog, "write_too_big")
        assert len(lines) == 1 and str(CONTROL_WRITE_MAX + 1) in lines[0], lines
        # ... and one of exactly the limit is a command like any other (not counted)
        r = await kernel.call(abi.WRITE, write_in(ctl, b"y" * CONTROL_WRITE_MAX))
        assert r.error == 0 and kernel.tree.commands == ["y" * CONTROL_WRITE_MAX]
        assert c["write_too_big"] == 2
        # isatty()/terminal-size probes (every stdio open sends TCGETS): ENOTTY, counted
        # apart, never logged
        for probe in (0x5401, 0x5413):  # TCGETS, TIOCGWINSZ (_IO encodings, no data)
            assert (await kernel.call(abi.IOCTL, ioctl_in(fh, probe))).error == -errno.ENOTTY
        assert c["ioctl_tty_probe"] == 2 and c["ioctl_unknown"] == 4
        refusals = [r for r in caplog.records if r.name == "io-pkt.rmgr"]
        assert len(refusals) == 3, [r.getMessage() for r in refusals]
        assert all(r.levelno == logging.WARNING for r in refusals)
    # still serving, the open file too
    assert (await kernel.call(abi.GETATTR, bytes(16))).error == 0
    assert (await kernel.call(abi.IOCTL, ioctl_in(fh, IOC_GET))).error == 0


async def test_raising_handlers(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("boom"))
    assert (await kernel.call(abi.READ, read_in(fh, 10))).error == -errno.EIO
    assert (await kernel.call(abi.WRITE, write_in(fh, b"x"))).error == -errno.ENOSPC
    # a poll bug must not answer ENOSYS (the kernel would stop polling the whole mount)
    r = await kernel.call(abi.POLL, abi.POLL_IN.pack(fh, 5, 0, 1))
    assert r.error == -errno.EIO
    assert kernel.session.counters["handler_error"] == 2
    assert (await kernel.call(abi.GETATTR, bytes(16))).error == 0


async def test_interrupt_cancels_blocked_read(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("chan"))
    u1 = kernel.send(abi.READ, read_in(fh, 10))
    u2 = kernel.send(abi.READ, read_in(fh, 10))
    await kernel.no_reply(0.05)
    assert kernel.session.inflight == 2
    # other requests are served meanwhile
    assert (await kernel.call(abi.GETATTR, bytes(16))).error == 0
    kernel.send(abi.INTERRUPT, abi.INTERRUPT_IN.pack(u1))
    r = await kernel.recv()
    assert (r.unique, r.error) == (u1, -errno.EINTR)
    kernel.send(abi.INTERRUPT, abi.INTERRUPT_IN.pack(12345))  # unknown: ignored
    await kernel.no_reply(0.05)
    kernel.tree.handles[0].feed(b"data")
    r = await kernel.recv()
    assert (r.unique, r.body) == (u2, b"data")
    assert kernel.session.inflight == 0
    # the task that took the interrupt serves again
    kernel.send(abi.READ, read_in(fh, 10))
    await kernel.no_reply(0.05)
    kernel.tree.handles[0].feed(b"more")
    assert (await kernel.recv()).body == b"more"


async def test_nonblock_flag_per_request(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("chan"))
    r = await kernel.call(abi.READ, read_in(fh, 10, flags=os.O_NONBLOCK))
    assert r.error == -errno.EAGAIN


async def test_poll_notify(kernel: FakeKernel) -> None:
    fh = await kernel.open(await kernel.lookup("chan"))
    r = await kernel.call(abi.POLL, abi.POLL_IN.pack(fh, 0xABC, abi.POLL_SCHEDULE_NOTIFY, 1))
    assert abi.POLL_OUT.unpack(r.body)[0] & 1 == 0  # no POLLIN yet
    kernel.tree.handles[0].feed(b"x")
    r = await kernel.recv()
    assert (r.unique, r.error) == (0, abi.NOTIFY_POLL)
    assert abi.NOTIFY_POLL_WAKEUP_OUT.unpack(r.body) == (0xABC,)
    kernel.tree.handles[0].feed(b"y")  # not re-armed: no second notification
    await kernel.no_reply(0.05)
    r = await kernel.call(abi.POLL, abi.POLL_IN.pack(fh, 0xABC, abi.POLL_SCHEDULE_NOTIFY, 1))
    assert abi.POLL_OUT.unpack(r.body)[0] & 1
    assert kernel.session.counters["poll_notify"] == 1


async def test_statfs_access_setattr(kernel: FakeKernel) -> None:
    r = await kernel.call(abi.STATFS)
    assert r.error == 0 and len(r.body) == abi.STATFS_OUT.size
    secret = await kernel.lookup("secret")
    assert (await kernel.call(abi.ACCESS, abi.ACCESS_IN.pack(os.R_OK, 0), secret)).error == 0
    r = await kernel.call(abi.ACCESS, abi.ACCESS_IN.pack(os.R_OK, 0), secret, uid=65534)
    assert r.error == -errno.EACCES
    trunc = abi.SETATTR_IN.pack(abi.FATTR_SIZE, *([0] * 15))
    assert (await kernel.call(abi.SETATTR, trunc, secret)).error == 0
    chmod = abi.SETATTR_IN.pack(abi.FATTR_MODE, *([0] * 15))
    assert (await kernel.call(abi.SETATTR, chmod, secret)).error == -errno.EPERM


async def test_busy_poll_catches_the_next_request(kernel: FakeKernel,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """After answering, the reader polls (yielding to other tasks) before sleeping in
    epoll; a request sent in that window is caught awake. The window is widened here so
    the check does not depend on the machine's speed; without busy polling (0) nothing
    is caught."""
    from rmgr.fuse import scheduler

    monkeypatch.setattr(scheduler, "BUSY_POLL_NS", 50_000_000)
    c = kernel.session.counters
    before = c["busy_poll_hits"]
    for _ in range(30):
        r = await kernel.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0, 0))
        assert r.error == 0
    caught = c["busy_poll_hits"] - before
    assert caught >= 20
    monkeypatch.setattr(scheduler, "BUSY_POLL_NS", 0)
    await kernel.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0, 0))  # ends the open window
    before = c["busy_poll_hits"]
    for _ in range(10):
        assert (await kernel.call(abi.GETATTR, abi.GETATTR_IN.pack(0, 0, 0))).error == 0
    assert c["busy_poll_hits"] == before


class SpyBatch:
    """A server's batch bracket (stack/batch.py RxBatch) that notes, when it closes,
    whether the reply was already written (the kernel's end of the pair is readable)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.events: list[str] = []

    def begin(self) -> None:
        self.events.append("begin")

    def end(self) -> None:
        replied = bool(select.select([self.fd], [], [], 0)[0])
        self.events.append("end after the reply" if replied else "end before the reply")


async def test_the_batch_closes_after_the_reply(kernel: FakeKernel) -> None:
    """A handler's first step runs inside the server's batch, and the batch closes (what
    it deferred goes out: TCP's segment for a WRITE) after the reply is written."""
    fh = await kernel.open(await kernel.lookup("chan"))
    spy = SpyBatch(kernel.fd)
    kernel.session.batch = spy
    r = await kernel.call(abi.WRITE, write_in(fh, b"hello"))
    assert r.error == 0
    r = await kernel.call(abi.READ, read_in(fh, 5))
    assert r.body == b"hello"
    assert spy.events == ["begin", "end after the reply"] * 2
