"""The node API: what the stack and modules publish through a FUSE mount.

Four kinds of node (like the pieces a QNX resource manager attaches):

* ``Directory``   - fixed entries plus, optionally, entries computed on each lookup/readdir.
* ``TextFile``    - read-only text generated when opened (one snapshot per open, so a reader
                    that reads in pieces sees one consistent table).
* ``ControlFile`` - takes text commands by write; each write runs one command and answers
                    with an errno (the write fails) and a message (read back on the same fd).
* ``HandleFile``  - each open creates a new ``Handle`` object (a socket, a bpf reader) that
                    receives read/write/ioctl/poll/release for that open file description.

Handlers signal errors by raising ``OSError(errno, message)``; the FUSE session turns any
other exception into EIO, counts it and logs it once.
"""

from __future__ import annotations

import errno
import os
import select
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLERR = select.POLLERR
POLLHUP = select.POLLHUP
POLLPRI = select.POLLPRI
POLLRDNORM = getattr(select, "POLLRDNORM", 0x40)
POLLWRNORM = getattr(select, "POLLWRNORM", 0x100)

#: Largest single write a control file accepts (larger: EFBIG, which the FUSE session
#: counts as ``write_too_big`` and logs the first time).
CONTROL_WRITE_MAX = 64 * 1024


class Gather(list[bytes | bytearray | memoryview]):
    """A read's answer in pieces (a stream socket's queued chunks): the FUSE session
    writes them after its header in one ``writev``, no join; ``bytes()`` joins them for
    a reader that needs one buffer (Qnet's relay). The pieces must not change after the
    handler returns them."""

    __slots__ = ("size",)

    def __init__(self, parts: list[bytes | bytearray | memoryview], size: int) -> None:
        super().__init__(parts)
        self.size = size  # the bytes in all the pieces

    def __bytes__(self) -> bytes:
        return b"".join(self)


#: what a handler's read returns
ReadResult = bytes | bytearray | memoryview | Gather


@dataclass
class Caller:
    """Who is asking: from the FUSE request header."""

    uid: int = 0
    gid: int = 0
    pid: int = 0

    @property
    def is_root(self) -> bool:
        return self.uid == 0


@dataclass
class OpenRequest:
    caller: Caller
    flags: int  # os.O_* flags given to open(2)

    @property
    def nonblock(self) -> bool:
        return bool(self.flags & os.O_NONBLOCK)


@dataclass
class IoRequest:
    """One read/write/ioctl. ``nonblock`` comes from the request's own flags, so fcntl
    O_NONBLOCK after open is honoured."""

    caller: Caller
    nonblock: bool


class Node:
    """Base of every published node. ``mode`` holds permission bits only."""

    file_type = stat.S_IFREG

    def __init__(self, mode: int = 0o444, uid: int = 0, gid: int = 0) -> None:
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime_ns = 0

    def size(self) -> int:
        return 0


_N = TypeVar("_N", bound=Node)


class Directory(Node):
    file_type = stat.S_IFDIR

    def __init__(self, entries: Mapping[str, Node] | None = None, *, mode: int = 0o755,
                 dynamic: Callable[[], Mapping[str, Node]] | None = None,
                 uid: int = 0, gid: int = 0) -> None:
        super().__init__(mode, uid, gid)
        self.entries: dict[str, Node] = dict(entries or {})
        self.dynamic = dynamic

    def children(self) -> dict[str, Node]:
        if self.dynamic is None:
            return self.entries
        merged = dict(self.entries)
        merged.update(self.dynamic())
        return merged

    def lookup(self, name: str) -> Node | None:
        node = self.entries.get(name)
        if node is None and self.dynamic is not None:
            node = self.dynamic().get(name)
        return node

    def add(self, name: str, node: _N) -> _N:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"bad node name {name!r}")
        self.entries[name] = node
        return node

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)

    def mkdirs(self, path: str, mode: int = 0o755) -> Directory:
        """Return the directory at ``a/b/c`` under this one, creating missing parts."""
        here: Directory = self
        for part in [p for p in path.split("/") if p]:
            nxt = here.entries.get(part)
            if nxt is None:
                nxt = here.add(part, Directory(mode=mode))
            if not isinstance(nxt, Directory):
                raise ValueError(f"{part!r} in {path!r} is not a directory")
            here = nxt
        return here


