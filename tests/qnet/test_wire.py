"""Qnet wire format (stack/qnet/wire.py): round trips, every refusal, and tshark's qnet6
dissector as the judge of the layout (no malformed packets, CRCs correct)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from stack.pcap import PcapWriter
from stack.qnet import wire as w

A = b"\x02\0\0\0\0\x01"
B = b"\x02\0\0\0\0\x02"


def test_crc_matches_the_bitwise_definition() -> None:
    for n in (0, 1, 5, 38, 100, 1500):
        data = os.urandom(n)
        assert w.crc32_mpeg2(data) == w.crc32_mpeg2_slow(data)
    assert w.crc32_mpeg2_slow(b"123456789") == 0x89A1897F  # MPEG-2 poly, register 0


def test_round_trip_and_fields() -> None:
    hdr = w.Header(type=w.T_DATA, flags=w.F_FIRST, layer=w.L_KIF, src_nd=3, dst_nd=4,
                   sconn=0xDEADBEEF, dconn=7, seq=99, qos_type=w.QOS_PREFERRED, qos_idx=1,
                   offset=1000)
    frame = b"".join(bytes(b) for b in hdr.emit(b"payload")) + bytes(10)  # + padding
    f = w.parse(frame)
    assert f.hdr.type == w.T_DATA and f.hdr.flags == w.F_FIRST | w.F_CRC
    assert (f.hdr.src_nd, f.hdr.dst_nd, f.hdr.sconn, f.hdr.dconn, f.hdr.seq) == \
        (3, 4, 0xDEADBEEF, 7, 99)
    assert (f.hdr.qos_type, f.hdr.qos_idx, f.hdr.offset, f.hdr.length) == (3, 1, 1000, 7)
    assert bytes(f.payload) == b"payload"
    assert frame[2] == 0x2A and frame[:2] == b"\0\0"


def _frame(payload: bytes = b"x" * 20, key: bytes | None = None, **kw: int) -> bytearray:
    return bytearray(b"".join(bytes(b) for b in w.Header(**kw).emit(payload, key)))


@pytest.mark.parametrize("mangle,reason", [
    (lambda f: f[:20], "drop_truncated"),
    (lambda f: f[:50], "drop_truncated"),
    (lambda f: f[:2] + b"\xaa" + f[3:], "drop_bad_version"),
    (lambda f: f[:3] + b"\x07" + f[4:], "drop_unknown_type"),
    (lambda f: f[:5] + b"\x09" + f[6:], "drop_unknown_layer"),
    (lambda f: f[:4] + b"\x03" + f[5:], "drop_no_crc"),
    (lambda f: f[:40] + b"Y" + f[41:], "drop_bad_crc"),
    (lambda f: f[:18] + b"\x05" + f[19:], "drop_bad_crc"),  # a forged sequence number
])
def test_refusals(mangle, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(w.ParseError) as exc:
        w.parse(bytes(mangle(_frame())))
    assert exc.value.reason == reason


def test_hmac() -> None:
    f = _frame(key=b"secret")
    assert bytes(w.parse(bytes(f), key=b"secret").payload) == b"x" * 20
    with pytest.raises(w.ParseError) as exc:
        w.parse(bytes(f), key=b"other")
    assert exc.value.reason == "drop_bad_mac"
    with pytest.raises(w.ParseError):
        w.parse(bytes(_frame()), key=b"secret")  # no MAC at all


def test_lr_and_tcs_payloads() -> None:
    m = w.LrMessage(w.LR_REPLY, "nodeb", "", B, "nodea", "", A)
    back = w.parse_lr(m.emit())
    assert (back.type, back.src_name, back.src_mac, back.dst_name, back.dst_mac) == \
        (w.LR_REPLY, "nodeb", B, "nodea", A)
    req = w.parse_lr(w.LrMessage(w.LR_REQUEST, "a", "", A, "b").emit())
    assert req.dst_mac == b"" and req.dst_name == "b"
    assert w.parse_tcs_init(w.tcs_init_payload("a", "b")) == ("a", "b")
    for bad in (b"", bytes(10), w.LrMessage().emit()[:60] + b"\xff" * 4):
        with pytest.raises(w.ParseError):
            w.parse_lr(bad)
    with pytest.raises(w.ParseError):
        w.parse_tcs_init(struct.pack("<4H", 50, 0, 0, 0) + b"a\0")


def write_sample_pcap(path: str) -> int:
    """One frame of each kind; returns the count."""
    frames: list[list[object]] = []

    def eth(dst: bytes, bufs: list[object]) -> None:
        frames.append([dst + A + b"\x82\x04", *bufs])

    eth(B, w.Header(type=w.T_TCS_INIT, layer=w.L_SEQ, sconn=0x1234).emit(
        w.tcs_init_payload("a", "b")))
    for t in (w.T_TCS_REM_UP, w.T_TCS_UP, w.T_TCS_DOWN, w.T_TCS_REM_DOWN, w.T_ACK, w.T_NACK):
        eth(B, w.Header(type=t, layer=w.L_SEQ, sconn=1, dconn=2, seq=5).emit())
    kif = struct.pack("<HHI", 0x30, 12, 7) + b"hello" * 50
    eth(B, w.Header(type=w.T_DATA, layer=w.L_KIF, sconn=1, dconn=2, seq=6).emit(kif))
    eth(B, w.Header(type=w.T_DATA, flags=w.F_FIRST, seq=7).emit(kif[:100]))
    eth(B, w.Header(type=w.T_DATA, flags=0, seq=8, offset=100).emit(kif[100:200]))
    eth(B, w.Header(type=w.T_DATA, flags=w.F_LAST, seq=9, offset=200).emit(kif[200:]))
    eth(b"\xff" * 6, w.Header(type=w.T_LR, layer=w.L_LR).emit(
        w.LrMessage(w.LR_REQUEST, "a", "", A, "b").emit()))
    eth(A, w.Header(type=w.T_LR, layer=w.L_LR).emit(
        w.LrMessage(w.LR_REPLY, "b", "", B, "a", "", A).emit()))
    eth(B, w.Header(type=w.T_DATA, layer=w.L_KIF).emit(kif, key=b"k"))
    with PcapWriter(path) as p:
        for f in frames:
            p.write(f)  # type: ignore[arg-type]
    return len(frames)


def tshark_check(path: str, expect: int | None = None) -> str:
    """Decode ``path`` with tshark: every frame qnet6, none malformed, every checked CRC
    correct. Returns the verbose text."""
    res = subprocess.run(["tshark", "-r", path, "-V", "-o", "qnet6.check_crc:TRUE"],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:  # older/newer tshark without the preference
        res = subprocess.run(["tshark", "-r", path, "-V"], capture_output=True, text=True,
                             timeout=60)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "Malformed" not in text and "incorrect" not in text
    n = text.count("QNX6 QNET LWL4 protocol")
    if expect is not None:
        assert n == expect
    assert n == text.count("\nFrame ") + (1 if text.startswith("Frame ") else 0)
    return text


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tshark_decodes_every_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "qnet.pcap")
    n = write_sample_pcap(path)
    text = tshark_check(path, n)
    assert text.count("[correct]") >= 10
    assert 'Who is "b."? Tell "a."@02:00:00:00:00:01' in text or "Request (0x01)" in text
    assert "Qos TCS_INIT" in text or "Src_name: a" in text
    summary = subprocess.run(["tshark", "-r", path], capture_output=True, text=True,
                             timeout=60).stdout
    assert "Last Fragmented" in summary and "First fragmented" in summary
    assert 'is at 02:00:00:00:00:02' in summary
