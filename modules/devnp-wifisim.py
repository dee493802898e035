"""devnp-wifisim: a simulated 802.11 radio; stacks naming the same ``air`` share a medium.

``-d wifisim air=PATH,name=wlan0[,chan=N][,mac=M][,loss=P][,delay=MS][,signal=DBM]
[,retries=N][,seed=N]``

The air is a directory. Each radio binds a UNIX datagram socket in it named after its
MAC (``PATH/020000000001``); a frame is sent as one datagram to each radio that may hear
it: every radio for a group address, the radio of ``addr1`` for a unicast frame, and
every monitor (sockets named ``mon-*``: a capture of the whole air, as tests use). No
hub process: nothing to start or stop; a radio's socket is removed when its driver
unloads (a stale one, left by a killed stack, is removed by the next sender that finds
nobody behind it, and by a radio binding the same MAC).

One datagram = a 16-byte header (``WSIM``, version, channel, rate in 500 kb/s,
signal in dBm, flags, TSF in µs) + the 802.11 frame without FCS. A receiver takes only
frames of the channel it is tuned to (``set_channel``: scans hop).

Per-pair conditions: the file ``PATH/matrix`` (read again when it changes), lines
``SRC DST [loss=P] [delay=MS] [signal=DBM]`` with MACs or ``*``; later lines win, and
the options ``loss=``, ``delay=``, ``signal=`` are the defaults. ``loss`` applies to each
transmission and to its acknowledgement: a unicast frame is sent again (Retry bit set)
until one attempt and its ACK both get through, at most ``retries`` (default 7) times —
the radio's own ARQ, as 802.11 hardware does it; an attempt that arrived but whose ACK
was lost arrives twice (the receiver drops it by sequence number, ``rx_dup``). Group
frames are sent once. ``delay`` holds frames (one deadline-driven task, as devnp-vwire).
"""

from __future__ import annotations

import collections
import errno
import heapq
import os
import random
import socket
import struct
import time

import trio

from stack.counters import names
from stack.l2.iface import parse_mac, random_mac
from stack.loader import ModuleContext
from stack.module_api import MODULE_API_VERSION, ModuleEntry
from stack.net80211 import Radio, RxInfo, attach
from stack.options import OptionError, Options

MAGIC = b"WSIM"
VERSION = 1
HDR = struct.Struct("!4sBBBbHQ")  # magic, version, channel, rate, signal, flags, tsft
FLAG_RETRY_COPY = 1
#: frames queued per receiver whose socket queue is full, before they are dropped
BACKLOG_MAX = 1024

COUNTERS: frozenset[str] = names("""
    air_tx air_tx_datagrams air_lost air_retries air_no_ack air_full air_backlogged
    air_stale air_errors
    air_rx air_rx_other_channel air_rx_bad air_delayed air_matrix_errors
""")


class Link:
    __slots__ = ("loss", "delay", "signal")

    def __init__(self, loss: float, delay: float, signal: int) -> None:
        self.loss, self.delay, self.signal = loss, delay, signal


def _mac_name(mac: bytes) -> str:
    return mac.hex()


