"""devnp-vwire carries a frame's partial-checksum metadata to the other stack (a
``virtio_net_hdr`` before each frame): the receiver marks the frame ``csum_partial`` with
its offsets, so whatever it forwards the frame to completes the checksum. Before, the
flag was lost: the receiver took the frame as checksummed and a kernel behind it dropped
every TCP segment of a connection through two stacks."""

from __future__ import annotations

import pytest

from stack.packet import TxMeta
from tests.l2.helpers import Recorder
from tests.l2.test_vwire import ET, settle, two_stacks


@pytest.mark.parametrize("faults", ["", ",delay=5"], ids=["direct", "delayed"])
async def test_partial_checksum_crosses_the_wire_flagged(tmp_path, faults: str) -> None:
    async with two_stacks(tmp_path, faults) as (a, b, ia, ib):
        assert ia.offloads == {"csum"}  # checksums yes, segmentation no
        rec = Recorder(ib)
        hdr = ib.mac + ia.mac + ET.to_bytes(2, "big")
        ia.output([hdr, b"partial", bytes(60)], TxMeta(csum_start=20, csum_offset=6,
                                                         needs_csum=True))
        ia.output([hdr, b"complete", bytes(60)])
        await settle(lambda: len(rec.packets) == 2)
        p, q = rec.packets
        assert bytes(p.data[14:21]) == b"partial" and len(p.data) == 81
        assert p.csum_partial and p.csum_valid and (p.csum_start, p.csum_offset) == (20, 6)
        assert bytes(q.data[14:22]) == b"complete"
        assert not q.csum_partial and q.csum_valid and not q.gso_type
        assert ib.counters["ierrors"] == 0 and ia.counters["csum_completed"] == 0
