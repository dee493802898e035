"""The FUSE layer through a real mount: the kernel, fusermount3, Python and C clients.

The session runs in the test's trio run; every blocking file operation on the mount is
done from a thread (trio.to_thread) or a child process."""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
import trio

from rmgr.fuse.session import serve_mount
from stack.preflight import check_mountpoint, mounted_fuse_at
from tests.conftest import needs_fuse
from tests.rmgr.conftest import Mounted, blocking, force_unmount, wait_for
from tests.rmgr.fuse_tree import (
    GET_VALUE,
    IOC_GET,
    IOC_PING,
    IOC_SET,
    IOC_UNKNOWN,
    IOC_XOR,
    TEXT,
    FuseTree,
)

pytestmark = needs_fuse
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


async def test_tree_listing_and_attributes(mounted: Mounted) -> None:
    assert mounted_fuse_at(mounted.path)
    names = await blocking(os.listdir, mounted.path)
    assert sorted(names) == ["boom", "chan", "ctl", "dyn", "secret", "sub", "text"]
    st = await blocking(os.stat, mounted.p("secret"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0
    assert stat.S_ISDIR((await blocking(os.stat, mounted.p("sub/deeper"))).st_mode)
    assert await blocking(read_file, mounted.p("sub/deeper/leaf")) == b"leaf\n"
    out = await trio.run_process(["ls", "-l", mounted.path], capture_stdout=True)
    assert b"secret" in out.stdout
    st = await blocking(os.statvfs, mounted.path)
    assert st.f_namemax == 255
    with pytest.raises(FileNotFoundError):
        await blocking(os.stat, mounted.p("nope"))
    with pytest.raises(OSError) as ei:  # no creating files: ENOSYS from the session
        await blocking(os.mkdir, mounted.p("newdir"))
    assert ei.value.errno == errno.ENOSYS


async def test_open_read_write(mounted: Mounted) -> None:
    assert await blocking(read_file, mounted.p("text")) == TEXT.encode()

    def echo() -> bytes:
        fd = os.open(mounted.p("chan"), os.O_RDWR)
        try:
            assert os.write(fd, b"ping") == 4
            with pytest.raises(OSError) as ei:
                os.lseek(fd, 0, os.SEEK_SET)  # a stream: not seekable
            assert ei.value.errno == errno.ESPIPE
            return os.read(fd, 100)
        finally:
            os.close(fd)

    assert await blocking(echo) == b"ping"
    assert mounted.tree.releases == 1  # RELEASE came when the fd was closed
    assert mounted.session.open_files == 0


def _refusal_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "io-pkt.rmgr" and f"[{kind};" in r.getMessage()]


async def test_control_file(mounted: Mounted, caplog: pytest.LogCaptureFixture) -> None:
    def run() -> tuple[bytes, bytes, int, list[int]]:
        fd = os.open(mounted.p("ctl"), os.O_RDWR)
        try:
            state = os.read(fd, 100)
            os.write(fd, b"set x\n")
            reply = os.read(fd, 100)
            with pytest.raises(OSError) as bad:
                os.write(fd, b"fail")
            big = []
            for _ in range(3):
                with pytest.raises(OSError) as ei:
                    os.write(fd, b"x" * (65 * 1024))
                big.append(ei.value.errno)
            return state, reply, bad.value.errno, big  # type: ignore[return-value]
        finally:
            os.close(fd)

    with caplog.at_level(logging.WARNING, logger="io-pkt.rmgr"):
        state, reply, bad, big = await blocking(run)
    assert state == b"state: idle\n"
    assert reply == b"done: set x\n"
    assert bad == errno.EINVAL and big == [errno.EFBIG] * 3
    assert mounted.tree.commands == ["set x", "fail"]
    # the oversized writes came as one WRITE each: each counted, the first one logged
    assert mounted.session.counters["write_too_big"] == 3
    lines = _refusal_lines(caplog, "write_too_big")
    assert len(lines) == 1 and str(65 * 1024) in lines[0] and "EFBIG" in lines[0], lines
    # a command that fails is an ordinary answer, not hostile input: no log line
    assert len([r for r in caplog.records if r.name == "io-pkt.rmgr"]) == 1


async def test_release_once_per_open_file_description(mounted: Mounted) -> None:
    def run() -> None:
        fd = os.open(mounted.p("chan"), os.O_RDWR)
        fd2 = os.dup(fd)
        os.close(fd)
        time.sleep(0.05)
        assert mounted.tree.releases == 0  # another descriptor still refers to it
        os.close(fd2)

    await blocking(run)
    await wait_for(lambda: mounted.tree.releases == 1, what="RELEASE")
    await trio.sleep(0.05)
    assert mounted.tree.releases == 1 and mounted.tree.handles[0].released == 1


async def test_ioctl_from_python(mounted: Mounted, caplog: pytest.LogCaptureFixture) -> None:
    def run() -> tuple[bytes, bytes, int, bytes, int, bool, int]:
        fd = os.open(mounted.p("chan"), os.O_RDWR)
        try:
            got = fcntl.ioctl(fd, IOC_GET, bytes(8))
            fcntl.ioctl(fd, IOC_SET, b"0123456789abcdef")
            buf = bytearray(range(32))
            res = fcntl.ioctl(fd, IOC_XOR, buf, True)
            ping = fcntl.ioctl(fd, IOC_PING)
            for _ in range(3):
                with pytest.raises(OSError) as ei:
                    fcntl.ioctl(fd, IOC_UNKNOWN, bytes(4))
                assert ei.value.errno == errno.ENOTTY
            tty = os.isatty(fd)  # TCGETS through the kernel: answered ENOTTY too
            return (got, mounted.tree.handles[-1].stored, res, bytes(buf), ping, tty,
                    threading.get_native_id())  # FUSE reports the calling thread's id
        finally:
            os.close(fd)

    with caplog.at_level(logging.WARNING, logger="io-pkt.rmgr"):
        got, stored, res, buf, ping, tty, tid = await blocking(run)
    assert struct.unpack("<Q", got) == (GET_VALUE,)
    assert stored == b"0123456789abcdef"
    assert res == 32 and buf == bytes(i ^ 0xA5 for i in range(32))
    assert ping == 42 and tty is False
    # the unknown command: counted each time, logged once with its number and the caller
    c = mounted.session.counters
    assert c["ioctl_unknown"] == 3
    lines = _refusal_lines(caplog, "ioctl_unknown")
    assert len(lines) == 1 and f"{IOC_UNKNOWN:#x}" in lines[0], lines
    assert f"pid {tid}" in lines[0]
    # the isatty probe is counted apart and not logged; the kernel never sends sizes
    # that contradict the encoding (test_fuse_protocol plays a hostile kernel for that)
    assert c["ioctl_tty_probe"] == 1 and c["ioctl_bad_size"] == 0
    assert len([r for r in caplog.records if r.name == "io-pkt.rmgr"]) == 1


async def test_ioctl_from_c(mounted: Mounted, c_client: str) -> None:
    out = await trio.run_process([c_client, "ioctl", mounted.p("chan")], capture_stdout=True,
                                 check=False)
    assert out.returncode == 0, out.stdout
    assert out.stdout == b"ok ioctl\n"
    assert mounted.tree.handles[-1].stored == b"abcdefghijklmnop"


async def test_one_mib_write_arrives_whole(mounted: Mounted, c_client: str) -> None:
    def write_aligned() -> int:
        buf = mmap.mmap(-1, 1 << 20)  # page-aligned, as the kernel needs for 256 pages
        buf.write(b"w" * (1 << 20))
        fd = os.open(mounted.p("chan"), os.O_WRONLY)
        try:
            return os.write(fd, buf)
        finally:
            os.close(fd)
            buf.close()

    assert await blocking(write_aligned) == 1 << 20
    out = await trio.run_process([c_client, "bigwrite", mounted.p("chan")],
                                 capture_stdout=True, check=False)
    assert out.returncode == 0 and out.stdout == b"wrote 1048576\n"
    assert mounted.tree.write_sizes == [1 << 20, 1 << 20]


async def test_nonblock_at_open_and_by_fcntl(mounted: Mounted) -> None:
    def at_open() -> None:
        fd = os.open(mounted.p("chan"), os.O_RDWR | os.O_NONBLOCK)
        try:
            with pytest.raises(BlockingIOError):
                os.read(fd, 10)
        finally:
            os.close(fd)

    await blocking(at_open)
    assert mounted.tree.handles[0].open_flags & os.O_NONBLOCK

    fd = await blocking(os.open, mounted.p("chan"), os.O_RDWR)
    try:
        await blocking(os.set_blocking, fd, False)  # fcntl(F_SETFL, O_NONBLOCK)
        with pytest.raises(BlockingIOError):
            await blocking(os.read, fd, 10)
        await blocking(os.set_blocking, fd, True)
        h = mounted.tree.handles[1]
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await blocking(os.read, fd, 10))

            nursery.start_soon(reader)
            await wait_for(lambda: h.readers == 1, what="blocked reader")
            h.feed(b"late")
        assert got == [b"late"]
    finally:
        await blocking(os.close, fd)


