"""The bpf device: live pcap streams of an interface's frames, filters, injection.

Files (served by ``lsm-bpf`` at ``<prefix>/dev/bpf``; see docs/pf-bpf.md):

``clone``   open, attach with the ``BIOCSETIF`` ioctl (a 16-byte interface name), read
            a pcap stream; the other ioctls below set a filter, read the statistics...
``IF``      one per interface (``tap0``, ``lo0``...): open = attached to IF. For shells:
            ``cat $SOCK/dev/bpf/tap0 | tcpdump -r -``. ``IF,blen=SIZE,snaplen=N``
            (not listed; any of the options) opens IF with that buffer size (bytes, or
            with a K/M suffix) and snap length: a file opened attached cannot take
            BIOCSBLEN any more (EINVAL, as BSD after BIOCSETIF).
``ctl``     text commands: ``filter IF`` + newline + a ``tcpdump -ddd`` program sets
            the filter new opens of ``IF`` get (``filter IF`` alone clears it);
            reading lists the readers with their counters.

A read returns the pcap global header first (LINKTYPE_ETHERNET, or the link type chosen
with ``BIOCSDLT`` / ``IF,dlt=127`` where the interface offers another one: a wireless
interface's DLT_IEEE802_11_RADIO, radiotap + 802.11; microsecond timestamps), then records as frames arrive; it blocks while there is nothing (EAGAIN
with O_NONBLOCK) and returns end-of-file once the interface is gone. A write is one
Ethernet frame, sent out of the interface as is. Each reader has a bounded buffer
(``BIOCSBLEN`` before ``BIOCSETIF``, or ``blen=``; default 2 MiB; a read returns at most
that much): a reader that does not keep up loses frames, counted in ``drop``
(``BIOCGSTATS``: ``bs_recv`` every frame seen, ``bs_drop`` those lost, as BSD), listed
in ``ctl`` and logged once per reader, and never slows the stack.
"""

from __future__ import annotations

import errno
import functools
import logging
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import trio

from rmgr.nodes import (
    POLLIN,
    POLLOUT,
    Caller,
    ControlFile,
    Directory,
    Handle,
    HandleFile,
    IoRequest,
    Node,
    OpenRequest,
)
from stack.bpf.counters import BPF_COUNTERS
from stack.bpf.vm import INSN_SIZE, BpfError, Filter, parse_ddd, unpack
from stack.counters import Counters
from stack.packet import Buffer

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack
    from stack.l2.iface import Interface

log = logging.getLogger("io-pkt.bpf")

LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144
DEFAULT_BUFSIZE = 2 * 1024 * 1024
MIN_BUFSIZE = 4096
MAX_BUFSIZE = 64 * 1024 * 1024
IFNAMSIZ = 16
#: most instructions BIOCSETF carries (fixed-size struct: u32 count + insns)
SETF_MAXINSNS = 512

_REC = struct.Struct("<IIII")
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, DEFAULT_SNAPLEN,
                          LINKTYPE_ETHERNET)


def pcap_header(dlt: int) -> bytes:
    return PCAP_HEADER[:-4] + struct.pack("<I", dlt)


# -- ioctl encoding (asm-generic/ioctl.h) ------------------------------------------------
def _ioc(d: int, t: str, nr: int, size: int) -> int:
    return (d << 30) | (size << 16) | (ord(t) << 8) | nr


def _IO(t: str, nr: int) -> int:  # noqa: N802 - the C macro's name
    return _ioc(0, t, nr, 0)


def _IOR(t: str, nr: int, size: int) -> int:  # noqa: N802
    return _ioc(2, t, nr, size)


def _IOW(t: str, nr: int, size: int) -> int:  # noqa: N802
    return _ioc(1, t, nr, size)


def _IOWR(t: str, nr: int, size: int) -> int:  # noqa: N802
    return _ioc(3, t, nr, size)