class WifisimRadio(Radio):
    driver = "wifisim"
    counter_names = COUNTERS

    def __init__(self, air: str, mac: bytes, channel: int, *, loss: float, delay: float,
                 signal: int, retries: int, seed: int | None) -> None:
        super().__init__(mac, channel)
        self.air = air
        self.path = os.path.join(air, _mac_name(mac))
        self.default = Link(loss, delay, signal)
        self.retries = retries
        self.rng = random.Random(seed)
        os.makedirs(air, mode=0o755, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            try:
                sock.bind(self.path)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or self._alive(self.path):
                    raise OptionError(f"air {air}: a radio with MAC {mac.hex(':')} is "
                                      f"already there") from None
                os.unlink(self.path)  # left by a stack that was killed
                sock.bind(self.path)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.peers: dict[bytes, str] = {}
        self.monitors: list[str] = []
        self._dir_mtime = -1.0
        self._dir_checked = 0.0
        self._matrix: list[tuple[bytes | None, bytes | None, dict[str, float]]] = []
        self._matrix_mtime = -1.0
        self._links: dict[bytes, Link] = {}
        self._heap: list[tuple[float, int, str, bytes]] = []
        self._hseq = 0
        self._heap_wakeup = trio.Event()
        self._backlog: dict[str, collections.deque[bytes]] = {}
        self._backlog_wakeup = trio.Event()
        self.closed = False

    @staticmethod
    def _alive(path: str) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def _count(self, key: str, n: int = 1) -> None:
        if self.wlan is not None:
            self.wlan.counters[key] += n

    # -- the air's directory and matrix --------------------------------------------------
    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._dir_checked < 0.05:
            return
        self._dir_checked = now
        try:
            st = os.stat(self.air)
        except OSError:
            return
        if st.st_mtime != self._dir_mtime:
            self._dir_mtime = st.st_mtime
            peers: dict[bytes, str] = {}
            mons: list[str] = []
            for entry in os.listdir(self.air):
                p = os.path.join(self.air, entry)
                if entry.startswith("mon-"):
                    mons.append(p)
                elif len(entry) == 12:
                    try:
                        mac = bytes.fromhex(entry)
                    except ValueError:
                        continue
                    if mac != self.mac:
                        peers[mac] = p
            self.peers, self.monitors = peers, mons
        mpath = os.path.join(self.air, "matrix")
        try:
            mt = os.stat(mpath).st_mtime
        except OSError:
            mt = 0.0
        if mt != self._matrix_mtime:
            self._matrix_mtime = mt
            self._load_matrix(mpath if mt else None)

    def _load_matrix(self, path: str | None) -> None:
        rules: list[tuple[bytes | None, bytes | None, dict[str, float]]] = []
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                text = ""
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) < 2:
                    continue
                try:
                    src = None if words[0] == "*" else parse_mac(words[0])
                    dst = None if words[1] == "*" else parse_mac(words[1])
                    kv = {k: float(v.rstrip("%")) / (100 if v.endswith("%") else 1)
                          for k, _, v in (w.partition("=") for w in words[2:])}
                except ValueError:
                    self._count("air_matrix_errors")
                    continue
                rules.append((src, dst, kv))
        self._matrix = rules
        self._links = {}

    def link(self, dst: bytes) -> Link:
        ln = self._links.get(dst)
        if ln is None:
            d = self.default
            loss, delay, signal = d.loss, d.delay, float(d.signal)
            for src, to, kv in self._matrix:
                if (src is None or src == self.mac) and (to is None or to == dst):
                    loss = kv.get("loss", loss)
                    delay = kv.get("delay", delay * 1000) / 1000 if "delay" in kv else delay
                    signal = kv.get("signal", signal)
            ln = self._links[dst] = Link(loss, delay, int(signal))
        return ln

    # -- transmit ------------------------------------------------------------------------
    def send(self, frame: bytes, rate: int) -> bool:
        if self.closed:
            return False
        self._refresh()
        self._count("air_tx")
        tsft = int(time.time() * 1e6)
        ch = self.channel
        rng = self.rng
        for mon in self.monitors:
            self._emit(mon, HDR.pack(MAGIC, VERSION, ch, rate, self.default.signal, 0, tsft)
                       + frame, 0.0)
        a1 = frame[4:10]
        if a1[0] & 1:
            for mac, ppath in list(self.peers.items()):
                ln = self.link(mac)
                if ln.loss and rng.random() < ln.loss:
                    self._count("air_lost")
                    continue
                self._emit(ppath, HDR.pack(MAGIC, VERSION, ch, rate, ln.signal, 0, tsft) + frame,
                           ln.delay)
            return True
        path = self.peers.get(a1)
        if path is None:
            self._count("air_no_ack")
            return True  # sent, never acknowledged: nobody has that address
        ln = self.link(a1)
        retry = bytearray(frame)
        retry[1] |= 0x08
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("air_retries")
            if ln.loss and rng.random() < ln.loss:
                self._count("air_lost")
                continue
            data = frame if attempt == 0 else bytes(retry)
            if not self._emit(path, HDR.pack(MAGIC, VERSION, ch, rate, ln.signal,
                                             FLAG_RETRY_COPY if attempt else 0, tsft) + data,
                              ln.delay):
                return True
            if ln.loss and rng.random() < ln.loss:
                self._count("air_lost")  # the ACK
                continue
            return True
        self._count("air_no_ack")
        return True

    def _emit(self, path: str, data: bytes, delay: float) -> bool:
        if delay > 0:
            self._hseq += 1
            heapq.heappush(self._heap, (trio.current_time() + delay, self._hseq, path, data))
            self._heap_wakeup.set()
            self._count("air_delayed")
            return True
        q = self._backlog.get(path)
        if q is not None:  # keep the order behind what waits already
            if len(q) >= BACKLOG_MAX:
                self._count("air_full")
            else:
                q.append(data)
            return True
        try:
            self.sock.sendto(data, path)
        except (BlockingIOError, InterruptedError):
            # the receiver's queue is full (net.unix.max_dgram_qlen datagrams): wait in
            # our transmit queue, as a radio's frames wait for the medium
            self._backlog[path] = collections.deque((data,))
            self._backlog_wakeup.set()
            self._count("air_backlogged")
            return True
        except (ConnectionRefusedError, FileNotFoundError):
            self._count("air_stale")
            self._dir_mtime = -1.0
            try:
                if not self._alive(path):
                    os.unlink(path)  # nobody behind it: a killed stack's
            except OSError:
                pass
            return False
        except OSError:
            self._count("air_errors")
            return False
        self._count("air_tx_datagrams")
        return True

    async def backlog_task(self) -> None:
        """Retry the queued frames every millisecond until the receivers take them (an
        unconnected datagram socket cannot wait for one peer's queue to drain)."""
        while True:
            if not self._backlog:
                await self._backlog_wakeup.wait()
                self._backlog_wakeup = trio.Event()
                continue
            await trio.sleep(0.001)
            for path, q in list(self._backlog.items()):
                while q:
                    try:
                        self.sock.sendto(q[0], path)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        self._count("air_stale", len(q))
                        q.clear()
                        break
                    q.popleft()
                    self._count("air_tx_datagrams")
                if not q:
                    del self._backlog[path]

    async def delay_task(self) -> None:
        heap = self._heap
        while True:
            if not heap:
                await self._heap_wakeup.wait()
                self._heap_wakeup = trio.Event()
                continue
            due = heap[0][0]
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await self._heap_wakeup.wait()
                self._heap_wakeup = trio.Event()
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _due, _seq, path, data = heapq.heappop(heap)
                self._emit(path, data, 0.0)

    # -- receive -------------------------------------------------------------------------
    async def rx_task(self) -> None:
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            n = 0
            while True:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                self._input(data)
                n += 1
                if n % 64 == 0:
                    await trio.sleep(0)

    def _input(self, data: bytes) -> None:
        if len(data) < HDR.size:
            self._count("air_rx_bad")
            return
        magic, ver, ch, rate, signal, _flags, tsft = HDR.unpack_from(data)
        if magic != MAGIC or ver != VERSION:
            self._count("air_rx_bad")
            return
        if ch != self.channel:
            self._count("air_rx_other_channel")
            return
        self._count("air_rx")
        wlan = self.wlan
        if wlan is not None:
            wlan.radio_input(data[HDR.size:], RxInfo(ch, rate, signal, tsft))

    def describe(self) -> dict[str, str]:
        self._refresh()
        return {"air": self.air, "peers": str(len(self.peers)),
                "monitors": str(len(self.monitors)),
                "link_default": f"loss={self.default.loss} delay={self.default.delay * 1000:g}ms "
                                f"signal={self.default.signal}"}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _prob(opts: Options, key: str) -> float:
    text = opts.get_str(key)
    if not text:
        return 0.0
    try:
        v = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise OptionError(f"option {key}={text!r}: not a probability") from None
    if not 0.0 <= v <= 1.0:
        raise OptionError(f"option {key}={text}: out of range 0..1")
    return v