async def test_poll_select_epoll_wake(mounted: Mounted) -> None:
    fd = await blocking(os.open, mounted.p("chan"), os.O_RDWR)
    h = mounted.tree.handles[0]
    try:
        def do_poll() -> list[tuple[int, int]]:
            p = select.poll()
            p.register(fd, select.POLLIN)
            return p.poll(5000)

        def do_select() -> list[int]:
            return select.select([fd], [], [], 5)[0]

        def do_epoll(edge: bool) -> list[tuple[int, int]]:
            with select.epoll() as ep:
                ep.register(fd, select.EPOLLIN | (select.EPOLLET if edge else 0))
                return ep.poll(5)

        assert (await blocking(lambda: select.select([fd], [], [], 0)))[0] == []
        w = await blocking(lambda: select.select([], [fd], [], 0))
        assert w[1] == [fd]
        for waiter in (do_poll, do_select, partial(do_epoll, False), partial(do_epoll, True)):
            result: list[object] = []
            async with trio.open_nursery() as nursery:
                async def wait(waiter=waiter, result=result) -> None:  # type: ignore[no-untyped-def]
                    t0 = time.monotonic()
                    result.append(await blocking(waiter))
                    result.append(time.monotonic() - t0)

                nursery.start_soon(wait)
                await trio.sleep(0.15)
                assert not result, f"{waiter} woke with nothing to read"
                h.feed(b"r")
            assert result[0], f"{waiter} did not see POLLIN"
            assert result[1] < 4  # type: ignore[operator]
            assert await blocking(os.read, fd, 10) == b"r"
        assert mounted.session.counters["poll_notify"] >= 4
    finally:
        await blocking(os.close, fd)


