"""The names of the transports' counters, declared in one place per component
(stack/counters.py): UDP's and raw IP's here, TCP's in tcp/counters.py.

``Counters("udp", UDP_COUNTERS)`` etc.: a name not listed raises in strict mode (the
tests) and is reported by tests/arch/test_counter_names.py, which scans the source for
``c["..."]`` / ``counters["..."]``. Adding a counter means adding its name here, beside
the others of its decision.
"""

from __future__ import annotations

from stack.counters import ERRNO_NAMES as ERRNO_NAMES
from stack.counters import names as names

#: names every transport's sockets use (sockopt.fire_change)
SOCKETS = names("on_change_errors")
#: ephemeral port choice (ports.py), TCP and UDP
PORTS = names("ephemeral_exhausted")
# ERRNO_NAMES (stack/counters.py): ``drop_ECONNRESET`` (a TCP connection dropped with
# that error), ``icmp_error_ECONNREFUSED`` (a UDP socket told of an ICMP error)

UDP_COUNTERS: frozenset[str] = SOCKETS | PORTS | names("""
    datagrams_in datagrams_out bytes_out delivered
    drop_malformed drop_bad_checksum no_checksum drop_zero_checksum6 drop_shut_rd rcv_queue_full
    no_port icmp_port_unreach_sent icmp_port_unreach_suppressed
    bind_addrinuse send_too_big send_broadcast_denied send_noroute send_errors
    send_family_mismatch
    uso_batches uso_segments uso_split uso_fallback_sizes uso_fallback_no_checksum
    uso_fallback_no_offload uso_fallback_broadcast uso_fallback_scoped uso_fallback_mtu
    uso_fallback_too_long
""") | frozenset(f"icmp_error_{n}" for n in ERRNO_NAMES)

RAW_COUNTERS: frozenset[str] = SOCKETS | names("""
    packets_out delivered rcv_queue_full
""")