async def main(ctx: ModuleContext) -> None:
    opts = ctx.opts
    air = opts.get_str("air")
    if not air:
        raise OptionError("wifisim needs air=PATH (a directory the radios share)")
    macs = opts.get_str("mac")
    try:
        mac = parse_mac(macs) if macs else random_mac()
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    chan = opts.get_int("chan", 1, lo=1, hi=14) or 1
    delay = opts.get_float("delay", 0.0) or 0.0
    if delay < 0:
        raise OptionError("delay is milliseconds >= 0")
    radio = WifisimRadio(air, mac, chan, loss=_prob(opts, "loss"), delay=delay / 1000,
                         signal=opts.get_int("signal", -40, lo=-120, hi=0) or -40,
                         retries=opts.get_int("retries", 7, lo=0, hi=15) or 0,
                         seed=opts.get_int("seed", None))
    ctx.add_cleanup(radio.close)
    name = opts.get_str("name") or ctx.stack.unique_name("wlan")
    attach(ctx, radio, name)
    ctx.nursery.start_soon(radio.rx_task, name=f"{name}-air-rx")
    ctx.nursery.start_soon(radio.delay_task, name=f"{name}-air-delay")
    ctx.nursery.start_soon(radio.backlog_task, name=f"{name}-air-backlog")
    ctx.started()


IO_PKT_MODULE = ModuleEntry(kind="driver", api=MODULE_API_VERSION, entry=main,
                            description="simulated 802.11 radio on a shared air (net80211)")
