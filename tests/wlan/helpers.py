"""A BSS of in-process stacks on a simulated air (devnp-wifisim), configured through
the 802.11 control file as ifconfig does, and a monitor of the whole air."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from rmgr.nodes import Caller
from stack.core import Stack
from stack.l2.iface import IFF_UP
from stack.net80211 import IEEE80211, WlanInterface
from stack.net80211.wire import radiotap
from tests.conftest import running_stack

ROOT = Caller(uid=0, gid=0, pid=os.getpid())
SSID = "io-pkt lab"
PASS = "correct horse battery"


def mac(i: int) -> str:
    return f"02:00:00:00:00:{i:02x}"


def addr(i: int) -> str:
    return f"10.80.0.{i}"


@dataclass
class Bss:
    air: str
    ap: Stack
    stas: list[Stack]
    extra: list[Stack] = field(default_factory=list)

    @staticmethod
    def wlan(stack: Stack) -> WlanInterface:
        w = stack.interfaces["wlan0"]
        assert isinstance(w, WlanInterface)
        return w

    @property
    def all(self) -> list[Stack]:
        return [self.ap, *self.stas]


async def ifconfig80211(stack: Stack, line: str) -> str:
    svc = stack.services.get(IEEE80211)
    assert svc is not None
    return await svc.command(line, ROOT)


async def wait_run(stacks: list[Stack], timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not all(Bss.wlan(s).state == "RUN" for s in stacks):
            await trio.sleep(0.05)


@contextlib.asynccontextmanager
async def bss(air: str, nsta: int, *, loss: float = 0.0, passphrase: str | None = PASS,
              sta_pass: list[str | None] | None = None, chan: int = 6, wait: bool = True,
              tcpip: str = "", ap_drivers: list[tuple[str, str]] = ()) -> AsyncIterator[Bss]:  # type: ignore[assignment]
    """An AP (10.80.0.1, MAC :01) and ``nsta`` stations (10.80.0.11.., MACs :11..)."""
    lo = f",loss={loss}" if loss else ""
    async with contextlib.AsyncExitStack() as es:
        ap = await es.enter_async_context(running_stack(
            drivers=[("wifisim", f"air={air},name=wlan0,mac={mac(1)},chan={chan}{lo},seed=1"),
                     *ap_drivers], tcpip=tcpip))
        stas = []
        for i in range(nsta):
            stas.append(await es.enter_async_context(running_stack(
                drivers=[("wifisim", f"air={air},name=wlan0,mac={mac(0x11 + i)}{lo},"
                                     f"seed={i + 2}")], tcpip=tcpip)))
        key = f" wpakey '{passphrase}'" if passphrase else ""
        await ifconfig80211(ap, f"wlan0 ssid '{SSID}' chan {chan}{key} mediaopt hostap")
        ap.inet.add_address("wlan0", addr(1) + "/24")
        Bss.wlan(ap).set_flags(IFF_UP)
        for i, s in enumerate(stas):
            p = sta_pass[i] if sta_pass is not None else passphrase
            await ifconfig80211(s, f"wlan0 ssid '{SSID}'" + (f" wpakey '{p}'" if p else ""))
            s.inet.add_address("wlan0", addr(11 + i) + "/24")
            Bss.wlan(s).set_flags(IFF_UP)
        b = Bss(air, ap, stas)
        if wait:
            await wait_run([ap, *[s for i, s in enumerate(stas)
                                  if sta_pass is None or sta_pass[i] == passphrase]])
        yield b


class Monitor:
    """A monitor socket in the air (``mon-*``): every frame any radio sends, as a pcap
    with radiotap headers built from the simulated PHY's header."""

    HDR = struct.Struct("!4sBBBbHQ")

    def __init__(self, air: str, name: str = "mon-test") -> None:
        self.path = os.path.join(air, name)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.frames: list[tuple[int, bytes]] = []  # (radiotap+frame) records

    def drain(self) -> None:
        while True:
            try:
                d = self.sock.recv(65536)
            except BlockingIOError:
                return
            _m, _v, ch, rate, sig, _f, tsft = self.HDR.unpack_from(d)
            self.frames.append((tsft, radiotap(tsft, rate, ch, sig) + d[self.HDR.size:]))

    async def run(self) -> None:
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            self.drain()

    def write_pcap(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 127))
            for tsft, rec in self.frames:
                f.write(struct.pack("<IIII", tsft // 1000000, tsft % 1000000, len(rec),
                                    len(rec)) + rec)

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


class Injector:
    """A fake radio in the air: sends raw 802.11 frames to one radio (by MAC)."""

    def __init__(self, air: str) -> None:
        self.air = air
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    async def send(self, to_mac: str, frame: bytes, chan: int = 6, signal: int = -30) -> None:
        """One frame; waits (yielding to the stacks, which run in the same trio run)
        while the receiver's queue is full (net.unix.max_dgram_qlen is small)."""
        hdr = Monitor.HDR.pack(b"WSIM", 1, chan, 108, signal, 0, 0)
        path = os.path.join(self.air, to_mac.replace(":", ""))
        while True:
            try:
                self.sock.sendto(hdr + frame, path)
                return
            except BlockingIOError:
                await trio.sleep(0.002)

    def close(self) -> None:
        self.sock.close()