async def test_nonblocking_read_write_select_epoll_from_c(mounted: Mounted,
                                                         c_client: str) -> None:
    out = await trio.run_process([c_client, "rw", mounted.p("chan")], capture_stdout=True,
                                 check=False)
    assert out.returncode == 0 and out.stdout == b"ok rw\n", out.stdout


async def test_poll_from_c(mounted: Mounted, c_client: str) -> None:
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(partial(trio.run_process, [c_client, "poll", mounted.p("chan")],
                                           capture_stdout=True, check=False))
        await wait_for(lambda: mounted.session.counters["poll_notify"] == 0
                       and mounted.tree.handles and mounted.tree.handles[0]._poll_listeners,
                       what="C poller armed")
        mounted.tree.handles[0].feed(b"c")
    assert proc.returncode == 0, proc.stdout


async def test_eintr_on_blocked_read(mounted: Mounted, c_client: str) -> None:
    proc = await trio.lowlevel.open_process([c_client, "eintr", mounted.p("chan")],
                                            stdout=subprocess.PIPE)
    try:
        await wait_for(lambda: mounted.tree.handles and mounted.tree.handles[0].readers == 1,
                       what="C reader blocked")
        proc.send_signal(signal.SIGUSR1)
        with trio.fail_after(5):
            await proc.wait()
        assert proc.stdout is not None
        out = await proc.stdout.receive_some()
        assert proc.returncode == 0, out
        assert b"EINTR" in out
        assert mounted.session.counters["interrupted"] == 1
        await wait_for(lambda: mounted.tree.releases == 1, what="release after exit")
    finally:
        proc.kill()
        await proc.wait()


