"""The socket door: one ``SocketHandle`` per open file description of a socket file.

read/write are recv/send, ioctl is the rest of the BSD socket API (``rmgr.libsocket.abi``
and ``rmgr/include/io_pkt_socket.h`` define the commands), poll reports readiness.
"""

from __future__ import annotations

import errno
import math
import socket as _std
import struct

import trio

from rmgr.libsocket import abi
from rmgr.nodes import POLLHUP, POLLIN, POLLOUT, Caller, Gather, Handle, IoRequest, ReadResult
from stack.transport.mcast import STRUCT_OPTIONS as _MCAST_STRUCTS

from .conn import Conn, SocketTable
from .endpoint import Address, Endpoint

#: IPPROTO_IPV6 options whose value is a struct (ipv6_mreq, in6_pktinfo): passed as given
_IPPROTO_IPV6 = 41
_IP6_STRUCTS = frozenset({20, 21, 50})  # IPV6_JOIN_GROUP, IPV6_LEAVE_GROUP, IPV6_PKTINFO
TIMEVAL = struct.Struct("<qq")
LINGER = struct.Struct("<ii")

SO_TYPE = _std.SO_TYPE
SO_ERROR = _std.SO_ERROR
SO_LINGER = _std.SO_LINGER
SO_RCVTIMEO = _std.SO_RCVTIMEO
SO_SNDTIMEO = _std.SO_SNDTIMEO
SO_ACCEPTCONN = getattr(_std, "SO_ACCEPTCONN", 30)
SO_PROTOCOL = getattr(_std, "SO_PROTOCOL", 38)
SO_DOMAIN = getattr(_std, "SO_DOMAIN", 39)


#: iop_msg's address field when there is no address
_NO_ADDR = bytes(abi.IOP_ADDR_MAX)
_MSG_PACK = abi.MSG.pack
_ALIGN_MASK = abi.IOP_MSG_ALIGN - 1
#: the padding before a record, by length
_PADS = [bytes(n) for n in range(abi.IOP_MSG_ALIGN)]


#: a parsed iop_msg record of a write: (destination, payload, end offset in the write)
_Record = tuple[Address | None, memoryview, int]


def _run_end(recs: list[_Record], i: int) -> int:
    """The end (exclusive) of the run of records that starts at ``recs[i]``: the ones
    after it to the same destination and as long as it, the last of the run allowed
    to be shorter. Such a run has the shape of one USO super-datagram (segments of one
    size, a short tail), so the transport may send it in one go."""
    dest, first, _end = recs[i]
    size = len(first)
    n = len(recs)
    j = i + 1
    while j < n:
        d, p, _e = recs[j]
        # the decoded address is cached, so the same destination is usually the
        # same object: the identity test spares the comparison
        if (d is not dest and d != dest) or len(p) > size:
            break
        j += 1
        if len(p) < size:
            break  # a shorter one ends the run
    return j


def _knows_queue(ep: Endpoint) -> bool:
    """``ep`` tells its queue (``next_datagram``), so None from it means none queued."""
    return type(ep).next_datagram is not Endpoint.next_datagram


def _eagain(what: str = "operation would block") -> OSError:
    return OSError(errno.EAGAIN, what)


def sockaddr_out(addr: Address, family: int) -> bytes:
    """An iop_sockaddr holding ``addr`` as a socket of ``family`` reports it."""
    length, field = abi.encode_sockaddr(addr, family)
    return abi.SOCKADDR.pack(0, length, field)


def sockaddr_arg(raw: bytes, family: int) -> tuple[int, Address]:
    """(flags, address) of an iop_sockaddr given to a socket of ``family``."""
    flags, length, field = abi.SOCKADDR.unpack(raw)
    return flags, abi.decode_sockaddr(field, length, family)


def _timeout_of(raw: bytes) -> float | None:
    sec, usec = TIMEVAL.unpack(raw[:TIMEVAL.size])
    if sec < 0 or usec < 0 or usec >= 1_000_000:
        raise OSError(errno.EDOM, "bad timeval")
    t = sec + usec / 1e6
    return t if t > 0 else None


