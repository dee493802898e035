"""What others see of our 802.11: every frame on the air parses with scapy's RadioTap /
Dot11 / EAPOL layers and tshark decrypts the CCMP data frames given only the passphrase
and SSID (an independent check of the 4-way handshake and CCMP); hostile frames are
dropped and counted while the BSS keeps working; an AP bridged to a TAP lets a kernel
namespace reach the stations."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest
import trio

from stack.l2.bridge import create_bridge
from stack.l2.iface import IFF_UP
from stack.net80211 import wire as W
from stack.net80211.wpa import KI_ACK, KI_MIC, KI_PAIRWISE, KI_SECURE, EapolKey
from tests.wlan.helpers import (
    PASS,
    SSID,
    Bss,
    Injector,
    Monitor,
    addr,
    bss,
    mac,
)
from tests.wlan.test_wlan import _ping, _transfer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns, TAP)")


def _m(i: int) -> bytes:
    return bytes.fromhex(mac(i).replace(":", ""))


async def test_capture_parses_and_tshark_decrypts(tmp_path) -> None:
    air = str(tmp_path / "air")
    os.makedirs(air)
    mon = Monitor(air)
    try:
        async with trio.open_nursery() as n:
            n.start_soon(mon.run)
            async with bss(air, 2, loss=0.1) as b:
                for _ in range(3):
                    await _ping(b.stas[0], addr(12))
                data = b"through the air " * 4000
                with trio.fail_after(30):
                    assert await _transfer(b.stas[1], b.stas[0], addr(11), data) == data
                await trio.sleep(0.2)
            n.cancel_scope.cancel()
        mon.drain()
    finally:
        mon.close()
    pcap = str(tmp_path / "air.pcap")
    mon.write_pcap(pcap)
    from scapy.layers.dot11 import Dot11, Dot11Beacon, Dot11CCMP, RadioTap
    from scapy.layers.eap import EAPOL
    from scapy.utils import rdpcap

    pkts = rdpcap(pcap)
    assert len(pkts) == len(mon.frames) > 200
    kinds = {"beacon": 0, "eapol": 0, "ccmp": 0, "auth": 0}
    for p in pkts:
        assert p.haslayer(RadioTap) and p.haslayer(Dot11), p.summary()
        assert p[RadioTap].Rate == 54.0 and p[RadioTap].dBm_AntSignal == -40
        d = p[Dot11]
        # scans probe every channel; everything else is on the BSS's channel 6
        assert p[RadioTap].ChannelFrequency == 2437 or d.subtype == 4, p.summary()
        if p.haslayer(Dot11Beacon):
            kinds["beacon"] += 1
            assert p[Dot11Beacon].network_stats()["ssid"] == SSID
        elif d.type == 2 and d.FCfield & 0x40:
            assert p.haslayer(Dot11CCMP)
            kinds["ccmp"] += 1
        elif d.type == 2:
            assert p.haslayer(EAPOL), p.summary()
            kinds["eapol"] += 1
        elif d.type == 0 and d.subtype == 11:
            kinds["auth"] += 1
    assert kinds["beacon"] > 5 and kinds["eapol"] >= 8 and kinds["ccmp"] > 100
    assert kinds["auth"] >= 4
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark missing")
    out = subprocess.run(
        [tshark, "-r", pcap, "-o", "wlan.enable_decryption:TRUE",
         "-o", f'uat:80211_keys:"wpa-pwd","{PASS}:{SSID}"',
         "-T", "fields", "-e", "frame.protocols", "-e", "ip.src", "-e", "ip.dst"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [ln.split("\t") for ln in out.stdout.splitlines()]
    icmp = [r for r in rows if ":icmp" in r[0]]
    tcp = [r for r in rows if ":tcp" in r[0]]
    assert len(icmp) >= 6 and len(tcp) > 30
    assert {(r[1], r[2]) for r in icmp} >= {(addr(11), addr(12)), (addr(12), addr(11))}
    assert all(":eapol" in r[0] or "llc" in r[0] or "data" not in r[0] or ":ip" in r[0]
               for r in rows if "wlan_radio" in r[0] and "wlan.ccmp" in r[0])
    # without the passphrase nothing inside is readable
    blind = subprocess.run([tshark, "-r", pcap, "-Y", "icmp or tcp"], capture_output=True,
                           text=True, timeout=120)
    assert blind.stdout.strip() == ""


def _hdr(st: int, a1: bytes, a2: bytes, a3: bytes, seq: int = 1) -> bytes:
    return W.build_header(W.T_MGMT, st, 0, a1, a2, a3, seq)


async def test_hostile_frames_are_dropped_and_counted(tmp_path) -> None:
    air = str(tmp_path / "air")
    os.makedirs(air)
    mon = Monitor(air)
    inj = Injector(air)
    try:
        async with trio.open_nursery() as n, bss(air, 1) as b:
            n.start_soon(mon.run)
            ap, sta = Bss.wlan(b.ap), Bss.wlan(b.stas[0])
            apm, stam, evil = _m(1), _m(0x11), bytes.fromhex("026666666666")
            await _ping(b.stas[0], addr(1))
            await trio.sleep(0.1)
            captured = [f for _, f in mon.frames]
            # truncated frames and bad versions/types
            for f in (b"\x08", b"\x08\x00" + bytes(10), bytes(23), b"\x0b" + bytes(30),
                      b"\xd4\x00" + bytes(8)):
                await inj.send(mac(1), f)
            # elements running past the frame, an SSID of 40 bytes
            await inj.send(mac(1), _hdr(W.ST_PROBE_REQ, W.BROADCAST, evil, W.BROADCAST)
                     + b"\x00\x20short")
            await inj.send(mac(0x11), _hdr(W.ST_BEACON, W.BROADCAST, evil, evil)
                     + W.beacon_body(0, 100, 1, W.ie(0, b"x" * 40)))
            await inj.send(mac(0x11), _hdr(W.ST_BEACON, W.BROADCAST, evil, evil)
                     + W.beacon_body(0, 100, 1, W.ie(0, b"evil") + W.ie(48, b"\x01\x00\x00")))
            # deauth floods: at the station from another BSS, at the AP from strangers
            for i in range(300):
                await inj.send(mac(0x11), _hdr(W.ST_DEAUTH, stam, evil, evil, i) + b"\x07\x00")
                await inj.send(mac(1), _hdr(W.ST_DEAUTH, apm, evil[:5] + bytes([i & 0xFF]), apm, i)
                         + b"\x03\x00")
            # forged EAPOL: a group key message with a bad MIC to the station (the AP's
            # address forged), garbage and a forged message 2 to the AP
            gk = EapolKey(2 | KI_ACK | KI_MIC | KI_SECURE, 16, 10 ** 6, data=bytes(24))
            fake = gk.pack(bytes(16))
            llc = W.LLC_SNAP + b"\x88\x8e"
            await inj.send(mac(0x11), W.build_header(W.T_DATA, W.ST_DATA, W.FC1_FROMDS, stam, apm,
                                               apm, 900) + llc + fake)
            await inj.send(mac(1), W.build_header(W.T_DATA, W.ST_DATA, W.FC1_TODS, apm, stam, apm,
                                            901) + llc + b"\x02\x03\x00\x05garbage")
            m2 = EapolKey(2 | KI_PAIRWISE | KI_MIC, 0, 1, bytes(32)).pack(bytes(16))
            await inj.send(mac(1), W.build_header(W.T_DATA, W.ST_DATA, W.FC1_TODS, apm, evil, apm,
                                            902) + llc + m2)
            # data under a wrong key, a replayed protected frame, plaintext data
            await inj.send(mac(1), W.build_header(W.T_DATA, W.ST_DATA, W.FC1_TODS | W.FC1_PROTECTED,
                                            apm, stam, apm, 903)
                     + bytes((0xFF, 0xFF, 0, 0x20, 0xFF, 0xFF, 0, 0)) + bytes(40))
            old = next(f[W.radiotap(0, 0, 1, 0).__len__():] for f in captured
                       if f[23] == 0x08 and f[24] & 0x41 == 0x41)
            replay = bytearray(old)
            replay[22:24] = struct.pack("<H", 904 << 4)
            await inj.send(mac(1), bytes(replay))
            await inj.send(mac(1), W.build_header(W.T_DATA, W.ST_DATA, W.FC1_TODS, apm, stam,
                                            b"\xff" * 6, 905) + W.LLC_SNAP + b"\x08\x06" + bytes(28))
            await trio.sleep(0.5)
            c, s = ap.counters, sta.counters
            assert c["rx_bad_short"] >= 3 and c["rx_bad_version"] + c["rx_bad_control"] >= 2
            assert c["rx_bad_ie"] >= 1 and s["rx_bad_ie"] >= 1 and s["rx_bad_rsn"] >= 1
            assert s["rx_deauth_foreign"] >= 250 and c["rx_deauth_unknown"] >= 250
            assert s["eapol_bad_mic"] >= 1
            assert c["eapol_bad"] >= 1 and c["rx_data_not_assoc"] >= 1
            assert c["rx_ccmp_mic_fail"] >= 1 and c["rx_replay"] >= 1
            assert c["rx_unencrypted"] >= 1
            # still associated, still passing traffic
            assert sta.state == "RUN" and ap.nodes[stam].authorized
            await _ping(b.stas[0], addr(1))
            n.cancel_scope.cancel()
    finally:
        inj.close()
        mon.close()


@needs_root
async def test_ap_bridged_to_a_tap(tmp_path, netns) -> None:
    """The AP's wlan0 and a TAP in one bridge: the kernel in a namespace pings the
    stations and they it (ARP across the bridge and the BSS)."""
    air = str(tmp_path / "air")
    async with bss(air, 2, ap_drivers=[("tap", f"name=wtap0,netns={netns}")]) as b:
        tap, wlan = b.ap.interfaces["wtap0"], Bss.wlan(b.ap)
        br = create_bridge(b.ap, "bridge0")
        br.add_member(tap)
        br.add_member(wlan)
        for i in (tap, br):
            i.set_flags(IFF_UP)
        netns.run("ip", "addr", "add", "10.80.0.100/24", "dev", "wtap0")
        netns.run("ip", "link", "set", "wtap0", "up")

        def ping() -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", str(netns), "ping", "-c", "3",
                                   "-i", "0.2", "-W", "2", addr(11)],
                                  capture_output=True, text=True, timeout=20)

        r = await trio.to_thread.run_sync(ping)
        assert r.returncode == 0, r.stdout + r.stderr
        await _ping(b.stas[1], "10.80.0.100")
        assert wlan.counters["rx_deliver"] > 0 and br.counters["opackets"] >= 0