async def test_killed_blocked_reader_is_released(mounted: Mounted) -> None:
    """SIGKILL of a process blocked in read: INTERRUPT, EINTR answer, RELEASE."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", f"import os; os.read(os.open({mounted.p('chan')!r}, os.O_RDONLY), 1)"])
    await wait_for(lambda: mounted.tree.handles and mounted.tree.handles[0].readers == 1,
                   what="reader blocked")
    proc.kill()
    with trio.fail_after(5):
        await proc.wait()
    await wait_for(lambda: mounted.tree.releases == 1, what="release")
    assert mounted.session.inflight == 0


async def test_many_blocked_readers(mounted: Mounted) -> None:
    n = 60
    tree = mounted.tree
    limiter = trio.CapacityLimiter(n + 10)
    results: list[bytes] = []

    def reader() -> bytes:
        fd = os.open(mounted.p("chan"), os.O_RDONLY)
        try:
            return os.read(fd, 100)
        finally:
            os.close(fd)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            async def one() -> None:
                results.append(await trio.to_thread.run_sync(reader, limiter=limiter))
            nursery.start_soon(one)
        await wait_for(lambda: sum(h.readers for h in tree.handles) == n, timeout=15,
                       what=f"{n} blocked readers")
        # the others are still served, promptly
        t0 = time.monotonic()
        for _ in range(20):
            assert await blocking(read_file, mounted.p("text")) == TEXT.encode()
        await blocking(os.listdir, mounted.path)
        assert time.monotonic() - t0 < 3
        assert mounted.session.inflight == n
        for i, h in enumerate(tree.handles):
            h.feed(f"r{i}".encode())
    assert sorted(results) == sorted(f"r{i}".encode() for i in range(n))
    await wait_for(lambda: tree.releases == n, what="all released")


async def test_blocked_write_does_not_block_other_writers(mounted: Mounted) -> None:
    """Two opens of one node: a write that waits must not hold up the other's writes
    (the kernel's inode lock, see HANDLE_FILE_SIZE)."""
    fd1 = await blocking(os.open, mounted.p("chan"), os.O_WRONLY)
    fd2 = await blocking(os.open, mounted.p("chan"), os.O_WRONLY)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocking, os.write, fd1, b"block me")
            await wait_for(lambda: mounted.tree.handles[0].readers == 1, what="blocked write")
            try:
                with trio.fail_after(3):
                    assert await blocking(os.write, fd2, b"free") == 4
            finally:
                mounted.tree.gate.set()
    finally:
        await blocking(os.close, fd1)
        await blocking(os.close, fd2)


async def test_raising_handler_gives_eio_and_session_serves_on(mounted: Mounted) -> None:
    def run() -> tuple[int, int]:
        fd = os.open(mounted.p("boom"), os.O_RDWR)
        try:
            with pytest.raises(OSError) as r:
                os.read(fd, 10)
            with pytest.raises(OSError) as w:
                os.write(fd, b"x")
            return r.value.errno, w.value.errno  # type: ignore[return-value]
        finally:
            os.close(fd)

    assert await blocking(run) == (errno.EIO, errno.ENOSPC)
    assert mounted.session.counters["handler_error"] == 1
    assert await blocking(read_file, mounted.p("text")) == TEXT.encode()


async def test_dynamic_directory(mounted: Mounted) -> None:
    dyn = mounted.p("dyn")
    assert await blocking(os.listdir, dyn) == ["one"]
    assert await blocking(read_file, os.path.join(dyn, "one")) == b"one\n"
    mounted.tree.dyn_names = {"two", "three"}
    assert sorted(await blocking(os.listdir, dyn)) == ["three", "two"]
    assert not await blocking(os.path.exists, os.path.join(dyn, "one"))
    assert await blocking(read_file, os.path.join(dyn, "two")) == b"two\n"


async def test_permissions(mounted: Mounted) -> None:
    code = (
        "import os, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "def try_open(p, flags):\n"
        "    try:\n"
        "        os.close(os.open(p, flags)); return 'ok'\n"
        "    except OSError as e:\n"
        "        return e.strerror\n"
        f"m = {mounted.path!r}\n"
        "print(try_open(m + '/secret', os.O_RDONLY), try_open(m + '/chan', os.O_RDWR),"
        "      try_open(m + '/text', os.O_RDONLY), try_open(m + '/text', os.O_WRONLY), sep='|')\n"
    )
    out = await trio.run_process([sys.executable, "-c", code], capture_stdout=True,
                                 capture_stderr=True)
    secret, chan, text_r, text_w = out.stdout.decode().strip().split("|")
    assert secret == "Permission denied"
    assert chan == "ok" and text_r == "ok"
    assert text_w == "Permission denied"
    # root may open the 0600 node
    await blocking(lambda: os.close(os.open(mounted.p("secret"), os.O_RDONLY)))