def _timeval(t: float | None) -> bytes:
    if not t:
        return TIMEVAL.pack(0, 0)
    return TIMEVAL.pack(int(t), int(round((t - int(t)) * 1e6)))


class SocketHandle(Handle):
    """An open socket file: the socket door's fd (also ``tcp/N/data`` of the text
    door, which speaks the same ioctls)."""

    def __init__(self, table: SocketTable, conn: Conn, caller: Caller,
                 open_nonblock: bool = False) -> None:
        super().__init__()
        self.table = table
        self.conn = conn
        self.caller = caller
        self.open_nonblock = open_nonblock
        self.next_dest: Address | None = None  # IOP_SENDTO: destination of next write
        self.last_from: Address | None = None  # IOP_RECVADDR: source of last datagram
        self.recv_flags = 0  # IOP_RECVFLAGS: MSG_* for the next read
        self.deferred_error: OSError | None = None  # met after a MSG_WAITALL read's data
        #: IOP_MSGMODE: the most iop_msg records a read returns (0: off, plain read/write)
        self.msg_max = 0
        #: message mode's last destination decoded: (addrlen, addr field) → Address
        self._dest_cache: tuple[bytes, Address] | None = None
        #: and last source encoded (plain Endpoints only): Address → (addrlen, field)
        self._src_cache: tuple[Address, int, bytes] | None = None
        self.released = False
        conn.hold(self)

    # -- helpers ---------------------------------------------------------------------
    @property
    def ep(self) -> Endpoint:
        return self.conn.ep

    def _check_open(self) -> None:
        if self.conn.closed:
            raise OSError(errno.EBADF, "socket is closed")

    # -- data ------------------------------------------------------------------------
    async def read(self, size: int, req: IoRequest) -> ReadResult:
        self._check_open()
        if self.deferred_error is not None:
            err, self.deferred_error = self.deferred_error, None
            raise err
        flags = self.recv_flags
        nonblock = req.nonblock or bool(flags & abi.RECV_DONTWAIT)
        timeout = conn_timeout(self.conn, "rcv")
        deadline = trio.current_time() + timeout if timeout else math.inf
        data: ReadResult
        try:
            if self.msg_max:
                data = await self._read_msgs(size, nonblock, bool(flags & abi.RECV_PEEK),
                                             deadline)
            elif flags & abi.RECV_WAITALL and not flags & abi.RECV_PEEK \
                    and self.conn.type == abi.SOCK_STREAM:
                data = await self._read_all(size, nonblock, deadline)
            else:
                data = await self._read(size, nonblock, bool(flags & abi.RECV_PEEK), deadline)
        except trio.Cancelled:
            raise  # EINTR with nothing read: the caller's retry keeps its flags
        except BaseException:
            self.recv_flags = 0
            raise
        self.recv_flags = 0
        return data

    def _take(self, size: int, nonblock: bool, peek: bool) -> ReadResult | None:
        """What is queued (``b""``: EOF), None when nothing is (EAGAIN if ``nonblock``).
        A stream's data comes as the transport's pieces (a Gather: the FUSE reply
        writes them, no copy here)."""
        try:
            if not peek and self.conn.type == abi.SOCK_STREAM:
                parts, n, addr = self.ep.recv_gather_nowait(size)
                data: ReadResult = Gather(parts, n) if n else b""
            else:
                data, addr = self.ep.recv_nowait(size, peek)
        except BlockingIOError:
            if nonblock:
                raise _eagain("no data") from None
            return None
        if addr is not None:
            self.last_from = addr
        return data

    async def _read(self, size: int, nonblock: bool, peek: bool, deadline: float) -> ReadResult:
        conn = self.conn
        data = self._take(size, nonblock, peek)  # the common case: no cancel scope
        if data is not None:
            return data
        with trio.move_on_at(deadline) as scope:
            while True:
                data = self._take(size, nonblock, peek)
                if data is not None:
                    return data
                if conn.closed:
                    return b""
                await conn.wait_change()
        assert scope.cancelled_caught
        raise _eagain("receive timed out (SO_RCVTIMEO)")

    async def _read_all(self, size: int, nonblock: bool, deadline: float) -> bytes:
        """MSG_WAITALL on a stream: ``size`` bytes, fewer only at EOF, on an error, a
        timeout or a signal (the part read so far is returned, as on Linux; an error
        met after some data is reported by the next read)."""
        got = bytearray()
        try:
            while len(got) < size:
                try:
                    chunk = await self._read(size - len(got), nonblock, False, deadline)
                except BlockingIOError:
                    if got:  # non-blocking, or SO_RCVTIMEO, after a part
                        break
                    raise
                except OSError as exc:
                    if not got:
                        raise
                    self.deferred_error = exc
                    break
                if not chunk:
                    break
                if isinstance(chunk, Gather):
                    for part in chunk:
                        got += part
                else:
                    got += chunk
        except trio.Cancelled:
            if got:
                return bytes(got)
            raise
        return bytes(got)

    async def write(self, data: memoryview, req: IoRequest) -> int:
        self._check_open()
        dest, self.next_dest = self.next_dest, None
        if self.msg_max:
            return await self._write_msgs(data, req.nonblock)
        return await send(self.conn, data, dest, req.nonblock)

    # -- message mode (IOP_MSGMODE) ------------------------------------------------------
    async def _first_datagram(self, room: int, nonblock: bool, peek: bool,
                              deadline: float) -> tuple[bytes, Address | None, int | None]:
        """The first datagram of a message-mode read, waited for as a plain read waits:
        (data cut to ``room``, source, its full size or None when none was queued)."""
        ep, conn = self.ep, self.conn
        full = ep.next_datagram()
        try:
            data, addr = ep.recv_nowait(room, peek)
            return data, addr, full
        except BlockingIOError:
            if nonblock:
                raise _eagain("no data") from None
        with trio.move_on_at(deadline):
            while True:
                if conn.closed:
                    return b"", None, None
                await conn.wait_change()
                full = ep.next_datagram()
                try:
                    data, addr = ep.recv_nowait(room, peek)
                    return data, addr, full
                except BlockingIOError:
                    pass
        raise _eagain("receive timed out (SO_RCVTIMEO)")

    def _header(self, length: int, addr: Address | None, flags: int) -> bytes:
        """The iop_msg header of a datagram of ``length`` bytes from ``addr``."""
        if type(addr) is Address:  # a plain source: the last one's encoding is kept
            cached = self._src_cache
            if cached is None or cached[0] != addr:
                alen, field = abi.encode_sockaddr(addr, self.conn.family)
                cached = self._src_cache = (addr, alen, field)
            return _MSG_PACK(length, flags, cached[1], 0, cached[2])
        if addr is None:
            return _MSG_PACK(length, flags, 0, 0, _NO_ADDR)
        # scoped, or with what IPV6_RECVPKTINFO kept
        alen, field = abi.encode_sockaddr(addr, self.conn.family)
        ifindex = getattr(addr, "ifindex", 0) \
            if getattr(addr, "flags", 0) & abi.IOP_RI_PKTINFO else 0
        return _MSG_PACK(length, flags, alen, ifindex, field)

    async def _read_msgs(self, size: int, nonblock: bool, peek: bool, deadline: float) -> bytes:
        """A message-mode read: iop_msg records, the first waited for (cut to fit,
        flagged IOP_MSG_TRUNC), then as many already queued as fit whole in ``size``, up
        to ``msg_max`` (one with MSG_PEEK, which takes none). b"" at end of file (read
        side shut, socket closed)."""
        hdr = abi.MSG.size
        if size < hdr:
            raise OSError(errno.EINVAL, f"a message-mode read needs {hdr} bytes at least")
        c = self.table.counters
        c["msg_reads"] += 1
        data, addr, full = await self._first_datagram(size - hdr, nonblock, peek, deadline)
        if full is None and not data and (addr is None or _knows_queue(self.ep)):
            # nothing was queued yet recv gave b"": EOF (read side shut, socket closed),
            # not an empty datagram; a plain read returns b"" there too
            c["msg_read_eof"] += 1
            return b""
        flags = 0
        if full is not None and full > len(data):
            flags = abi.IOP_MSG_TRUNC  # the rest is dropped, as UDP's recv does
            c["msg_truncated"] += 1
        header = self._header
        parts = [header(len(data), addr, flags), data]
        used = hdr + len(data)
        last = addr
        count = 1
        if not peek:
            # the hot loop of a batch: bound methods, no per-record helper calls
            ep = self.ep
            next_size, recv, limit = ep.next_datagram, ep.recv_nowait, self.msg_max
            while count < limit:
                nxt = next_size()
                if nxt is None:
                    break  # none queued: never wait for more
                start = (used + _ALIGN_MASK) & ~_ALIGN_MASK
                if start + hdr + nxt > size:
                    break  # it would not fit whole: for the next read
                try:
                    data, addr = recv(nxt)
                except BlockingIOError:
                    break
                if start > used:
                    parts.append(_PADS[start - used])
                parts.append(header(len(data), addr, 0))
                parts.append(data)
                used = start + hdr + len(data)
                last = addr
                count += 1
        if last is not None:
            self.last_from = last
        c["msg_read_records"] += count
        if count > 1:
            c["msg_read_batches"] += 1
        return b"".join(parts)

    def _parse_record(self, data: memoryview, off: int) -> _Record:
        """(destination, payload, end) of the iop_msg record at ``off``; EINVAL when it is
        malformed (header or data past the end, flags or ifindex set, address length
        out of range), the address's errors (EINVAL, EAFNOSUPPORT) when it is bad."""
        hdr = abi.MSG.size
        total = len(data)
        if total - off < hdr:
            raise OSError(errno.EINVAL, "iop_msg header cut")
        length, flags, alen, ifindex, field = abi.MSG.unpack_from(data, off)
        end = off + hdr + length
        if flags or ifindex or end > total or alen > abi.IOP_ADDR_MAX:
            raise OSError(errno.EINVAL, "malformed iop_msg record")
        dest: Address | None = None
        if alen:
            key = field[:alen]
            cached = self._dest_cache
            if cached is not None and cached[0] == key:
                dest = cached[1]
            else:
                try:
                    dest = abi.decode_sockaddr(field, alen, self.conn.family)
                except OSError:
                    self.table.counters["msg_bad_address"] += 1
                    raise
                self._dest_cache = (key, dest)
        return dest, data[off + hdr:end], end

    def _parse_records(self, data: memoryview) -> list[_Record]:
        """The records of a message-mode write, all parsed before any is sent (parsing
        has no side effects; the grouping looks ahead over them): up to a malformed one
        (the first raises, a later one ends the batch there, as sendmmsg stops at a
        bad message) or IOP_MSG_MAXCOUNT (the short count tells the caller to write
        the rest again)."""
        c = self.table.counters
        total = len(data)
        off = 0
        recs: list[_Record] = []
        parse = self._parse_record
        while off < total:
            if len(recs) >= abi.IOP_MSG_MAXCOUNT:
                c["msg_write_capped"] += 1
                break
            try:
                rec = parse(data, off)
            except OSError:
                c["msg_malformed"] += 1
                if not recs:
                    raise
                break
            recs.append(rec)
            off = min(abi.msg_pad(rec[2]), total)
        return recs

    async def _send_run(self, dest: Address | None, run: list[memoryview], nonblock: bool,
                        first: bool) -> int:
        """Send a run of datagrams to ``dest``: how many went (a run of several may go in
        part, as sendmmsg); raises what stopped it before any went. Only the batch's
        ``first`` record may wait (a write blocks until it can send something, never
        for the rest of a batch); a later one that would block raises BlockingIOError
        and the caller ends the batch there."""
        conn = self.conn
        if len(run) == 1:
            if first:  # waits for room as a write does (its timeout and EAGAIN included)
                await send(conn, run[0], dest, nonblock)
            else:
                conn.ep.send_nowait(run[0], dest)
            return 1
        try:
            return conn.ep.send_many_nowait(run, dest)
        except BlockingIOError:
            if not first:
                raise
            # no room for the batch's first record: send it alone, waiting as a write
            # does (the rest of its run goes by the next write)
            await send(conn, run[0], dest, nonblock)
            return 1

    async def _write_msgs(self, data: memoryview, nonblock: bool) -> int:
        """A message-mode write: each iop_msg record is one datagram to its address (or
        the connected peer). The first waits for room as a write does and raises its
        error; a later one that would block, fails or is malformed ends the batch
        there: the bytes of the records sent are returned (as sendmmsg's count).

        Consecutive records to one destination with equal lengths (the last of them may
        be shorter) go to the transport together (``Endpoint.send_many_nowait``): UDP
        sends such a run as one super-datagram when the interface segments UDP (USO,
        stack/transport/udp.py ``send_many``)."""
        c = self.table.counters
        c["msg_writes"] += 1
        recs = self._parse_records(data)
        total = len(data)
        off = count = i = 0
        while i < len(recs):
            j = _run_end(recs, i)
            dest = recs[i][0]
            try:
                sent = await self._send_run(dest, [r[1] for r in recs[i:j]], nonblock,
                                            first=not count)
            except OSError:  # failed: the first raises, a later one's next write says
                if not count:
                    raise
                c["msg_write_short"] += 1
                break
            count += sent
            # the bytes consumed: up to the padded end of the last record sent
            off = min(abi.msg_pad(recs[i + sent - 1][2]), total)
            if sent < j - i:
                c["msg_write_short"] += 1
                break
            i += sent
        c["msg_write_records"] += count
        if count > 1:
            c["msg_write_batches"] += 1
        return off

    def poll(self) -> int:
        if self.conn.closed:
            return POLLIN | POLLOUT | POLLHUP
        return self.ep.poll_mask()

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        conn = self.conn
        conn.drop(self)

    # -- ioctl -----------------------------------------------------------------------
    async def ioctl(self, cmd: int, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        fn = _IOCTLS.get(cmd)
        if fn is None:
            raise OSError(errno.ENOTTY, f"unknown socket ioctl {cmd:#x}")
        self._check_open()
        return await fn(self, bytes(arg), req)

    async def _bind(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        _flags, addr = sockaddr_arg(arg, self.conn.family)
        if 0 < addr.port < 1024 and not req.caller.is_root:
            raise OSError(errno.EACCES, f"port {addr.port} needs root")
        self.ep.bind(addr)
        self.conn.on_state()
        return 0, b""

    async def _connect(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        flags, addr = sockaddr_arg(arg, self.conn.family)
        nonblock = bool(flags & abi.IOP_F_NONBLOCK) or self.open_nonblock
        await connect(self.conn, addr, nonblock)
        return 0, b""

    async def _listen(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        (backlog,) = abi.INT.unpack(arg)
        if self.conn.type != abi.SOCK_STREAM:
            raise OSError(errno.EOPNOTSUPP, "listen on a datagram socket")
        self.ep.listen(max(0, min(backlog, 4096)) or 1)
        self.conn.on_state()
        return 0, b""

    async def _accept(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        flags, _l, _a, _n = abi.ACCEPT.unpack(arg)
        nonblock = bool(flags & abi.IOP_F_NONBLOCK) or self.open_nonblock
        child, peer = await accept(self.table, self.conn, nonblock)
        if flags & abi.IOP_F_HANDOVER:  # a reused name the kernel has cached (tree.py)
            name = f"accepted/{self.table.hand_over(child, req.caller.pid)}".encode()
        else:
            name = f"{child.kind}/{child.id}/data".encode()
        length, field = abi.encode_sockaddr(peer, child.family)
        return 0, abi.ACCEPT.pack(0, length, field, name)

    async def _shutdown(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        (how,) = abi.INT.unpack(arg)
        if how not in (0, 1, 2):
            raise OSError(errno.EINVAL, "shutdown: how is 0, 1 or 2")
        self.ep.shutdown(how)
        return 0, b""

    async def _getsockname(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        return 0, sockaddr_out(self.ep.getsockname(), self.conn.family)

    async def _getpeername(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        return 0, sockaddr_out(self.ep.getpeername(), self.conn.family)

    async def _setsockopt(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        level, name, length, _flags, val = abi.SOCKOPT.unpack(arg)
        setsockopt(self.conn, level, name, bytes(val[:min(length, abi.IOP_OPTVAL_MAX)]))
        return 0, b""

    async def _getsockopt(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        level, name, _length, _flags, _val = abi.SOCKOPT.unpack(arg)
        # a value longer than val (TCP_INFO) is cut, as Linux cuts it to optlen; all of
        # it comes with IOP_GETSOCKOPT_LARGE
        out = getsockopt(self.conn, level, name)[:abi.IOP_OPTVAL_MAX]
        return 0, abi.SOCKOPT.pack(level, name, len(out), 0, out)

    async def _getsockopt_large(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        """getsockopt for values longer than IOP_OPTVAL_MAX (TCP_INFO): ``len`` in is the
        caller's buffer, out what was filled (Linux fills min(optlen, the value's size))."""
        level, name, length, _flags, _val = abi.SOCKOPT_LARGE.unpack(arg)
        out = getsockopt(self.conn, level, name)[:min(length or abi.IOP_OPTVAL_LARGE,
                                                      abi.IOP_OPTVAL_LARGE)]
        return 0, abi.SOCKOPT_LARGE.pack(level, name, len(out), 0, out)

    async def _nread(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        return 0, abi.INT.pack(self.ep.nread())

    async def _sendto(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        _flags, addr = sockaddr_arg(arg, self.conn.family)
        self.next_dest = addr
        return 0, b""

    async def _send0(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        """IOP_SEND0: send an empty datagram - the one send a write(2) cannot carry (the
        kernel never passes a 0-byte write to a FUSE server). ``len`` 0: to the
        destination a preceding IOP_SENDTO gave, else to the connected peer. On a
        stream: nothing is sent, 0 is returned (errors as for a write)."""
        flags, length, _field = abi.SOCKADDR.unpack(arg)
        if flags & ~abi.IOP_F_NONBLOCK:
            raise OSError(errno.EINVAL, f"IOP_SEND0 flags {flags & ~abi.IOP_F_NONBLOCK:#x}")
        dest, self.next_dest = self.next_dest, None
        if length:
            _flags, dest = sockaddr_arg(arg, self.conn.family)
            if self.conn.type == abi.SOCK_STREAM:
                dest = None  # as Linux: a stream ignores sendto's address
        nonblock = bool(flags & abi.IOP_F_NONBLOCK) or self.open_nonblock
        await send(self.conn, memoryview(b""), dest, nonblock)
        return 0, b""

    async def _recvflags(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        (flags,) = abi.INT.unpack(arg)
        known = abi.RECV_PEEK | abi.RECV_WAITALL | abi.RECV_DONTWAIT
        if flags & ~known:
            raise OSError(errno.EOPNOTSUPP, f"recv flags {flags & ~known:#x} are not supported")
        self.recv_flags = flags
        return 0, b""

    async def _recvaddr(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        if self.last_from is None:
            try:
                return 0, sockaddr_out(self.ep.getpeername(), self.conn.family)
            except OSError:
                return 0, abi.SOCKADDR.pack(0, 0, bytes(32))
        return 0, sockaddr_out(self.last_from, self.conn.family)

    async def _recvinfo(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        """IOP_RECVINFO: what IPV6_RECVPKTINFO/HOPLIMIT/TCLASS kept of the datagram
        read last (flags 0: nothing; stack/transport/ip6opt.py ``RecvEndpoint``)."""
        src = self.last_from
        flags = getattr(src, "flags", 0)
        if not flags:
            return 0, abi.RECVINFO.pack(0, 0, 0, 0, bytes(16))
        return 0, abi.RECVINFO.pack(flags, getattr(src, "ifindex", 0), getattr(src, "hlim", 0),
                                    getattr(src, "tclass", 0),
                                    int(getattr(src, "dst", 0)).to_bytes(16, "big"))

    async def _msgmode(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        """IOP_MSGMODE: records per read (0: off; above IOP_MSG_MAXCOUNT: that many, as
        Linux cuts recvmmsg's vlen); returns the value before. Datagram sockets only."""
        (count,) = abi.INT.unpack(arg)
        c = self.table.counters
        if self.conn.type == abi.SOCK_STREAM:
            c["msg_mode_refused"] += 1
            raise OSError(errno.EOPNOTSUPP, "message mode is for datagram sockets")
        if count < 0:
            c["msg_mode_refused"] += 1
            raise OSError(errno.EINVAL, "IOP_MSGMODE count is negative")
        old, self.msg_max = self.msg_max, min(count, abi.IOP_MSG_MAXCOUNT)
        c["msg_mode_set"] += 1
        return 0, abi.INT.pack(old)

    async def _sockinfo(self, arg: bytes, req: IoRequest) -> tuple[int, bytes]:
        c = self.conn
        try:
            nread = self.ep.nread()
        except OSError:
            nread = 0
        info = abi.SockInfo(abi.linux_family(c.family), c.type, c.protocol, c.id, self.ep.state(), 0,
                            nread, c.name)
        return 0, info.pack()


_IOCTLS = {
    abi.IOP_BIND: SocketHandle._bind,
    abi.IOP_CONNECT: SocketHandle._connect,
    abi.IOP_LISTEN: SocketHandle._listen,
    abi.IOP_ACCEPT: SocketHandle._accept,
    abi.IOP_SHUTDOWN: SocketHandle._shutdown,
    abi.IOP_GETSOCKNAME: SocketHandle._getsockname,
    abi.IOP_GETPEERNAME: SocketHandle._getpeername,
    abi.IOP_SETSOCKOPT: SocketHandle._setsockopt,
    abi.IOP_GETSOCKOPT: SocketHandle._getsockopt,
    abi.IOP_NREAD: SocketHandle._nread,
    abi.IOP_SENDTO: SocketHandle._sendto,
    abi.IOP_RECVADDR: SocketHandle._recvaddr,
    abi.IOP_RECVFLAGS: SocketHandle._recvflags,
    abi.IOP_SEND0: SocketHandle._send0,
    abi.IOP_SOCKINFO: SocketHandle._sockinfo,
    abi.IOP_GETSOCKOPT_LARGE: SocketHandle._getsockopt_large,
    abi.IOP_RECVINFO: SocketHandle._recvinfo,
    abi.IOP_MSGMODE: SocketHandle._msgmode,
}


# -- operations shared by both doors ----------------------------------------------------
def conn_timeout(conn: Conn, which: str) -> float | None:
    return conn.rcvtimeo if which == "rcv" else conn.sndtimeo


async def connect(conn: Conn, addr: Address, nonblock: bool) -> None:
    ep = conn.ep
    st = ep.state()
    if st == abi.ST_CONNECTING:
        raise OSError(errno.EALREADY, "connection already in progress")
    if conn.type == abi.SOCK_STREAM:
        if st == abi.ST_CONNECTED:
            raise OSError(errno.EISCONN, "socket is already connected")
        if st == abi.ST_LISTEN:
            raise OSError(errno.EISCONN, "socket is listening")
    ep.connect(addr)
    conn.on_state()
    if conn.type != abi.SOCK_STREAM:
        return
    if ep.state() == abi.ST_CONNECTING:
        if nonblock:
            raise OSError(errno.EINPROGRESS, "operation now in progress")
        while ep.state() == abi.ST_CONNECTING and not conn.closed:
            await conn.wait_change()
    err = ep.pop_error()
    if err:
        raise OSError(err, _std_strerror(err))
    if ep.state() != abi.ST_CONNECTED:
        raise OSError(errno.ECONNREFUSED, "connection refused")


async def send(conn: Conn, data: memoryview, dest: Address | None, nonblock: bool) -> int:
    """send/sendto: one datagram, or as much of a stream as fits (blocking waits for
    room unless ``nonblock``; SO_SNDTIMEO; a signal after a part returns the part)."""
    total = len(data)
    sent = 0
    timeout = conn_timeout(conn, "snd")
    deadline = trio.current_time() + timeout if timeout else math.inf
    try:
        while True:
            try:
                n = conn.ep.send_nowait(data[sent:], dest)
            except BlockingIOError:
                if nonblock:
                    if sent:
                        return sent
                    raise _eagain("send buffer full") from None
            else:
                sent += n
                if sent >= total or conn.type != abi.SOCK_STREAM:
                    return sent
                continue
            if trio.current_time() >= deadline:
                if sent:
                    return sent
                raise _eagain("send timed out (SO_SNDTIMEO)")
            with trio.move_on_at(deadline):
                await conn.wait_change()
    except trio.Cancelled:
        # interrupted (EINTR) after part went out: report the part, as write(2)
        # does, so the caller does not send it twice
        if sent:
            return sent
        raise


async def accept(table: SocketTable, conn: Conn, nonblock: bool) -> tuple[Conn, Address]:
    ep = conn.ep
    if ep.state() != abi.ST_LISTEN:
        raise OSError(errno.EINVAL, "socket is not listening")
    while True:
        try:
            child_ep, peer = ep.accept_nowait()
        except BlockingIOError:
            if nonblock:
                raise _eagain("no pending connection") from None
        else:
            return table.adopt(conn, child_ep), peer
        if conn.closed:
            raise OSError(errno.ECONNABORTED, "listener closed")
        await conn.wait_change()


def _std_strerror(err: int) -> str:
    import os

    return os.strerror(err)


def setsockopt(conn: Conn, level: int, name: int, val: bytes) -> None:
    if level == _std.SOL_SOCKET:
        if name == SO_RCVTIMEO:
            conn.rcvtimeo = _timeout_of(val.ljust(16, b"\0"))
            return
        if name == SO_SNDTIMEO:
            conn.sndtimeo = _timeout_of(val.ljust(16, b"\0"))
            return
        if name == SO_LINGER:
            onoff, secs = LINGER.unpack(val.ljust(8, b"\0")[:8])
            conn.linger = (1 if onoff else 0, max(0, secs))
            try:
                conn.ep.setsockopt(level, name, conn.linger)
            except OSError as exc:
                if exc.errno != errno.ENOPROTOOPT:
                    raise
            return
        if name in (SO_TYPE, SO_ERROR, SO_ACCEPTCONN, SO_PROTOCOL, SO_DOMAIN):
            raise OSError(errno.ENOPROTOOPT, "read-only socket option")
    elif (level == _std.IPPROTO_IP and name in _MCAST_STRUCTS) or (
            level == _IPPROTO_IPV6 and name in _IP6_STRUCTS):
        conn.ep.setsockopt(level, name, bytes(val))  # ip_mreq, ipv6_mreq, in6_pktinfo...
        conn.on_state()
        return
    if len(val) < 4:
        val = val.ljust(4, b"\0")
    (value,) = struct.unpack_from("<i", val, 0)
    conn.ep.setsockopt(level, name, value)
    conn.on_state()


def getsockopt(conn: Conn, level: int, name: int) -> bytes:
    ep = conn.ep
    if level == _std.SOL_SOCKET:
        if name == SO_TYPE:
            return abi.INT.pack(conn.type)
        if name == SO_PROTOCOL:
            return abi.INT.pack(conn.protocol)
        if name == SO_DOMAIN:
            return abi.INT.pack(abi.linux_family(conn.family))
        if name == SO_ACCEPTCONN:
            return abi.INT.pack(1 if ep.state() == abi.ST_LISTEN else 0)
        if name == SO_ERROR:
            return abi.INT.pack(ep.pop_error())
        if name == SO_RCVTIMEO:
            return _timeval(conn_timeout(conn, "rcv"))
        if name == SO_SNDTIMEO:
            return _timeval(conn_timeout(conn, "snd"))
        if name == SO_LINGER:
            onoff, secs = conn.linger
            return LINGER.pack(onoff, secs)
    value = ep.getsockopt(level, name)
    if isinstance(value, bytes):  # a C struct already (TCP_INFO)
        return value
    if isinstance(value, tuple):
        return LINGER.pack(*value)
    return struct.pack("<i", int(value))
