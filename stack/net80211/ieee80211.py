"""The 802.11 MAC layer (NetBSD's net80211: ieee80211_input/output/proto/node/hostap/sta).

A wireless driver implements ``Radio`` (send an 802.11 frame, tune to a channel) and
hands every received frame to ``WlanInterface.radio_input(frame, RxInfo)``. The
``WlanInterface`` is what the stack sees: an Ethernet-like interface (Ethernet medium,
ARP, IPv4/IPv6, bridge, pf and bpf unchanged). Its ``transmit`` gets Ethernet frames and
turns them into 802.11 data frames (LLC/SNAP, ToDS/FromDS addressing, CCMP); received
data frames are decrypted, checked and turned back into Ethernet frames for
``Interface.deliver``.

Modes: station (scan, open authentication, association with an RSN element, the
supplicant side of the 4-way and group key handshakes, beacon loss, roaming) and
``hostap`` (beacons every 100 TU, probe responses, authentication/association with a
station table and aging, the authenticator side, per-station PTKs and a GTK, intra-BSS
forwarding). One task per interface runs the mode; a configuration change restarts it.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from stack.crypto.framework import Crypto
from stack.l2.iface import IFF_RUNNING, CaptureTap, Interface
from stack.net80211 import wire as W
from stack.net80211.ccmp import CCMP_HDR, CCMP_MIC, CcmpError, CcmpKey, parse_ccmp_header
from stack.net80211.counters import WLAN_COUNTERS
from stack.net80211.wpa import (
    KI_ACK,
    KI_ENCRYPTED,
    KI_INSTALL,
    KI_MIC,
    KI_PAIRWISE,
    KI_REQUEST,
    KI_SECURE,
    KI_VERSION_AES_HMAC_SHA1,
    EapolError,
    EapolKey,
    Ptk,
    derive_ptk,
    gtk_kde,
    parse_kdes,
    psk,
    unwrap_key_data,
    wrap_key_data,
)
from stack.packet import Buffer, Packet, TxMeta

if TYPE_CHECKING:  # types only: the service holds the interfaces, which report to it
    from stack.net80211 import Net80211

log = logging.getLogger("io-pkt.wlan")

STA, HOSTAP = "sta", "hostap"
BEACON_INTERVAL = 100  # TU
BEACON_LOSS = 7  # beacons missed before the BSS is taken as lost
HANDSHAKE_TIMEOUT = 0.5  # s before an EAPOL message is sent again
HANDSHAKE_TRIES = 4
MAX_STATIONS = 64


@dataclass
class RxInfo:
    """What the radio knows of a received frame (radiotap's fields)."""

    channel: int
    rate: int = W.DEFAULT_RATE  # 500 kb/s units
    signal: int = -40  # dBm
    tsft: int = 0  # µs


class Radio:
    """The driver side (NetBSD's ieee80211com): a wireless driver subclasses this."""

    driver = "radio"
    #: the channels the radio tunes to (scans go over them)
    channels: tuple[int, ...] = tuple(range(1, 12))
    #: driver counter names counted into the interface's counters
    counter_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, mac: bytes, channel: int = 1) -> None:
        self.mac = mac
        self.channel = channel
        self.wlan: WlanInterface | None = None

    def set_channel(self, chan: int) -> None:
        self.channel = chan

    def send(self, frame: bytes, rate: int) -> bool:
        """Put one 802.11 frame (no FCS) on the air; never blocks."""
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        return None


@dataclass
class ScanEntry:
    bssid: bytes
    ssid: bytes
    channel: int
    signal: int
    cap: int
    interval: int
    rsn: W.Rsn | None
    rsn_ie: bytes
    seen: float
    tsf: int = 0
    fails: int = 0
    beacons: int = 0


@dataclass(eq=False)
class Node:
    """A peer: the BSS (station mode) or an associated station (hostap)."""

    mac: bytes
    state: str = "auth"  # auth, assoc
    aid: int = 0
    authorized: bool = False
    rsn_ie: bytes = b""
    last_seen: float = 0.0
    signal: int = 0
    ptk: Ptk | None = None
    key: CcmpKey | None = None
    # authenticator
    replay: int = 0
    anonce: bytes = b""
    hs_state: str = ""  # msg1, msg3, gmsg1, done
    hs_deadline: float = 0.0
    hs_tries: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    joined: float = 0.0


def _rand(n: int) -> bytes:
    return os.urandom(n)