async def test_several_mounts_in_one_process(fuse_base: str) -> None:
    trees = [FuseTree(), FuseTree()]
    paths = [os.path.join(fuse_base, "a", "dev", "socket"), os.path.join(fuse_base, "b")]
    async with trio.open_nursery() as nursery:
        for tree, path in zip(trees, paths, strict=True):
            await nursery.start(serve_mount, tree.root, path)
        for path in paths:
            assert await blocking(read_file, os.path.join(path, "text")) == TEXT.encode()
        nursery.cancel_scope.cancel()
    for path in paths:
        assert not mounted_fuse_at(path)
    # the directories serve_mount made are gone again, the ones it found stay
    assert os.listdir(fuse_base) == []


async def test_cancel_unmounts_and_removes_dir(fuse_base: str) -> None:
    path = os.path.join(fuse_base, "m")
    os.mkdir(os.path.join(fuse_base, "kept"))
    kept = os.path.join(fuse_base, "kept")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_mount, FuseTree().root, path)
        await nursery.start(serve_mount, FuseTree().root, kept)
        assert mounted_fuse_at(path) and mounted_fuse_at(kept)
        nursery.cancel_scope.cancel()
    assert not mounted_fuse_at(path) and not os.path.exists(path)
    assert not mounted_fuse_at(kept) and os.path.isdir(kept)


async def test_exception_in_serving_task_unmounts(fuse_base: str) -> None:
    path = os.path.join(fuse_base, "m")

    class Bang(Exception):
        pass

    with pytest.raises(BaseExceptionGroup) as ei:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_mount, FuseTree().root, path)
            raise Bang
    assert ei.value.subgroup(Bang) is not None
    assert not mounted_fuse_at(path) and not os.path.exists(path)


def _start_server(path: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.rmgr.fuse_tree", path], cwd=REPO,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"server did not start: {line!r}")
    return proc


async def test_sigterm_unmounts(fuse_base: str) -> None:
    path = os.path.join(fuse_base, "srv")
    proc = await blocking(_start_server, path)
    try:
        assert mounted_fuse_at(path)
        assert await blocking(read_file, os.path.join(path, "text")) == TEXT.encode()
        proc.send_signal(signal.SIGTERM)
        assert await blocking(proc.wait, 10) == 0
        assert not mounted_fuse_at(path)
        assert not os.path.exists(path)
    finally:
        proc.kill()
        force_unmount(path)


async def test_recovery_after_sigkill(fuse_base: str) -> None:
    path = os.path.join(fuse_base, "srv")
    proc = await blocking(_start_server, path)
    try:
        proc.kill()
        await blocking(proc.wait, 10)
        assert mounted_fuse_at(path)  # left behind
        with pytest.raises(OSError) as ei:
            await blocking(os.stat, path)
        assert ei.value.errno == errno.ENOTCONN
        # the next start at this prefix detects and cleans it ...
        assert await blocking(check_mountpoint, path) is None
        assert not mounted_fuse_at(path)
        # ... and serves there again
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_mount, FuseTree().root, path)
            assert await blocking(read_file, os.path.join(path, "text")) == TEXT.encode()
            nursery.cancel_scope.cancel()
        assert not mounted_fuse_at(path)
    finally:
        proc.kill()
        force_unmount(path)


async def test_serve_mount_cleans_stale_mount_itself(fuse_base: str) -> None:
    path = os.path.join(fuse_base, "srv")
    proc = await blocking(_start_server, path)
    proc.kill()
    await blocking(proc.wait, 10)
    try:
        assert mounted_fuse_at(path)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_mount, FuseTree().root, path)
            assert await blocking(read_file, os.path.join(path, "text")) == TEXT.encode()
            nursery.cancel_scope.cancel()
        assert not mounted_fuse_at(path)
    finally:
        force_unmount(path)


async def test_back_to_back_round_trips_from_another_process(mounted: Mounted) -> None:
    """200 synchronous write/read round trips from another process (the busy-poll path:
    the reader stays awake after each request) are all answered, in order. Whether the
    poll catches them depends on the machine's load; test_fuse_protocol checks that it
    does when the next request comes in time."""
    script = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "for i in range(200):\n"
        "    os.write(fd, b'm%03d' % i)\n"
        "    assert os.read(fd, 100) == b'm%03d' % i\n"
        "print('ok')\n")
    done = await trio.run_process([sys.executable, "-c", script, mounted.p("chan")],
                                  capture_stdout=True)
    assert done.stdout == b"ok\n"