#: The BSD names and numbers, with fixed-size arguments (FUSE restricted ioctls).
BIOCGBLEN = _IOR("B", 102, 4)          # u32 buffer size
BIOCSBLEN = _IOWR("B", 102, 4)         # u32 in, the size granted out
BIOCSETF = _IOW("B", 103, 4 + SETF_MAXINSNS * INSN_SIZE)  # u32 count + bpf_insn[512]
BIOCFLUSH = _IO("B", 104)
BIOCPROMISC = _IO("B", 105)
BIOCGDLT = _IOR("B", 106, 4)
BIOCSDLT = _IOW("B", 118, 4)          # u32 link type (NetBSD)
BIOCGETIF = _IOR("B", 107, IFNAMSIZ)
BIOCSETIF = _IOW("B", 108, IFNAMSIZ)   # char name[16]
BIOCGSTATS = _IOR("B", 111, 8)         # struct bpf_stat {u32 bs_recv; u32 bs_drop;}
BIOCIMMEDIATE = _IOW("B", 112, 4)      # accepted; reads are always immediate
BIOCGSNAPLEN = _IOR("B", 120, 4)
BIOCSSNAPLEN = _IOW("B", 121, 4)
BIOCSETFNONE = _IO("B", 122)           # remove the filter (our addition)


