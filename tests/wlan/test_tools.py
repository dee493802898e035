"""io-pkt processes on one air, configured with the tools as a user would: ifconfig's
802.11 verbs (ssid, chan, wpakey, mediaopt hostap, scan, list sta), ping through the AP,
and bpf's DLT_IEEE802_11_RADIO stream read back by scapy."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from tests.wlan.helpers import PASS, SSID, mac

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0,
                                reason="needs root and /dev/fuse")


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_ifconfig_ping_and_radiotap_capture(tmp_path, stack_process) -> None:
    air = str(tmp_path / "air")
    ap = stack_process("-d", "wifisim", f"air={air},name=wlan0,mac={mac(1)},chan=11",
                       "-p", "bpf", "-p", "tcpip", f"prefix={tmp_path}/ap,auto_linklocal=0")
    sta = stack_process("-d", "wifisim", f"air={air},name=wlan0,mac={mac(0x11)}",
                        "-p", "tcpip", f"prefix={tmp_path}/sta,auto_linklocal=0")
    # a radiotap capture on the AP from before the station arrives
    cap = open(f"{tmp_path}/ap/dev/bpf/wlan0,dlt=127", "rb")  # noqa: SIM115
    chunks: list[bytes] = []

    def reader() -> None:
        while True:
            try:
                b = os.read(cap.fileno(), 1 << 16)
            except OSError:  # the stack stopped (its mount went away)
                return
            if not b:
                return
            chunks.append(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        ap.tool("ifconfig", "wlan0", "ssid", SSID, "chan", "11", "wpakey", PASS,
                "mediaopt", "hostap", "up")
        ap.tool("ifconfig", "wlan0", "10.80.0.1/24")
        shown = ap.tool("ifconfig", "wlan0").stdout
        assert f"ssid '{SSID}' channel 11 (2462 MHz 11g)" in shown
        assert "hostap" in shown and "wpa2-psk" in shown and PASS not in shown
        sta.tool("ifconfig", "wlan0", "up")
        scan = sta.tool("ifconfig", "wlan0", "scan").stdout
        assert SSID in scan and mac(1) in scan and "wpa2-psk" in scan and " 11 " in scan
        sta.tool("ifconfig", "wlan0", "ssid", SSID, "wpakey", PASS, "10.80.0.11/24")
        _wait(lambda: "state RUN" in sta.tool("ifconfig", "wlan0").stdout)
        ping = sta.tool("ping", "-c", "3", "-i", "0.2", "10.80.0.1")
        assert " 0.0% packet loss" in ping.stdout or "3 packets received" in ping.stdout, \
            ping.stdout
        lst = ap.tool("ifconfig", "wlan0", "list", "sta").stdout.splitlines()
        assert lst[0].split()[:4] == ["ADDR", "AID", "STATE", "AUTH"]
        assert lst[1].split()[:4] == [mac(0x11), "1", "assoc", "1"]
        bad = sta.tool("ifconfig", "wlan0", "wpakey", "short", check=False)
        assert bad.returncode != 0 and "8 to 63" in bad.stderr
    finally:
        time.sleep(0.3)
        ap.stop()
        t.join(timeout=10)
        cap.close()
    data = b"".join(chunks)
    path = tmp_path / "ap.pcap"
    path.write_bytes(data)
    from scapy.layers.dot11 import Dot11, Dot11Auth, Dot11Beacon, RadioTap
    from scapy.layers.eap import EAPOL
    from scapy.utils import rdpcap

    pkts = rdpcap(str(path))
    assert pkts and all(p.haslayer(RadioTap) and p.haslayer(Dot11) for p in pkts)
    assert any(p.haslayer(Dot11Beacon) for p in pkts)
    assert any(p.haslayer(Dot11Auth) for p in pkts)
    assert sum(p.haslayer(EAPOL) for p in pkts) >= 4
    assert all(p[RadioTap].ChannelFrequency == 2462 for p in pkts)
    r = subprocess.run(["tshark", "-r", str(path), "-o", "wlan.enable_decryption:TRUE",
                        "-o", f'uat:80211_keys:"wpa-pwd","{PASS}:{SSID}"', "-Y", "icmp"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count("Echo (ping) re") >= 6, r.stdout + r.stderr