class WlanInterface(Interface):
    """A wireless interface: 802.11 below, Ethernet above (module docstring)."""

    kind = "wlan"
    counter_names: ClassVar[frozenset[str]] = WLAN_COUNTERS

    def __init__(self, name: str, radio: Radio, service: Net80211, crypto: Crypto) -> None:
        type(self).counter_names = WLAN_COUNTERS | radio.counter_names
        super().__init__(name, mac=radio.mac, mtu=1500, driver=radio.driver)
        self.radio = radio
        radio.wlan = self
        self.service = service
        self.crypto = crypto
        #: other link types bpf can capture (DLT → taps): radiotap + 802.11
        self.dlt_taps: dict[int, list[CaptureTap]] = {W.DLT_IEEE802_11_RADIO: []}
        # configuration (ifconfig)
        self.opmode = STA
        self.ssid = b""
        self.des_chan = 0  # 0: any (scan)
        self.passphrase: str | None = None
        self.pmk: bytes | None = None
        self.inact_timeout = 300.0  # s without a frame before an AP forgets a station
        # state
        self.state = "INIT"  # INIT SCAN AUTH ASSOC RUN (station), RUN (hostap)
        self.scan_table: dict[bytes, ScanEntry] = {}
        self.bss: ScanEntry | None = None
        self.node: Node | None = None  # station mode: the AP
        self.nodes: dict[bytes, Node] = {}  # hostap: the stations
        self.gtk: CcmpKey | None = None
        self.gtk_bytes = b""
        self.gtk_id = 1
        self.group_keys: dict[int, CcmpKey] = {}  # station mode: received GTKs by key id
        self._seq = 0
        self._rxseq: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        self._wake = trio.Event()
        self._restart = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._aid_next = 1
        # station-mode handshake state
        self._auth_status: int | None = None
        self._assoc_status: int | None = None
        self._lost: str | None = None
        self._tptk: Ptk | None = None
        self._snonce = b""
        self._anonce = b""
        self._replay_seen = -1
        self._scanning = False
        self._scan_done = trio.Event()
        self._roam_to: ScanEntry | None = None
        self.last_deauth = 0.0

    # -- interface hooks ---------------------------------------------------------------
    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        nursery.start_soon(self._supervise, name=f"{self.name}-80211")

    def set_link_up(self, up: bool) -> None:
        # RUNNING follows the association (station) or the BSS being up (hostap)
        self.reconfigure()

    def transmit(self, bufs: Sequence[Buffer], meta: TxMeta | None) -> bool:
        frame = b"".join(bytes(b) for b in bufs) if len(bufs) != 1 else bytes(bufs[0])
        return self.output_ether(frame)

    def destroy(self) -> None:
        self._teardown(send=False)
        self.radio.close()

    def describe(self) -> dict[str, str]:
        d = {"opmode": self.opmode, "state": self.state, "ssid": W.ssid_str(self.ssid),
             "channel": str(self.radio.channel),
             "bssid": W.mac_str(self.bss.bssid) if self.bss else "-",
             "wpa": "wpa2-psk ccmp" if self.passphrase else "none"}
        d.update(self.radio.describe())
        return d

    # -- configuration -----------------------------------------------------------------
    def configure(self, *, ssid: bytes | None = None, chan: int | None = None,
                  passphrase: str | None | bool = False, opmode: str | None = None) -> None:
        if opmode is not None:
            self.opmode = opmode
        if ssid is not None:
            self.ssid = ssid
        if chan is not None:
            self.des_chan = chan
        if passphrase is not False:
            assert passphrase is None or isinstance(passphrase, str)
            self.passphrase = passphrase
        self.pmk = psk(self.passphrase, self.ssid) if self.passphrase and self.ssid else None
        self.reconfigure()

    def reconfigure(self) -> None:
        self._restart.set()

    @property
    def wpa(self) -> bool:
        return self.pmk is not None

    def rsn_ie(self) -> bytes:
        return W.Rsn().element()

    # -- the mode task -------------------------------------------------------------------
    async def _supervise(self) -> None:
        while True:
            self._restart = trio.Event()
            async with trio.open_nursery() as n:
                if self.up and self.ssid:
                    n.start_soon(self._ap_run if self.opmode == HOSTAP else self._sta_run)
                await self._restart.wait()
                n.cancel_scope.cancel()
            self._teardown(send=True)

    def _teardown(self, send: bool) -> None:
        if send and self.opmode == HOSTAP:
            for node in list(self.nodes.values()):
                self._send_mgmt(W.ST_DEAUTH, node.mac, struct.pack("<H", W.R_AUTH_LEAVE))
        if send and self.node is not None and self.bss is not None:
            self._send_mgmt(W.ST_DEAUTH, self.bss.bssid, struct.pack("<H", W.R_AUTH_LEAVE),
                            bssid=self.bss.bssid)
        for node in list(self.nodes.values()):
            self._drop_node(node, "down", send=False)
        self._sta_reset()
        self._free_group()
        self.state = "INIT"
        self._set_running(False)

    def _set_running(self, on: bool) -> None:
        old = self.flags
        if on:
            self.flags |= IFF_RUNNING
        else:
            self.flags &= ~IFF_RUNNING
        if old != self.flags and self.stack is not None:
            self.stack.interface_changed(self)

    def _kick(self) -> None:
        self._wake.set()
        self._wake = trio.Event()

    async def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not cond():
                await self._wake.wait()
            return True
        return cond()

    def _event(self, what: str, text: str) -> None:
        self.service.event(self, what, text)

    # -- station mode ------------------------------------------------------------------
    def _sta_reset(self) -> None:
        if self.node is not None and self.node.key is not None:
            self.node.key.free()
        self.node = None
        for k in self.group_keys.values():
            k.free()
        self.group_keys = {}
        self._tptk = None
        self._replay_seen = -1
        self._lost = None

    async def _sta_run(self) -> None:
        backoff = 0.2
        while True:
            self.state = "SCAN"
            bss = await self.scan()
            if bss is None:
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.2
            ok = await self._sta_join(bss, reassoc=False)
            while ok:
                roam = await self._sta_connected(bss)
                if roam is None:
                    break
                self.counters["roams"] += 1
                bss = roam
                ok = await self._sta_join(bss, reassoc=True)
            if not ok:
                bss.fails += 1
            self._sta_reset()
            self._set_running(False)

    async def scan(self, *, active: bool = True, dwell: float = 0.06) -> ScanEntry | None:
        """Visit the channels (or the configured one), probing when ``active``; the
        best BSS of our SSID and security seen, or None."""
        self.counters["scans"] += 1
        self._scanning = True
        start = time.monotonic()
        home = self.radio.channel
        chans = [self.des_chan] if self.des_chan else list(self.radio.channels)
        try:
            for ch in chans:
                self.radio.set_channel(ch)
                if active:
                    for _ in range(2):
                        self._send_probe_req()
                        await trio.sleep(dwell / 2)
                else:
                    await trio.sleep(max(dwell, BEACON_INTERVAL * W.TU * 1.2))
        finally:
            self._scanning = False
            if self.node is not None:
                self.radio.set_channel(home)
        self._scan_done.set()
        self._scan_done = trio.Event()
        self._event("SCAN", f"done {len(self.scan_table)} entries")
        return self._best(since=start - 1.0)

    def _best(self, since: float, exclude: bytes = b"") -> ScanEntry | None:
        cands = [e for e in self.scan_table.values()
                 if e.ssid == self.ssid and e.seen >= since and e.bssid != exclude
                 and self._acceptable(e)]
        if not cands:
            return None
        return max(cands, key=lambda e: e.signal - 10 * min(e.fails, 5))

    def _acceptable(self, e: ScanEntry) -> bool:
        if self.wpa:
            r = e.rsn
            return (r is not None and W.CIPHER_CCMP in r.pairwise and r.group == W.CIPHER_CCMP
                    and W.AKM_PSK in r.akms)
        return not e.cap & W.CAP_PRIVACY

    def _send_probe_req(self) -> None:
        body = W.ie(W.E_SSID, self.ssid) + W.ie(W.E_RATES, W.RATES) + W.ie(W.E_XRATES, W.XRATES)
        self._send_mgmt(W.ST_PROBE_REQ, W.BROADCAST, body, bssid=W.BROADCAST)

    async def _sta_join(self, bss: ScanEntry, reassoc: bool) -> bool:
        old = self.bss
        self._sta_reset()
        self.bss = bss
        self.radio.set_channel(bss.channel)
        self.node = Node(bss.bssid, last_seen=trio.current_time())
        self.counters["assoc_attempts"] += 1
        # open system authentication
        self.state = "AUTH"
        self._auth_status = None
        for _ in range(3):
            self._send_mgmt(W.ST_AUTH, bss.bssid, struct.pack("<HHH", 0, 1, 0), bssid=bss.bssid)
            if await self._wait(lambda: self._auth_status is not None, 0.3):
                break
        if self._auth_status != W.S_SUCCESS:
            self.counters["auth_failed"] += 1
            return False
        # association with our RSN element
        self.state = "ASSOC"
        self._assoc_status = None
        ies = W.ie(W.E_SSID, self.ssid) + W.ie(W.E_RATES, W.RATES) + W.ie(W.E_XRATES, W.XRATES)
        if self.wpa:
            ies += self.rsn_ie()
        cap = W.CAP_ESS | (W.CAP_PRIVACY if self.wpa else 0)
        if reassoc and old is not None:
            sub, body = W.ST_REASSOC_REQ, struct.pack("<HH", cap, 10) + old.bssid + ies
        else:
            sub, body = W.ST_ASSOC_REQ, struct.pack("<HH", cap, 10) + ies
        for _ in range(3):
            self._send_mgmt(sub, bss.bssid, body, bssid=bss.bssid)
            if await self._wait(lambda: self._assoc_status is not None, 0.3):
                break
        if self._assoc_status != W.S_SUCCESS:
            self.counters["assoc_failed"] += 1
            return False
        if self.wpa:
            self.state = "ASSOC"  # 4-way handshake: the authenticator speaks first
            node = self.node
            if not await self._wait(lambda: self._lost is not None or node.authorized,
                                    HANDSHAKE_TIMEOUT * (HANDSHAKE_TRIES + 2)):
                self.counters["handshake_timeouts"] += 1
                self._send_mgmt(W.ST_DEAUTH, bss.bssid, struct.pack("<H", W.R_4WAY_TIMEOUT),
                                bssid=bss.bssid)
                self.counters["deauth_sent"] += 1
                return False
            if self._lost is not None:
                return False
        else:
            self.node.authorized = True
        self.counters["assoc_ok"] += 1
        self.state = "RUN"
        bss.fails = 0
        bss.beacons = 0
        self.node.last_seen = trio.current_time()
        self._set_running(True)
        self._event("REASSOC" if reassoc else "ASSOC",
                    f"bssid {W.mac_str(bss.bssid)} ssid {W.ssid_str(bss.ssid)} "
                    f"chan {bss.channel}")
        return True

    async def _sta_connected(self, bss: ScanEntry) -> ScanEntry | None:
        """Run until the BSS is lost (None) or a better one is found (it)."""
        interval = max(bss.interval, 10) * W.TU
        last_beacon = trio.current_time()
        beacons = bss.beacons
        self._roam_to = None
        while True:
            await self._wait(lambda: self._lost is not None or self._roam_to is not None, 0.05)
            now = trio.current_time()
            if bss.beacons != beacons:
                beacons = bss.beacons
                last_beacon = now
            if self._lost is not None:
                self._event("DISASSOC", f"bssid {W.mac_str(bss.bssid)} reason {self._lost}")
                return None
            if now - last_beacon > BEACON_LOSS * interval:
                self.counters["beacon_miss"] += 1
                self._event("DISASSOC", f"bssid {W.mac_str(bss.bssid)} reason beacon-loss")
                return None
            if self._roam_to is not None:
                return self._roam_to

    def _consider_roam(self, e: ScanEntry) -> None:
        """A beacon of another BSS of our SSID: roam when it is 10 dB stronger."""
        cur = self.bss
        if (self.state == "RUN" and cur is not None and e.bssid != cur.bssid
                and e.ssid == self.ssid and self._acceptable(e) and e.signal >= cur.signal + 10
                and e.fails == 0):
            self._roam_to = e
            self._kick()

    # -- hostap mode -------------------------------------------------------------------
    async def _ap_run(self) -> None:
        chan = self.des_chan or self.radio.channel or 1
        self.radio.set_channel(chan)
        self._new_gtk()
        self.state = "RUN"
        self._set_running(True)
        self._event("CREATE", f"hostap ssid {W.ssid_str(self.ssid)} chan {chan}")
        period = BEACON_INTERVAL * W.TU
        next_beacon = trio.current_time()
        while True:
            now = trio.current_time()
            if now >= next_beacon:
                self._send_beacon()
                next_beacon += period
                if next_beacon < now:
                    next_beacon = now + period
                self._ap_timers(now)
            await trio.sleep_until(next_beacon)

    def _ap_ies(self) -> bytes:
        ies = (W.ie(W.E_SSID, self.ssid) + W.ie(W.E_RATES, W.RATES)
               + W.ie(W.E_DS, bytes((self.radio.channel,))))
        ies += W.ie(W.E_TIM, bytes((0, 1, 0, 0)))
        ies += W.ie(W.E_XRATES, W.XRATES)
        if self.wpa:
            ies += self.rsn_ie()
        return ies

    def _ap_cap(self) -> int:
        return W.CAP_ESS | W.CAP_SHORT_SLOT | (W.CAP_PRIVACY if self.wpa else 0)

    def _tsf(self) -> int:
        return int(time.time() * 1e6)

    def _send_beacon(self) -> None:
        body = W.beacon_body(self._tsf(), BEACON_INTERVAL, self._ap_cap(), self._ap_ies())
        self._send_mgmt(W.ST_BEACON, W.BROADCAST, body)
        self.counters["beacons_sent"] += 1

    def _ap_timers(self, now: float) -> None:
        for node in list(self.nodes.values()):
            if now - node.last_seen > self.inact_timeout:
                self.counters["sta_aged"] += 1
                self._drop_node(node, "inactivity", reason=W.R_ASSOC_EXPIRE)
                continue
            if node.hs_state in ("msg1", "msg3", "gmsg1") and now >= node.hs_deadline:
                if node.hs_tries >= HANDSHAKE_TRIES:
                    self.counters["handshake_timeouts"] += 1
                    self._drop_node(node, "handshake-timeout",
                                    reason=W.R_GROUP_TIMEOUT if node.hs_state == "gmsg1"
                                    else W.R_4WAY_TIMEOUT)
                    continue
                if node.hs_state == "msg1":
                    self._auth_msg1(node)
                elif node.hs_state == "msg3":
                    self._auth_msg3(node)
                else:
                    self._auth_gmsg1(node)

    def _new_gtk(self) -> None:
        self._free_group()
        self.gtk_id = 2 if self.gtk_id == 1 else 1
        self.gtk_bytes = _rand(16)
        if self.wpa:
            self.gtk = CcmpKey(self.crypto, self.gtk_bytes, self.gtk_id)

    def _free_group(self) -> None:
        if self.gtk is not None:
            self.gtk.free()
            self.gtk = None

    def rekey_group(self) -> int:
        """A new GTK, sent to every authorized station with the group key handshake."""
        if self.opmode != HOSTAP or not self.wpa or self.state != "RUN":
            return 0
        self._new_gtk()
        self.counters["group_rekeys"] += 1
        n = 0
        for node in self.nodes.values():
            if node.authorized:
                node.hs_tries = 0
                self._auth_gmsg1(node)
                n += 1
        return n

    def _drop_node(self, node: Node, why: str, *, reason: int = 0, send: bool = True) -> None:
        if send and reason:
            self._send_mgmt(W.ST_DEAUTH, node.mac, struct.pack("<H", reason))
            self.counters["deauth_sent"] += 1
        if self.nodes.get(node.mac) is node:
            del self.nodes[node.mac]
            self.counters["sta_left"] += 1
            self._event("LEAVE", f"sta {W.mac_str(node.mac)} reason {why}")
        if node.key is not None:
            node.key.free()
            node.key = None

    # -- transmit ----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFF
        return self._seq

    def _send_mgmt(self, subtype: int, da: bytes, body: bytes, *,
                   bssid: bytes | None = None) -> None:
        hdr = W.build_header(W.T_MGMT, subtype, 0, da, self.mac,
                             bssid if bssid is not None else self.mac, self._next_seq())
        self.counters["tx_mgmt"] += 1
        self._radio_send(hdr + body)

    def _radio_send(self, frame: bytes) -> None:
        c = self.counters
        taps = self.dlt_taps[W.DLT_IEEE802_11_RADIO]
        if taps:
            rt = W.radiotap(self._tsf(), W.DEFAULT_RATE, self.radio.channel, 0)
            self._run_dlt_taps(taps, "out", (rt, frame))
        if self.radio.send(frame, W.DEFAULT_RATE):
            c["tx_frames"] += 1
            c["tx_bytes"] += len(frame)
        else:
            c["tx_radio_drop"] += 1

    def _run_dlt_taps(self, taps: list[CaptureTap], direction: str,
                      bufs: Sequence[Buffer]) -> None:
        for tap in list(taps):
            try:
                tap(self, direction, bufs)
            except Exception:
                self.counters["tap_errors"] += 1

    def _send_data(self, hdr: bytes, payload: bytes, key: CcmpKey | None) -> None:
        c = self.counters
        c["tx_data"] += 1
        if key is None:
            self._radio_send(hdr + payload)
            return

        def sent(err: int, mpdu: bytes) -> None:
            if err:
                c["tx_crypto_error"] += 1
            else:
                c["tx_encrypted"] += 1
                self._radio_send(mpdu)

        key.encrypt(hdr, 24, payload, sent)

    def output_ether(self, frame: bytes) -> bool:
        """An Ethernet frame from the stack → an 802.11 data frame."""
        c = self.counters
        if len(frame) < 14:
            c["tx_runt"] += 1
            return False
        da, sa = frame[0:6], frame[6:12]
        payload = W.LLC_SNAP + frame[12:]
        if self.opmode == HOSTAP:
            if self.state != "RUN":
                c["tx_not_associated"] += 1
                return False
            if da[0] & 1:
                hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_FROMDS, da, self.mac, sa,
                                     self._next_seq())
                if self.wpa and self.gtk is None:
                    return False
                self._send_data(hdr, payload, self.gtk)
                return True
            node = self.nodes.get(da)
            if node is None or not node.authorized:
                c["tx_no_station"] += 1
                return False
            hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_FROMDS, da, self.mac, sa,
                                 self._next_seq())
            node.tx_bytes += len(payload)
            self._send_data(hdr, payload, node.key)
            return True
        node, bss = self.node, self.bss
        if self.state != "RUN" or node is None or bss is None or not node.authorized:
            c["tx_not_associated"] += 1
            return False
        if sa != self.mac:
            c["tx_foreign_source"] += 1  # a 3-address station sends only its own frames
            return False
        hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_TODS, bss.bssid, self.mac, da,
                             self._next_seq())
        self._send_data(hdr, payload, node.key)
        return True

    def _send_eapol(self, node: Node, frame: bytes, bssid: bytes) -> None:
        payload = W.LLC_SNAP + struct.pack("!H", W.ETHERTYPE_EAPOL) + frame
        if self.opmode == HOSTAP:
            hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_FROMDS, node.mac, self.mac,
                                 self.mac, self._next_seq())
        else:
            hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_TODS, bssid, self.mac, bssid,
                                 self._next_seq())
        # EAPOL-Key frames of a rekey go under the PTK; the first handshake in the clear
        self._send_data(hdr, payload, node.key if node.authorized else None)

    # -- receive -----------------------------------------------------------------------
    def radio_input(self, frame: bytes, rx: RxInfo) -> None:
        """Driver → net80211: one received 802.11 frame (no FCS)."""
        c = self.counters
        c["rx_frames"] += 1
        c["rx_bytes"] += len(frame)
        taps = self.dlt_taps[W.DLT_IEEE802_11_RADIO]
        if taps:
            self._run_dlt_taps(taps, "in", (W.radiotap(rx.tsft, rx.rate, rx.channel,
                                                       rx.signal), frame))
        if not self.up:
            c["rx_down"] += 1
            return
        try:
            h = W.parse_header(frame)
        except W.WireError as exc:
            c["rx_bad_" + exc.reason] += 1
            return
        if h.addr1 != self.mac and not h.addr1[0] & 1:
            c["rx_not_for_us"] += 1
            return
        if h.fc1 & W.FC1_MOREFRAG or h.frag:
            c["rx_frag_unsupported"] += 1
            return
        if h.type != W.T_CTL and not h.addr1[0] & 1:
            seen = self._rxseq.get(h.addr2)
            if h.retry and seen == (h.seq, h.frag):
                c["rx_dup"] += 1
                return
            self._rxseq[h.addr2] = (h.seq, h.frag)
            self._rxseq.move_to_end(h.addr2)
            if len(self._rxseq) > 1024:
                self._rxseq.popitem(last=False)
        if h.type == W.T_MGMT:
            c["rx_mgmt"] += 1
            try:
                self._mgmt_input(h, frame, rx)
            except W.WireError as exc:
                c["rx_bad_" + exc.reason] += 1
        else:
            c["rx_data"] += 1
            self._data_input(h, frame, rx)

    # -- management input ----------------------------------------------------------------
    def _mgmt_input(self, h: W.Header, frame: bytes, rx: RxInfo) -> None:
        c = self.counters
        st = h.subtype
        body = memoryview(frame)[24:]
        if st in (W.ST_BEACON, W.ST_PROBE_RESP):
            c["rx_beacon" if st == W.ST_BEACON else "rx_probe_resp"] += 1
            self._scan_input(h, W.parse_beacon(body), rx)
            return
        if self.opmode == HOSTAP:
            self._ap_mgmt(h, st, body, rx)
        else:
            self._sta_mgmt(h, st, body, rx)

    def _scan_input(self, h: W.Header, b: W.Beacon, rx: RxInfo) -> None:
        if self.opmode == HOSTAP:
            self.counters["rx_mgmt_ignored"] += 1
            return
        ssid = b.ies.get(W.E_SSID)
        if ssid is None:
            raise W.WireError("ie")
        rsn_body = b.ies.get(W.E_RSN)
        rsn = W.parse_rsn(rsn_body) if rsn_body is not None else None
        ds = b.ies.get(W.E_DS)
        chan = ds[0] if ds else rx.channel
        if chan != rx.channel:
            self.counters["rx_mgmt_ignored"] += 1  # heard from a neighbouring channel
            return
        bssid = h.addr3
        e = self.scan_table.get(bssid)
        now = time.monotonic()
        if e is None:
            if len(self.scan_table) >= 256:
                oldest = min(self.scan_table.values(), key=lambda x: x.seen)
                del self.scan_table[oldest.bssid]
            e = ScanEntry(bssid, ssid, chan, rx.signal, b.cap, b.interval, rsn,
                          W.ie(W.E_RSN, rsn_body) if rsn_body is not None else b"", now, b.tsf)
            self.scan_table[bssid] = e
            self.counters["scan_entries"] += 1
        else:
            e.ssid, e.channel, e.cap, e.interval, e.rsn = ssid, chan, b.cap, b.interval, rsn
            e.rsn_ie = W.ie(W.E_RSN, rsn_body) if rsn_body is not None else b""
            e.signal = (e.signal * 3 + rx.signal) // 4 if e.seen > now - 2 else rx.signal
            e.seen, e.tsf = now, b.tsf
        e.beacons += 1
        if self.bss is not None and bssid == self.bss.bssid:
            if self.node is not None:
                self.node.last_seen = trio.current_time()
                self.node.signal = rx.signal
        else:
            self._consider_roam(e)

    def _sta_mgmt(self, h: W.Header, st: int, body: memoryview, rx: RxInfo) -> None:
        c = self.counters
        bss = self.bss
        from_bss = bss is not None and h.addr2 == bss.bssid and h.addr3 == bss.bssid
        if st == W.ST_AUTH:
            c["rx_auth"] += 1
            alg, seq, status = W.parse_fixed(body, "<HHH")
            if not from_bss or self.state != "AUTH" or seq != 2 or alg != 0:
                c["rx_mgmt_bad_state"] += 1
                return
            self._auth_status = status
            self._kick()
        elif st in (W.ST_ASSOC_RESP, W.ST_REASSOC_RESP):
            c["rx_assoc_resp"] += 1
            _cap, status, aid = W.parse_fixed(body, "<HHH")
            W.parse_ies(body[6:])
            if not from_bss or self.state != "ASSOC" or self._assoc_status is not None:
                c["rx_mgmt_bad_state"] += 1
                return
            if self.node is not None:
                self.node.aid = aid & 0x3FFF
            self._assoc_status = status
            self._kick()
        elif st in (W.ST_DEAUTH, W.ST_DISASSOC):
            c["rx_deauth" if st == W.ST_DEAUTH else "rx_disassoc"] += 1
            (reason,) = W.parse_fixed(body, "<H")
            if not from_bss or self.node is None:
                c["rx_deauth_foreign"] += 1
                return
            self._lost = f"{'deauth' if st == W.ST_DEAUTH else 'disassoc'}-{reason}"
            self._kick()
        elif st == W.ST_PROBE_REQ:
            c["rx_probe_req"] += 1  # only an AP answers
        else:
            c["rx_mgmt_ignored"] += 1

    def _ap_mgmt(self, h: W.Header, st: int, body: memoryview, rx: RxInfo) -> None:
        c = self.counters
        if self.state != "RUN":
            c["rx_mgmt_ignored"] += 1
            return
        sta = h.addr2
        if sta[0] & 1:
            c["rx_mgmt_ignored"] += 1  # a group address as a transmitter
            return
        if st == W.ST_PROBE_REQ:
            c["rx_probe_req"] += 1
            ies = W.parse_ies(body)
            ssid = ies.get(W.E_SSID)
            if ssid is None:
                raise W.WireError("ie")
            if ssid and ssid != self.ssid:
                return
            resp = W.beacon_body(self._tsf(), BEACON_INTERVAL, self._ap_cap(), self._ap_ies())
            self._send_mgmt(W.ST_PROBE_RESP, sta, resp)
            c["probe_resp_sent"] += 1
            return
        if h.addr3 != self.mac or (h.addr1 != self.mac):
            c["rx_mgmt_ignored"] += 1  # another BSS's
            return
        node = self.nodes.get(sta)
        now = trio.current_time()
        if st == W.ST_AUTH:
            c["rx_auth"] += 1
            alg, seq, _status = W.parse_fixed(body, "<HHH")
            if seq != 1:
                c["rx_mgmt_bad_state"] += 1
                return
            if alg != 0:
                c["rx_auth_unsupported"] += 1
                self._send_mgmt(W.ST_AUTH, sta, struct.pack("<HHH", alg, 2, W.S_UNSUPP_ALG))
                return
            if node is None:
                if len(self.nodes) >= MAX_STATIONS:
                    c["sta_refused"] += 1
                    self._send_mgmt(W.ST_AUTH, sta, struct.pack("<HHH", 0, 2, W.S_TOO_MANY_STAS))
                    return
                node = Node(sta, joined=now)
                self.nodes[sta] = node
            else:  # authenticating again: start over
                if node.key is not None:
                    node.key.free()
                node.key = None
                node.authorized = False
                node.state = "auth"
                node.hs_state = ""
            node.last_seen = now
            node.signal = rx.signal
            self._send_mgmt(W.ST_AUTH, sta, struct.pack("<HHH", 0, 2, W.S_SUCCESS))
        elif st in (W.ST_ASSOC_REQ, W.ST_REASSOC_REQ):
            c["rx_assoc_req" if st == W.ST_ASSOC_REQ else "rx_reassoc_req"] += 1
            if node is None:
                c["rx_mgmt_bad_state"] += 1
                self._send_mgmt(W.ST_DEAUTH, sta, struct.pack("<H", W.R_NOT_AUTHED))
                c["deauth_sent"] += 1
                return
            fixed = 4 if st == W.ST_ASSOC_REQ else 10
            W.parse_fixed(body, "<HH")
            if len(body) < fixed:
                raise W.WireError("body")
            ies = W.parse_ies(body[fixed:])
            status = W.S_SUCCESS
            rsn_body = ies.get(W.E_RSN)
            if ies.get(W.E_SSID) != self.ssid:
                status = W.S_UNSPECIFIED
            elif self.wpa:
                if rsn_body is None:
                    status = W.S_INVALID_IE
                else:
                    try:
                        r = W.parse_rsn(rsn_body)
                    except W.WireError:
                        r = None
                    if r is None:
                        status = W.S_INVALID_RSNE
                    elif r.group != W.CIPHER_CCMP:
                        status = W.S_INVALID_GROUP
                    elif r.pairwise != (W.CIPHER_CCMP,):
                        status = W.S_INVALID_PAIRWISE
                    elif r.akms != (W.AKM_PSK,):
                        status = W.S_INVALID_AKMP
            rsub = W.ST_ASSOC_RESP if st == W.ST_ASSOC_REQ else W.ST_REASSOC_RESP
            if status != W.S_SUCCESS:
                c["sta_refused"] += 1
                self._send_mgmt(rsub, sta, struct.pack("<HHH", self._ap_cap(), status, 0))
                return
            if node.aid == 0:
                node.aid = self._alloc_aid()
            rejoin = node.state == "assoc"
            if node.key is not None:
                node.key.free()
                node.key = None
            node.authorized = False
            node.state = "assoc"
            node.last_seen = now
            node.rsn_ie = W.ie(W.E_RSN, rsn_body) if rsn_body is not None else b""
            self._send_mgmt(rsub, sta, struct.pack("<HHH", self._ap_cap(), W.S_SUCCESS,
                                                   node.aid | 0xC000)
                            + W.ie(W.E_RATES, W.RATES) + W.ie(W.E_XRATES, W.XRATES))
            if self.wpa:
                node.hs_tries = 0
                node.anonce = _rand(32)
                self._auth_msg1(node)
            else:
                self._authorized(node, rejoin)
        elif st in (W.ST_DEAUTH, W.ST_DISASSOC):
            c["rx_deauth" if st == W.ST_DEAUTH else "rx_disassoc"] += 1
            W.parse_fixed(body, "<H")
            if node is None:
                c["rx_deauth_unknown"] += 1
                return
            self._drop_node(node, "deauth" if st == W.ST_DEAUTH else "disassoc", send=False)
        else:
            c["rx_mgmt_ignored"] += 1

    def _alloc_aid(self) -> int:
        used = {n.aid for n in self.nodes.values()}
        aid = 1
        while aid in used:
            aid += 1
        return aid

    def _authorized(self, node: Node, rejoin: bool) -> None:
        node.authorized = True
        node.hs_state = "done"
        self.counters["sta_joined"] += 1
        self._event("REJOIN" if rejoin else "JOIN", f"sta {W.mac_str(node.mac)} aid {node.aid}")

    # -- data input --------------------------------------------------------------------
    def _data_input(self, h: W.Header, frame: bytes, rx: RxInfo) -> None:
        c = self.counters
        if self.opmode == HOSTAP:
            if h.ds != W.FC1_TODS or h.addr1 != self.mac:
                c["rx_data_bad_ds"] += 1
                return
            node = self.nodes.get(h.addr2)
            if node is None or node.state != "assoc":
                c["rx_data_not_assoc"] += 1
                now = trio.current_time()
                if now - self.last_deauth > 0.1:  # class 3 frame: tell it (rate limited)
                    self.last_deauth = now
                    self._send_mgmt(W.ST_DEAUTH, h.addr2, struct.pack("<H", W.R_NOT_ASSOCED))
                    c["deauth_sent"] += 1
                return
            da, sa = h.addr3, h.addr2
            group = False
        else:
            bss, nd = self.bss, self.node
            if h.ds != W.FC1_FROMDS:
                c["rx_data_bad_ds"] += 1
                return
            if bss is None or nd is None or h.addr2 != bss.bssid:
                c["rx_data_no_bss"] += 1
                return
            node = nd
            da, sa = h.addr1, h.addr3
            group = bool(da[0] & 1)
        node.last_seen = trio.current_time()
        node.signal = rx.signal
        if h.subtype & W.ST_NULL:
            c["rx_null"] += 1
            return
        hl = h.hdr_len
        if h.protected:
            if len(frame) < hl + CCMP_HDR + CCMP_MIC:
                c["rx_ccmp_bad"] += 1
                return
            try:
                pn, keyid = parse_ccmp_header(memoryview(frame)[hl:hl + CCMP_HDR])
            except CcmpError:
                c["rx_ccmp_bad"] += 1
                return
            key = self.group_keys.get(keyid) if group else node.key
            if key is None:
                c["rx_no_key"] += 1
                return
            if key.replayed(pn):
                c["rx_replay"] += 1
                return

            def decrypted(err: int, payload: bytes) -> None:
                if err == errno.EBADMSG:
                    c["rx_ccmp_mic_fail"] += 1
                    return
                if err == errno.EALREADY:
                    c["rx_replay"] += 1
                    return
                if err:
                    c["rx_ccmp_error"] += 1
                    return
                c["rx_decrypted"] += 1
                self._data_deliver(node, da, sa, payload, True)

            key.decrypt(frame, hl, pn, decrypted)
            return
        self._data_deliver(node, da, sa, bytes(memoryview(frame)[hl:]), False)

    def _data_deliver(self, node: Node, da: bytes, sa: bytes, payload: bytes,
                      protected: bool) -> None:
        c = self.counters
        if len(payload) < 8 or payload[:6] != W.LLC_SNAP:
            c["rx_bad_llc"] += 1
            return
        etype = payload[6:8]
        if etype == b"\x88\x8e":
            c["rx_eapol"] += 1
            self._eapol_input(node, payload[8:])
            return
        if self.wpa and (not protected or not node.authorized):
            c["rx_unauthorized" if protected else "rx_unencrypted"] += 1
            return
        if not self.wpa and not node.authorized:
            c["rx_unauthorized"] += 1
            return
        node.rx_bytes += len(payload)
        if self.opmode == HOSTAP:
            if da[0] & 1:
                # a group frame goes to the BSS too (under the GTK) and up
                c["intra_bss_group"] += 1
                hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_FROMDS, da, self.mac, sa,
                                     self._next_seq())
                self._send_data(hdr, payload, self.gtk)
            else:
                dst = self.nodes.get(da)
                if dst is not None and dst.authorized:
                    c["intra_bss_unicast"] += 1
                    hdr = W.build_header(W.T_DATA, W.ST_DATA, W.FC1_FROMDS, da, self.mac, sa,
                                         self._next_seq())
                    dst.tx_bytes += len(payload)
                    self._send_data(hdr, payload, dst.key)
                    return
        elif da[0] & 1 and sa == self.mac:
            c["rx_mcast_echo"] += 1  # our own group frame, sent back by the AP
            return
        buf = bytearray(da + sa)
        buf += memoryview(payload)[6:]
        c["rx_deliver"] += 1
        self.deliver(Packet(memoryview(buf), self))

    # -- EAPOL-Key: both sides ---------------------------------------------------------
    def _eapol_input(self, node: Node, frame: bytes) -> None:
        c = self.counters
        if not self.wpa:
            c["eapol_unexpected"] += 1
            return
        try:
            k = EapolKey.parse(frame)
        except EapolError:
            c["eapol_bad"] += 1
            return
        if self.opmode == HOSTAP:
            self._auth_input(node, k, frame)
        else:
            self._supp_input(node, k, frame)

    # authenticator
    def _eapol_send(self, node: Node, k: EapolKey, kck: bytes | None) -> None:
        bssid = self.bss.bssid if self.bss is not None else self.mac
        self._send_eapol(node, k.pack(kck), bssid)

    def _auth_msg1(self, node: Node) -> None:
        node.replay += 1
        node.hs_tries += 1
        node.hs_state = "msg1"
        node.hs_deadline = trio.current_time() + HANDSHAKE_TIMEOUT
        k = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_PAIRWISE | KI_ACK, 16, node.replay,
                     node.anonce)
        self._eapol_send(node, k, None)

    def _auth_msg3(self, node: Node) -> None:
        assert node.ptk is not None and self.gtk is not None
        node.replay += 1
        node.hs_tries += 1
        node.hs_state = "msg3"
        node.hs_deadline = trio.current_time() + HANDSHAKE_TIMEOUT
        data = wrap_key_data(node.ptk.kek, self.rsn_ie()
                             + gtk_kde(self.gtk_id, self.gtk_bytes, tx=True))
        k = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_PAIRWISE | KI_INSTALL | KI_ACK | KI_MIC
                     | KI_SECURE | KI_ENCRYPTED, 16, node.replay, node.anonce,
                     rsc=(self.gtk.tx_pn + 1).to_bytes(8, "little"), data=data)
        self._eapol_send(node, k, node.ptk.kck)

    def _auth_gmsg1(self, node: Node) -> None:
        assert node.ptk is not None and self.gtk is not None
        node.replay += 1
        node.hs_tries += 1
        node.hs_state = "gmsg1"
        node.hs_deadline = trio.current_time() + HANDSHAKE_TIMEOUT
        data = wrap_key_data(node.ptk.kek, gtk_kde(self.gtk_id, self.gtk_bytes, tx=True))
        k = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_ACK | KI_MIC | KI_SECURE | KI_ENCRYPTED,
                     16, node.replay, rsc=(self.gtk.tx_pn + 1).to_bytes(8, "little"),
                     data=data)
        self._eapol_send(node, k, node.ptk.kck)

    def _auth_input(self, node: Node, k: EapolKey, frame: bytes) -> None:
        c = self.counters
        info = k.info
        if info & KI_ACK or not info & KI_MIC or info & KI_REQUEST:
            c["eapol_unexpected"] += 1
            return
        if k.replay != node.replay:
            c["eapol_replay"] += 1
            return
        assert self.pmk is not None
        if info & KI_PAIRWISE and not info & KI_SECURE and node.hs_state == "msg1":
            ptk = derive_ptk(self.pmk, self.mac, node.mac, node.anonce, k.nonce)
            if not k.verify(ptk.kck, frame):
                c["eapol_bad_mic"] += 1  # most likely a wrong passphrase
                return
            if len(k.data) < 2 or k.data[:2 + k.data[1]] != node.rsn_ie:
                c["eapol_bad_ie"] += 1
                self._drop_node(node, "rsn-mismatch", reason=W.R_IE_INVALID)
                return
            node.ptk = ptk
            node.hs_tries = 0
            self._auth_msg3(node)
        elif info & KI_PAIRWISE and info & KI_SECURE and node.hs_state == "msg3":
            assert node.ptk is not None
            if not k.verify(node.ptk.kck, frame):
                c["eapol_bad_mic"] += 1
                return
            node.key = CcmpKey(self.crypto, node.ptk.tk, 0)
            c["handshakes_done"] += 1
            self._authorized(node, False)
        elif not info & KI_PAIRWISE and node.hs_state == "gmsg1":
            assert node.ptk is not None
            if not k.verify(node.ptk.kck, frame):
                c["eapol_bad_mic"] += 1
                return
            node.hs_state = "done"
            c["group_handshakes_done"] += 1
        else:
            c["eapol_unexpected"] += 1

    # supplicant
    def _supp_input(self, node: Node, k: EapolKey, frame: bytes) -> None:
        c = self.counters
        info = k.info
        if not info & KI_ACK:
            c["eapol_unexpected"] += 1
            return
        if k.replay <= self._replay_seen:
            c["eapol_replay"] += 1
            return
        assert self.pmk is not None and self.bss is not None
        if info & KI_PAIRWISE and not info & KI_MIC:  # message 1
            if self._anonce != k.nonce or not self._snonce:
                self._snonce = _rand(32)
            self._anonce = k.nonce
            self._tptk = derive_ptk(self.pmk, self.bss.bssid, self.mac, k.nonce, self._snonce)
            m2 = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_PAIRWISE | KI_MIC, 0, k.replay,
                          self._snonce, data=self.rsn_ie(), version=1)
            self._eapol_send(node, m2, self._tptk.kck)
            return
        if info & KI_PAIRWISE:  # message 3
            tptk = self._tptk
            if tptk is None or k.nonce != self._anonce or not info & KI_INSTALL:
                c["eapol_unexpected"] += 1
                return
            if not k.verify(tptk.kck, frame):
                c["eapol_bad_mic"] += 1
                return
            try:
                rsn, gtk = parse_kdes(unwrap_key_data(tptk.kek, k.data))
            except EapolError:
                c["eapol_bad_key_data"] += 1
                return
            if rsn is None or gtk is None or (self.bss.rsn_ie and rsn != self.bss.rsn_ie):
                c["eapol_bad_ie"] += 1
                self._lost = "rsn-mismatch"
                self._kick()
                return
            self._replay_seen = k.replay
            m4 = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_PAIRWISE | KI_MIC | KI_SECURE, 0,
                          k.replay, version=1)
            self._eapol_send(node, m4, tptk.kck)
            if node.key is not None:
                node.key.free()
            node.ptk = tptk
            node.key = CcmpKey(self.crypto, tptk.tk, 0)
            self._install_gtk(gtk, k.rsc)
            node.authorized = True
            c["handshakes_done"] += 1
            self._kick()
            return
        # group key message 1
        if node.ptk is None or not node.authorized:
            c["eapol_unexpected"] += 1
            return
        if not k.verify(node.ptk.kck, frame):
            c["eapol_bad_mic"] += 1
            return
        try:
            _rsn, gtk = parse_kdes(unwrap_key_data(node.ptk.kek, k.data))
        except EapolError:
            c["eapol_bad_key_data"] += 1
            return
        if gtk is None:
            c["eapol_bad_key_data"] += 1
            return
        self._replay_seen = k.replay
        self._install_gtk(gtk, k.rsc)
        m2 = EapolKey(KI_VERSION_AES_HMAC_SHA1 | KI_MIC | KI_SECURE, 0, k.replay, version=1)
        self._eapol_send(node, m2, node.ptk.kck)
        c["group_handshakes_done"] += 1

    def _install_gtk(self, gtk: tuple[int, bytes], rsc: bytes) -> None:
        keyid, key = gtk
        old = self.group_keys.pop(keyid, None)
        if old is not None:
            old.free()
        rx_pn = int.from_bytes(rsc[:6], "little") - 1
        self.group_keys[keyid] = CcmpKey(self.crypto, key, keyid, rx_pn=rx_pn)

    # -- views (config/ieee80211) ----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"opmode": self.opmode, "ssid": self.ssid, "chan": self.radio.channel,
                "state": self.state, "bssid": self.bss.bssid if self.bss else None}
