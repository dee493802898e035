"""Flag combinations a listener must not take as an open (reliability review, issue 10):
SYN+FIN is dropped and counted (BSD ``net.inet.tcp.drop_synfin``, default 1)."""

from __future__ import annotations

import trio

from stack.transport.wire import tcp as wtcp
from stack.transport.wire.checksum import checksum, pseudo_header_sum
from stack.transport.wire.tcp import ACK, FIN, RST, SYN
from tests.transport.shim import Net, ip

A, B = "10.0.0.1", "10.0.0.2"


def inject(net: Net, flags: int, *, sport: int = 40000, dport: int = 80, seq: int = 1000,
           ack: int = 0, payload: bytes = b"") -> None:
    """A hand-made segment from host A to host B."""
    hdr = wtcp.emit_header(sport, dport, seq, ack, flags, 65535)
    data = bytes(hdr) + payload
    c = checksum((data,), pseudo_header_sum(ip(A), ip(B), 6, len(data)))
    hdr[16:18] = c.to_bytes(2, "big")
    net.a.inet.output(ip(A), ip(B), 6, [hdr, payload])


def replies(net: Net) -> list[wtcp.TCPSegment]:
    return [p.tcp() for p in net.wire.log if p.src == ip(B) and p.proto == 6]


async def test_synfin_to_listener_dropped(autojump_clock: object, net: Net) -> None:
    assert net.b.sysctl.get("net.inet.tcp.drop_synfin") == 1
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(8)
    for flags, payload in ((SYN | FIN, b""), (SYN | FIN, b"data"), (SYN | FIN | 0x08, b"")):
        inject(net, flags, payload=payload)
    await trio.sleep(0.1)
    c = net.b.tcp.counters
    assert c["drop_synfin"] == 3
    assert replies(net) == []  # no SYN-ACK, no RST: the scan learns nothing
    assert not net.b.tcp.conns and not lst.tcb.syn_queue and c["syn_in"] == 0
    # SYN+FIN+ACK is answered like any ACK to a listener (RST), SYN+FIN+RST ignored
    inject(net, SYN | FIN | ACK, ack=5)
    inject(net, SYN | FIN | RST)
    await trio.sleep(0.1)
    segs = replies(net)
    assert len(segs) == 1 and segs[0].flags == RST and segs[0].seq == 5
    assert c["drop_rst_listen"] == 1 and c["drop_synfin"] == 3
    # a real SYN still opens a connection
    cli = net.a.tcp.socket()
    async with trio.open_nursery() as n:
        n.start_soon(cli.connect, (B, 80))
        srv, _ = await lst.accept()
    assert srv.state == "ESTABLISHED"


async def test_synfin_accepted_when_sysctl_off(autojump_clock: object, net: Net) -> None:
    net.b.sysctl.set("net.inet.tcp.drop_synfin", "0")
    lst = net.b.tcp.socket()
    lst.bind((B, 80))
    lst.listen(8)
    inject(net, SYN | FIN)
    await trio.sleep(0.01)
    segs = replies(net)
    assert segs and segs[0].flags == SYN | ACK  # RFC 9293 behaviour: treated as a SYN
    assert net.b.tcp.counters["drop_synfin"] == 0