class Handle:
    """One open file description of a ``HandleFile`` (or a control/text file).

    Subclasses override what they support; the defaults answer as a plain file would not
    (EINVAL for read/write, ENOTTY for ioctl). An ioctl answered ENOTTY (or ENOSYS) is
    counted by the session as ``ioctl_unknown`` and the first one logged, so a handler
    needs no logging of its own for commands it does not know. ``notify()`` must be
    called whenever the poll mask may have changed: the session then sends
    FUSE_NOTIFY_POLL to waiters.
    """

    def __init__(self) -> None:
        self._poll_listeners: list[Callable[[], None]] = []

    async def read(self, size: int, req: IoRequest) -> ReadResult:
        raise OSError(errno.EINVAL, "not readable")

    async def write(self, data: memoryview, req: IoRequest) -> int:
        raise OSError(errno.EINVAL, "not writable")

    async def ioctl(self, cmd: int, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        """Restricted ioctl: ``arg`` holds _IOC_SIZE(cmd) bytes for _IOW/_IOWR; return
        (result, out_bytes) where out_bytes is _IOC_SIZE(cmd) long for _IOR/_IOWR."""
        raise OSError(errno.ENOTTY, f"unknown ioctl {cmd:#x}")

    def poll(self) -> int:
        return POLLIN | POLLOUT

    def release(self) -> None | Awaitable[None]:
        return None

    def flush(self) -> None:
        return None

    # -- readiness notification ------------------------------------------------------
    def add_poll_listener(self, fn: Callable[[], None]) -> None:
        if fn not in self._poll_listeners:
            self._poll_listeners.append(fn)

    def remove_poll_listener(self, fn: Callable[[], None]) -> None:
        if fn in self._poll_listeners:
            self._poll_listeners.remove(fn)

    def notify(self) -> None:
        for fn in list(self._poll_listeners):
            fn()


class HandleFile(Node):
    """Each open calls ``factory(open_request)`` to make a new Handle (may be async)."""

    def __init__(self, factory: Callable[[OpenRequest], Handle | Awaitable[Handle]], *,
                 mode: int = 0o666, uid: int = 0, gid: int = 0) -> None:
        super().__init__(mode, uid, gid)
        self.factory = factory


class _SnapshotHandle(Handle):
    """Serves reads of a fixed byte string at increasing offsets (the session tracks the
    offset for stream files by counting what it handed out)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data
        self.pos = 0

    async def read(self, size: int, req: IoRequest) -> bytes:
        chunk = self.data[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk


class TextFile(Node):
    """Read-only text generated on open."""

    def __init__(self, render: Callable[[], str | bytes], *, mode: int = 0o444,
                 uid: int = 0, gid: int = 0) -> None:
        super().__init__(mode, uid, gid)
        self.render = render

    def open(self, req: OpenRequest) -> Handle:
        text = self.render()
        return _SnapshotHandle(text.encode() if isinstance(text, str) else bytes(text))


CommandHandler = Callable[[str, Caller], "str | Awaitable[str]"]


class _ControlHandle(Handle):
    def __init__(self, node: ControlFile) -> None:
        super().__init__()
        self.node = node
        self.reply: bytes | None = None
        self.pos = 0

    async def read(self, size: int, req: IoRequest) -> bytes:
        if self.reply is None:
            self.reply = _encode(self.node.render()) if self.node.render else b""
            self.pos = 0
        chunk = self.reply[self.pos:self.pos + size]
        self.pos += len(chunk)
        return chunk

    async def write(self, data: memoryview, req: IoRequest) -> int:
        if len(data) > CONTROL_WRITE_MAX:
            raise OSError(errno.EFBIG, f"control write of {len(data)} bytes is over "
                                       f"{CONTROL_WRITE_MAX}")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            self._set_reply("error: EINVAL: command is not UTF-8 text\n")
            raise OSError(errno.EINVAL, "command is not UTF-8 text") from None
        try:
            result: Any = self.node.handler(text.strip(), req.caller)
            if isinstance(result, Awaitable):
                result = await result
        except OSError as exc:
            code = exc.errno or errno.EIO
            msg = exc.strerror or os.strerror(code)
            self._set_reply(f"error: {errno.errorcode.get(code, code)}: {msg}\n")
            raise OSError(code, msg) from None
        self._set_reply(result if result else "ok\n")
        return len(data)

    def _set_reply(self, text: str) -> None:
        self.reply = text.encode() if text.endswith("\n") else (text + "\n").encode()
        self.pos = 0


def _encode(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else bytes(text)


class ControlFile(Node):
    """A text command file. ``handler(command, caller)`` returns the reply text or raises
    OSError(errno, message). Reading before any write gives ``render()`` (the current
    state), after a write the last reply ("ok" or "error: ENAME: message")."""

    def __init__(self, handler: CommandHandler, render: Callable[[], str | bytes] | None = None,
                 *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        super().__init__(mode, uid, gid)
        self.handler = handler
        self.render = render

    def open(self, req: OpenRequest) -> Handle:
        return _ControlHandle(self)


async def open_node(node: Node, req: OpenRequest) -> Handle:
    """Create the Handle for one open of ``node`` (the session calls this)."""
    if isinstance(node, HandleFile):
        made = node.factory(req)
        if isinstance(made, Awaitable):
            made = await made
        return made
    if isinstance(node, (TextFile, ControlFile)):
        return node.open(req)
    raise OSError(errno.EISDIR if isinstance(node, Directory) else errno.EINVAL, "cannot open")
