"""802.11 between in-process stacks on the simulated air (devnp-wifisim): WPA2-PSK
association under loss, pings and a 10 MB transfer through the AP, a wrong passphrase,
the group key handshake, roaming and beacon loss, the control file and RTM_IEEE80211."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
import trio

from stack.services import CONTROL, CRYPTO
from tests.wlan.helpers import PASS, SSID, Bss, addr, bss, ifconfig80211, mac, wait_run


async def _ping(stack, dst: str, tries: int = 5) -> float:
    last: Exception | None = None
    for _ in range(tries):
        try:
            return await stack.inet.ping(dst, timeout=1.0)
        except (TimeoutError, OSError) as exc:
            last = exc
    raise AssertionError(f"no answer from {dst}: {last}")


async def _transfer(src, dst, dst_addr: str, data: bytes) -> bytes:
    lst = dst.tcp.socket()
    lst.bind((dst_addr, 5001))
    lst.listen(4)
    got = bytearray()

    async def server() -> None:
        s, _ = await lst.accept()
        while True:
            chunk = await s.recv(65536)
            if not chunk:
                break
            got.extend(chunk)
        s.close()

    async with trio.open_nursery() as n:
        n.start_soon(server)
        c = src.tcp.socket()
        await c.connect((dst_addr, 5001))
        view = memoryview(data)
        while view:
            sent = await c.send(view[:65536])
            view = view[sent:]
        c.close()
    lst.close()
    return bytes(got)


async def test_wpa2_three_stations_under_20_percent_loss(tmp_path) -> None:
    """One AP and three stations, 20 % loss on every link: all associate with
    WPA2-PSK, every pair pings through the AP, 10 MB cross it with sha256 equal."""
    async with bss(str(tmp_path / "air"), 3, loss=0.2) as b:
        ap = Bss.wlan(b.ap)
        assert ap.counters["handshakes_done"] == 3 and len(ap.nodes) == 3
        assert all(n.authorized and n.key is not None for n in ap.nodes.values())
        for i, s in enumerate(b.stas):
            w = Bss.wlan(s)
            assert w.bss is not None and w.bss.bssid.hex(":") == mac(1)
            assert w.counters["handshakes_done"] == 1 and w.group_keys
            await _ping(s, addr(1))
            for j in range(3):
                if j != i:
                    await _ping(s, addr(11 + j))
        assert ap.counters["intra_bss_unicast"] > 0
        data = random.Random(5).randbytes(10 * 1024 * 1024)
        with trio.fail_after(240):
            got = await _transfer(b.stas[0], b.stas[2], addr(13), data)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
        s0, s2 = Bss.wlan(b.stas[0]), Bss.wlan(b.stas[2])
        # the loss was real and the radios' retries and the duplicate filter handled it
        assert s0.counters["air_lost"] > 100 and s0.counters["air_retries"] > 100
        assert ap.counters["rx_dup"] > 0 and s2.counters["rx_dup"] > 0
        assert s2.counters["rx_decrypted"] > 7000 and ap.counters["rx_decrypted"] > 7000
        assert ap.counters["rx_ccmp_mic_fail"] == 0 and s2.counters["rx_replay"] == 0
        assert s2.counters["tx_encrypted"] > 1000
        crypto = b.ap.services.get(CRYPTO)
        assert crypto is not None and crypto.counters["completed"] > 14000


async def test_wrong_passphrase_never_associates(tmp_path) -> None:
    async with bss(str(tmp_path / "air"), 2, sta_pass=[PASS, "not the passphrase"]) as b:
        good, bad = Bss.wlan(b.stas[0]), Bss.wlan(b.stas[1])
        ap = Bss.wlan(b.ap)
        await trio.sleep(4)
        assert good.state == "RUN" and bad.state != "RUN"
        assert not bad.running and bad.node is None or not bad.node.authorized
        assert ap.counters["eapol_bad_mic"] >= 2  # message 2's MIC, each attempt
        assert ap.counters["handshake_timeouts"] >= 1 and ap.counters["handshakes_done"] == 1
        # the bad station keeps trying (it may be in the table), never authorized
        assert [m for m, n in ap.nodes.items() if n.authorized] == \
            [bytes.fromhex(mac(0x11).replace(":", ""))]
        with pytest.raises((TimeoutError, OSError)):
            await b.stas[1].inet.ping(addr(1), timeout=0.5)
        await _ping(b.stas[0], addr(1))


async def test_group_key_handshake_and_broadcasts(tmp_path) -> None:
    async with bss(str(tmp_path / "air"), 2) as b:
        ap = Bss.wlan(b.ap)
        old = ap.gtk_bytes
        assert await ifconfig80211(b.ap, "wlan0 rekey") == "rekeyed 2 stations\n"
        with trio.fail_after(5):
            while ap.counters["group_handshakes_done"] < 2:
                await trio.sleep(0.02)
        assert ap.gtk_bytes != old
        for s in b.stas:
            w = Bss.wlan(s)
            assert w.counters["group_handshakes_done"] == 1
            assert any(k.tk == ap.gtk_bytes for k in w.group_keys.values())
        # ARP requests are broadcasts: under the new GTK, through the AP to the other
        for s in b.all:
            s.inet.manage.arp_flush()
        await _ping(b.stas[0], addr(12))
        assert Bss.wlan(b.stas[1]).counters["rx_decrypted"] > 0
        assert ap.counters["intra_bss_group"] > 0


async def test_control_file_and_route_monitor(tmp_path) -> None:
    async with bss(str(tmp_path / "air"), 1, wait=False) as b:
        control = b.stas[0].services.get(CONTROL)
        assert control is not None
        h = control.monitor.open(None)  # type: ignore[arg-type]
        await wait_run(b.all)
        node = b.ap.config_dir.lookup("ieee80211")
        text = node.render()  # type: ignore[union-attr]
        assert "opmode hostap" in text and "wpakey set" in text and PASS not in text
        assert f"sta {mac(0x11)} aid 1 state assoc authorized 1" in text
        lst = await ifconfig80211(b.ap, "wlan0 list sta")
        assert lst.startswith(mac(0x11))
        scan = await ifconfig80211(b.stas[0], "wlan0 list scan")
        assert mac(1) in scan and f"ssid '{SSID}'" in scan and "security wpa2-psk" in scan
        msgs = list(h.queue)
        assert any("RTM_IEEE80211: if wlan0 SCAN" in m for m in msgs)
        assert any(f"RTM_IEEE80211: if wlan0 ASSOC bssid {mac(1)}" in m for m in msgs)
        # a configuration change leaves the BSS: DISASSOC is not posted, the link goes down
        await ifconfig80211(b.stas[0], "wlan0 -ssid")
        with trio.fail_after(3):
            while Bss.wlan(b.stas[0]).running:
                await trio.sleep(0.02)
        with trio.fail_after(3):
            while Bss.wlan(b.ap).nodes:
                await trio.sleep(0.02)
        assert Bss.wlan(b.ap).counters["sta_left"] == 1
        for bad in ("wlan0 wpakey short", "wlan0 chan 99", "wlan0 mediaopt adhoc",
                    "wlan0 frobnicate"):
            try:
                await ifconfig80211(b.stas[0], bad)
            except OSError as exc:
                assert exc.errno == 22
            else:
                raise AssertionError(f"{bad} accepted")
        keyfile = tmp_path / "key"
        keyfile.write_text(PASS + "\n")
        os.chmod(keyfile, 0o600)
        await ifconfig80211(b.stas[0], f"wlan0 ssid '{SSID}' wpakeyfile {keyfile}")
        await wait_run([b.stas[0]])


async def test_roaming_and_beacon_loss(tmp_path) -> None:
    """Two APs of one SSID: the station roams to the one 10 dB stronger, and after that
    one's beacons stop it detects the loss and joins the other again."""
    from tests.conftest import running_stack

    air = str(tmp_path / "air")
    matrix = os.path.join(air, "matrix")
    os.makedirs(air)
    sta_mac = mac(0x11)

    def set_matrix(text: str) -> None:
        tmp = matrix + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, matrix)

    set_matrix(f"{mac(1)} {sta_mac} signal=-40\n{mac(2)} {sta_mac} signal=-75\n")
    async with bss(air, 1) as b, running_stack(
            drivers=[("wifisim", f"air={air},name=wlan0,mac={mac(2)},chan=6")]) as ap2:
        await ifconfig80211(ap2, f"wlan0 ssid '{SSID}' chan 6 wpakey '{PASS}' mediaopt hostap")
        from stack.l2.iface import IFF_UP

        Bss.wlan(ap2).set_flags(IFF_UP)
        w = Bss.wlan(b.stas[0])
        assert w.bss is not None and w.bss.bssid.hex(":") == mac(1)
        await trio.sleep(0.5)
        set_matrix(f"{mac(1)} {sta_mac} signal=-75\n{mac(2)} {sta_mac} signal=-40\n")
        with trio.fail_after(10):
            while not (w.state == "RUN" and w.bss is not None
                       and w.bss.bssid.hex(":") == mac(2)):
                await trio.sleep(0.05)
        assert w.counters["roams"] >= 1
        assert Bss.wlan(ap2).counters["rx_reassoc_req"] >= 1
        # AP2 goes silent towards the station: beacon loss, then back to AP1
        set_matrix(f"{mac(1)} {sta_mac} signal=-75\n{mac(2)} {sta_mac} loss=1\n")
        with trio.fail_after(15):
            while not (w.state == "RUN" and w.bss is not None
                       and w.bss.bssid.hex(":") == mac(1)):
                await trio.sleep(0.05)
        assert w.counters["beacon_miss"] >= 1
