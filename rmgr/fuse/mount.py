"""Mounting a FUSE file system: fusermount3 mounts and passes the /dev/fuse fd back over
the socket named by ``_FUSE_COMMFD`` (SCM_RIGHTS), so nothing here needs privileges
fusermount3 does not have; unmounting is lazy (``fusermount3 -u -z``) and happens on
every path out of ``mounted``, a stale mount of a dead server is cleaned before mounting
over it, and a mountpoint directory made for the mount is removed after it.

Nothing here speaks the protocol: session.py's ``serve_mount`` serves what is mounted.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

log = logging.getLogger("io-pkt.rmgr")


def _clean_fsname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.:/@" else "_" for c in name) or "io-pkt"


async def fusermount(mountpoint: str, options: str) -> int:
    """Mount with fusermount3 and return the /dev/fuse fd it passes back (SCM_RIGHTS)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        proc = await trio.run_process(
            ["fusermount3", "-o", options, "--", mountpoint], env=env,
            pass_fds=(theirs.fileno(),), capture_stdout=True, capture_stderr=True, check=False)
        theirs.close()
        ours.setblocking(False)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
        except BlockingIOError:
            fds = []
        if not fds:
            err = proc.stderr.decode(errors="replace").strip() if proc.stderr else ""
            raise OSError(errno.EIO, f"fusermount3 could not mount {mountpoint}: "
                                     f"{err or f'exit status {proc.returncode}'}")
        for extra in fds[1:]:
            os.close(extra)
        fd = fds[0]
        os.set_inheritable(fd, False)  # a child keeping it would keep a dead mount "alive"
        os.set_blocking(fd, False)
        return fd
    finally:
        ours.close()
        theirs.close()


async def fuse_unmount(mountpoint: str) -> None:
    """Lazy unmount (fusermount3 -u -z); shielded, bounded, never raises."""
    with trio.CancelScope(shield=True):
        with trio.move_on_after(10):
            try:
                proc = await trio.run_process(["fusermount3", "-u", "-z", "--", mountpoint],
                                              capture_stdout=True, capture_stderr=True,
                                              check=False)
                if proc.returncode != 0 and _fuse_mounted_at(mountpoint):
                    log.error("fusermount3 -u -z %s: %s", mountpoint,
                              proc.stderr.decode(errors="replace").strip())
            except OSError as exc:
                log.error("fusermount3 -u -z %s: %s", mountpoint, exc)


def _fuse_mounted_at(path: str) -> bool:
    from stack.preflight import mounted_fuse_at

    return mounted_fuse_at(path)


def _make_dirs(path: str) -> list[str]:
    """mkdir -p; the directories made, outermost first."""
    made: list[str] = []
    todo: list[str] = []
    p = path
    while not os.path.isdir(p):
        todo.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(todo):
        try:
            os.mkdir(d, 0o755)
            made.append(d)
        except FileExistsError:
            pass
    return made


async def _clean_stale(path: str) -> None:
    """A FUSE mount whose server died answers ENOTCONN: lazily unmount it first."""
    if not _fuse_mounted_at(path):
        return
    try:
        await trio.to_thread.run_sync(os.stat, path, abandon_on_cancel=True)
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED):
            log.warning("%s: stale FUSE mount of a dead server; cleaning it", path)
            await fuse_unmount(path)



@asynccontextmanager
async def mounted(mountpoint: str, *, fsname: str = "io-pkt",
                  allow_other: bool = False, file: bool = False) -> AsyncIterator[int]:
    """Mount at ``mountpoint`` (made if missing) and yield the /dev/fuse fd. On every exit
    path - the body returning, raising or being cancelled, or the mount failing - the
    mount is lazily unmounted (shielded), the fd closed, and the directories made for it
    removed again. ``file``: the mount's root is a file (fusermount3 takes the root's
    type from the mountpoint's), so the mountpoint is an empty regular file, made if
    missing and removed again if made."""
    path = os.path.abspath(mountpoint)
    made = _make_dirs(os.path.dirname(path) if file else path)
    made_file = False
    if file and not os.path.lexists(path):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        made_file = True
    fd = -1
    try:
        await _clean_stale(path)
        opts = ["rw", "nosuid", "nodev", "default_permissions",
                f"fsname={_clean_fsname(fsname)}", "subtype=io-pkt"]
        if allow_other:
            opts.append("allow_other")
        fd = await fusermount(path, ",".join(opts))
        yield fd
    finally:
        if fd >= 0:
            with trio.CancelScope(shield=True):
                await fuse_unmount(path)
            os.close(fd)
        if made_file:
            try:
                os.unlink(path)
            except OSError:
                pass
        for d in reversed(made):
            try:
                os.rmdir(d)
            except OSError:
                pass
