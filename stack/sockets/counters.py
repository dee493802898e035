"""The names of the socket door's counters (the ``sockdoor`` group: ``SocketTable.counters``,
one per stack), declared in one place (stack/counters.py explains why).

Message mode (``IOP_MSGMODE``, docs/sockets.md) counts at its decision points: reads and
writes in the mode, the records each carried, batches of more than one, datagrams cut to
fit, writes that stopped short of their end, and records refused as malformed.
"""

from __future__ import annotations

from stack.counters import names

SOCKDOOR_COUNTERS: frozenset[str] = names("""
    msg_mode_set msg_mode_refused
    msg_reads msg_read_records msg_read_batches msg_truncated msg_read_eof
    msg_writes msg_write_records msg_write_batches msg_write_short msg_write_capped
    msg_malformed msg_bad_address
""")