class BpfReader(Handle):
    """One open of ``clone`` or ``IF``: attached to at most one interface."""

    def __init__(self, dev: BpfDevice, caller: Caller) -> None:
        super().__init__()
        self.dev = dev
        self.caller = caller
        self.iface: Interface | None = None
        self.filter: Filter | None = None
        self.snaplen = DEFAULT_SNAPLEN
        self.bufsize = DEFAULT_BUFSIZE
        self.buf = bytearray()
        self.recv = 0  # frames seen (bs_recv; before the filter, as BSD)
        self.drop = 0  # frames lost to a full buffer (bs_drop)
        self.capt = 0  # frames queued
        self.drop_logged = False
        self.promisc = False
        self.dlt = LINKTYPE_ETHERNET
        self.closed = False  # the interface went away: EOF once drained
        self._hdr_left = 0  # bytes of the pcap header not read yet
        self._wake = trio.Event()
        dev.readers.append(self)

    # -- attachment ------------------------------------------------------------------
    def attach(self, iface: Interface) -> None:
        if self.iface is iface:
            return
        self.detach()
        taps = iface.taps if self.dlt == LINKTYPE_ETHERNET else iface.dlt_taps.get(self.dlt)
        if taps is None:
            raise OSError(errno.EINVAL, f"{iface.name} has no link type {self.dlt}")
        self.iface = iface
        self.buf = bytearray(pcap_header(self.dlt))
        self._hdr_left = len(self.buf)
        self.closed = False
        taps.append(self.tap)
        self._wakeup()

    def detach(self) -> None:
        iface = self.iface
        if iface is None:
            return
        for taps in (iface.taps, *iface.dlt_taps.values()):
            if self.tap in taps:
                taps.remove(self.tap)
        if self.promisc:
            iface.set_promisc(False)
            self.promisc = False
        self.iface = None

    def iface_gone(self) -> None:
        self.detach()
        self.closed = True
        self._wakeup()

    # -- the data path (called synchronously for every frame) --------------------------
    def tap(self, iface: Interface, direction: str, bufs: Sequence[Buffer]) -> None:
        self.recv += 1
        frame = bufs[0] if len(bufs) == 1 else b"".join(bufs)
        wirelen = len(frame)
        snap = self.snaplen
        f = self.filter
        if f is not None:
            keep = f(frame, wirelen)
            if not keep:
                return
            snap = min(snap, keep)
        cap = wirelen if wirelen <= snap else snap
        buf = self.buf
        if len(buf) + 16 + cap > self.bufsize:
            self.drop += 1
            self.dev.counters["drops"] += 1
            if not self.drop_logged:
                self.drop_logged = True
                log.warning("bpf: a reader of %s (pid %d) is losing frames: its %d-byte "
                            "buffer is full (a bigger one: BIOCSBLEN or %s,blen=SIZE; "
                            "counts: BIOCGSTATS, dev/bpf/ctl)", iface.name, self.caller.pid,
                            self.bufsize, iface.name)
            return
        was_empty = not buf
        t = time.time()
        sec = int(t)
        buf += _REC.pack(sec, int((t - sec) * 1e6), cap, wirelen)
        buf += frame[:cap] if cap < wirelen else frame
        self.capt += 1
        if was_empty:
            self._wakeup()

    def _wakeup(self) -> None:
        self._wake.set()
        self.notify()

    # -- file operations ---------------------------------------------------------------
    async def read(self, size: int, req: IoRequest) -> bytes:
        """Up to ``size`` bytes of the stream: at most the buffer size (BIOCSBLEN), since
        that is all the buffer holds."""
        while not self.buf:
            if self.closed:
                return b""
            if self.iface is None:
                raise OSError(errno.EINVAL, "not attached to an interface (BIOCSETIF)")
            if req.nonblock:
                raise OSError(errno.EAGAIN, "no frames")
            self._wake = trio.Event()
            await self._wake.wait()
        n = min(size, len(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        if self._hdr_left:
            self._hdr_left = max(0, self._hdr_left - n)
        return out

    async def write(self, data: memoryview, req: IoRequest) -> int:
        iface = self.iface
        if iface is None:
            raise OSError(errno.ENXIO if self.closed else errno.EINVAL,
                          "not attached to an interface")
        if not self.caller.is_root:
            raise OSError(errno.EPERM, "injecting frames needs root")
        if self.dlt != LINKTYPE_ETHERNET:
            raise OSError(errno.EINVAL, "frames are injected as Ethernet frames (DLT_EN10MB)")
        n = len(data)
        if n < 14:
            raise OSError(errno.EINVAL, "a frame has at least an Ethernet header (14 bytes)")
        if n > max(iface.mtu + 18, 65535 if "tso4" in iface.offloads else 0):
            raise OSError(errno.EMSGSIZE, f"frame of {n} bytes is over the MTU of {iface.name}")
        if not iface.up:
            raise OSError(errno.ENETDOWN, f"{iface.name} is down")
        if not iface.output([bytes(data)]):
            raise OSError(errno.ENOBUFS, "the driver dropped the frame")
        self.dev.counters["injected"] += 1
        return n

    def poll(self) -> int:
        return (POLLIN if self.buf or self.closed else 0) | POLLOUT

    async def ioctl(self, cmd: int, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        if cmd == BIOCSETIF:
            name = arg.split(b"\0", 1)[0].decode(errors="replace")
            iface = self.dev.stack.interfaces.get(name)
            if iface is None:
                raise OSError(errno.ENXIO, f"no interface {name!r}")
            self.attach(iface)
            return 0, b""
        if cmd == BIOCGETIF:
            if self.iface is None:
                raise OSError(errno.EINVAL, "not attached")
            return 0, self.iface.name.encode()[:IFNAMSIZ - 1].ljust(IFNAMSIZ, b"\0")
        if cmd == BIOCSETF:
            (count,) = struct.unpack_from("=I", arg)
            if count == 0:
                self.filter = None
            else:
                if count > SETF_MAXINSNS:
                    raise OSError(errno.EINVAL, f"at most {SETF_MAXINSNS} instructions")
                try:
                    self.filter = Filter(unpack(arg[4:], count))
                except BpfError as exc:
                    raise OSError(errno.EINVAL, str(exc)) from None
            self._flush()
            return 0, b""
        if cmd == BIOCSETFNONE:
            self.filter = None
            return 0, b""
        if cmd == BIOCGSTATS:
            return 0, struct.pack("=II", self.recv & 0xFFFFFFFF, self.drop & 0xFFFFFFFF)
        if cmd == BIOCFLUSH:
            self._flush()
            return 0, b""
        if cmd == BIOCPROMISC:
            if self.iface is None:
                raise OSError(errno.EINVAL, "not attached")
            if not self.promisc:
                self.iface.set_promisc(True)
                self.promisc = True
            return 0, b""
        if cmd == BIOCGBLEN:
            return 0, struct.pack("=I", self.bufsize)
        if cmd == BIOCSBLEN:
            if self.iface is not None or self.closed:
                # BSD: the buffer is allocated at BIOCSETIF and fixed from then on
                raise OSError(errno.EINVAL, "BIOCSBLEN must come before BIOCSETIF "
                              "(for IF files: open IF,blen=SIZE)")
            (want,) = struct.unpack_from("=I", arg)
            self.bufsize = clamp_bufsize(want)
            return 0, struct.pack("=I", self.bufsize)
        if cmd == BIOCGDLT:
            return 0, struct.pack("=I", self.dlt)
        if cmd == BIOCSDLT:
            (dlt,) = struct.unpack_from("=I", arg)
            iface = self.iface
            if iface is None or (dlt != LINKTYPE_ETHERNET and dlt not in iface.dlt_taps):
                raise OSError(errno.EINVAL, f"link type {dlt} not offered")
            if dlt != self.dlt:
                self.detach()
                self.dlt = dlt
                self.attach(iface)
            return 0, b""
        if cmd == BIOCGSNAPLEN:
            return 0, struct.pack("=I", self.snaplen)
        if cmd == BIOCSSNAPLEN:
            (snap,) = struct.unpack_from("=I", arg)
            self.snaplen = max(14, min(DEFAULT_SNAPLEN, snap))
            return 0, b""
        if cmd == BIOCIMMEDIATE:
            return 0, b""
        raise OSError(errno.ENOTTY, f"unknown bpf ioctl {cmd:#x}")

    def _flush(self) -> None:
        """Drop queued frames and zero the counters (BSD reset_d: BIOCFLUSH, BIOCSETF),
        keeping what is unread of the pcap header."""
        hdr = pcap_header(self.dlt)
        self.buf = bytearray(hdr[len(hdr) - self._hdr_left:])
        self.recv = self.drop = self.capt = 0

    def release(self) -> None:
        self.detach()
        if self in self.dev.readers:
            self.dev.readers.remove(self)


class BpfDevice:
    """The node tree and the readers of one stack."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.counters = Counters("bpf", BPF_COUNTERS)
        self.readers: list[BpfReader] = []
        #: the filter new opens of <prefix>/dev/bpf/IF get (set through ctl)
        self.default_filters: dict[str, Filter] = {}
        self._if_nodes: dict[str, HandleFile] = {}
        self.tree = Directory(dynamic=self._iface_nodes)
        self.tree.add("clone", HandleFile(self._open_clone, mode=0o600))
        self.tree.add("ctl", ControlFile(self._command, self.render, mode=0o600))
        stack.iface_listeners.append(self._iface_event)

    def close(self) -> None:
        if self._iface_event in self.stack.iface_listeners:
            self.stack.iface_listeners.remove(self._iface_event)
        for r in list(self.readers):
            r.iface_gone()

    def _iface_nodes(self) -> Mapping[str, Node]:
        names = self.stack.interfaces
        for gone in [n for n in self._if_nodes if n not in names]:
            del self._if_nodes[gone]
        for name in names:
            if name not in self._if_nodes:
                self._if_nodes[name] = HandleFile(
                    functools.partial(self._open_iface, name, StreamOptions()), mode=0o600)
        return _IfaceNodes(self, dict(self._if_nodes))

    def _open_clone(self, req: OpenRequest) -> BpfReader:
        self.counters["opens"] += 1
        return BpfReader(self, req.caller)

    def _open_iface(self, name: str, opts: StreamOptions, req: OpenRequest) -> BpfReader:
        iface = self.stack.interfaces.get(name)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {name}")
        self.counters["opens"] += 1
        r = BpfReader(self, req.caller)
        r.filter = self.default_filters.get(name)
        if opts.bufsize is not None:
            r.bufsize = opts.bufsize
        if opts.snaplen is not None:
            r.snaplen = opts.snaplen
        if opts.dlt is not None:
            r.dlt = opts.dlt
        r.attach(iface)
        return r

    def _iface_event(self, event: str, iface: Interface) -> None:
        if event == "detach":
            for r in list(self.readers):
                if r.iface is iface:
                    r.iface_gone()

    def _command(self, text: str, caller: Caller) -> str:
        if not caller.is_root:
            raise OSError(errno.EPERM, "needs root")
        first, _, rest = text.partition("\n")
        words = first.split()
        if len(words) == 2 and words[0] == "filter":
            name = words[1]
            if not rest.strip():
                self.default_filters.pop(name, None)
                return f"filter {name} cleared\n"
            try:
                f = Filter(parse_ddd(rest))
            except BpfError as exc:
                raise OSError(errno.EINVAL, f"bad filter program: {exc}") from None
            self.default_filters[name] = f
            return f"filter {name} set ({len(f)} instructions)\n"
        raise OSError(errno.EINVAL, "expected: filter IF, then a tcpdump -ddd program")

    def render(self) -> str:
        lines = ["iface    pid      recv     drop     capt  buffered      blen  filter\n"]
        for r in self.readers:
            lines.append(f"{r.iface.name if r.iface else '-':8} {r.caller.pid:<8} {r.recv:<8} "
                         f"{r.drop:<8} {r.capt:<5} {len(r.buf):>9} {r.bufsize:>9}  "
                         f"{len(r.filter) if r.filter else '-'}\n")
        for name, f in self.default_filters.items():
            lines.append(f"default filter {name}: {len(f)} instructions\n")
        return "".join(lines)


def clamp_bufsize(want: int) -> int:
    """The buffer size granted for a request (BSD clamps the same way)."""
    return max(MIN_BUFSIZE, min(MAX_BUFSIZE, want))


class StreamOptions:
    """``IF,blen=SIZE,snaplen=N``: what an open of an interface file sets before it
    attaches (the BIOCSBLEN / BIOCSSNAPLEN of a shell reader)."""

    def __init__(self, bufsize: int | None = None, snaplen: int | None = None) -> None:
        self.bufsize = bufsize
        self.snaplen = snaplen
        self.dlt: int | None = None

    @classmethod
    def parse(cls, text: str) -> StreamOptions:
        opts = cls()
        for word in text.split(","):
            key, eq, value = word.partition("=")
            if not eq:
                raise ValueError(f"expected KEY=VALUE, got {word!r}")
            if key in ("blen", "bufsize"):
                opts.bufsize = clamp_bufsize(_size(value))
            elif key == "snaplen":
                opts.snaplen = max(14, min(DEFAULT_SNAPLEN, _size(value)))
            elif key == "dlt":
                opts.dlt = DLT_NAMES.get(value.lower(), None) if not value.isdigit() \
                    else int(value)
                if opts.dlt is None:
                    raise ValueError(f"unknown link type {value!r}")
            else:
                raise ValueError(f"unknown option {key!r} (blen=, snaplen=, dlt=)")
        return opts


#: link type names ``dlt=`` takes besides numbers
DLT_NAMES = {"en10mb": LINKTYPE_ETHERNET, "ether": LINKTYPE_ETHERNET,
             "ieee802_11_radio": 127, "radio": 127}


def _size(text: str) -> int:
    """``65536``, ``64k``, ``8M``."""
    t = text.strip().lower()
    mult = 1
    if t[-1:] in ("k", "m"):
        mult = 1024 if t[-1] == "k" else 1024 * 1024
        t = t[:-1]
    if not t.isdigit():
        raise ValueError(f"bad size {text!r}")
    return int(t) * mult


class _IfaceNodes(Mapping[str, Node]):
    """The interface files: listed by name; ``IF,OPTIONS`` found on lookup only."""

    def __init__(self, dev: BpfDevice, plain: dict[str, HandleFile]) -> None:
        self.dev = dev
        self.plain = plain

    def __getitem__(self, name: str) -> Node:
        node = self.plain.get(name)
        if node is not None:
            return node
        ifname, comma, rest = name.partition(",")
        if not comma or ifname not in self.plain:
            raise KeyError(name)
        try:
            opts = StreamOptions.parse(rest)
        except ValueError as exc:
            raise OSError(errno.EINVAL, f"{name}: {exc}") from None
        # a new node per lookup: the kernel forgets it when done (no table to grow)
        return HandleFile(functools.partial(self.dev._open_iface, ifname, opts), mode=0o600)

    def __iter__(self) -> Iterator[str]:
        return iter(self.plain)

    def __len__(self) -> int:
        return len(self.plain)
