"""The names of the IPv4 layer's counters, declared in one place (stack/counters.py), one
set per group: ``ip`` (ipv4.py, and manage.py's address changes), ``icmp``, ``arp``
(ARP's and its neighbour table's, stack/neighbour.py), ``reass``, ``route``, ``igmp``.

A name not listed raises in strict mode (the tests) and is reported by
tests/arch/test_counter_names.py. Adding a counter means adding its name here, beside
the others of its decision.
"""

from __future__ import annotations

from stack.counters import names
from stack.inet.wire import icmp as wicmp
from stack.l2.counters import GSO_REASONS
from stack.neighbour import NEIGHBOUR_COUNTERS

IP_COUNTERS: frozenset[str] = names("""
    in_receive in_delivered in_options_skipped
    drop_truncated drop_bad_version drop_bad_header_length drop_bad_length
    drop_bad_checksum drop_bad_source drop_martian_source drop_bad_options
    drop_pfil_in drop_pfil_bad_replacement drop_multicast_not_joined drop_unknown_protocol
    drop_multicast_source_filtered out_mcast_looped out_mcast_host_only
    out_requests out_packets out_not_ipv4 out_no_route out_reject out_blackhole
    out_no_source out_drop_too_long out_drop_df_too_big out_drop_mtu_too_small
    out_fragments out_fragmented out_unresolved drop_pfil_out
    drop_pfil_prefrag prefrag_rerouted prefrag_replaced prefrag_offload_sw
    drop_prefrag_reroute_down drop_prefrag_bad_replacement drop_frag_needed
    drop_not_for_us drop_fwd_link_broadcast drop_fwd_martian drop_ttl_exceeded
    drop_no_route drop_fwd_reject drop_fwd_directed_broadcast drop_fwd_loopback
    forwarded fwd_same_interface fwd_send_failed fwd_offload_sw drop_fwd_gso_mtu
    fastfwd_learn_errors fastfwd_invalidate_errors pmtu_learned
    addr_added addr_removed
""") | frozenset(f"drop_prefrag_{r}" for r in GSO_REASONS)

#: the codes of each ICMP error type (RFC 792, 1122, 1812): ``in_error_<type>`` counts
#: one received, ``out_error_<type>_<code>`` one sent
ICMP_ERROR_CODES: dict[int, range] = {
    wicmp.DEST_UNREACH: range(16), wicmp.SOURCE_QUENCH: range(1), wicmp.REDIRECT: range(4),
    wicmp.TIME_EXCEEDED: range(2), wicmp.PARAM_PROBLEM: range(3),
}

ICMP_COUNTERS: frozenset[str] = names("""
    drop_truncated drop_bad_checksum in_echo in_echo_reply echo_reply_unmatched
    in_other_type drop_broadcast_echo out_echo_reply out_echo_reply_failed out_echo
    drop_error_bad_quote in_redirect_ignored error_to_ping error_no_handler
    error_dispatched error_suppressed_bcast error_suppressed_fragment
    error_suppressed_icmp_error error_ratelimited error_no_source error_send_failed
""") | frozenset(f"in_error_{t}" for t in ICMP_ERROR_CODES) \
    | frozenset(f"out_error_{t}_{c}" for t, codes in ICMP_ERROR_CODES.items() for c in codes)

#: why ARP's parser refuses a packet (``ParseError.reason``, stack/inet/wire/arp.py): the
#: counter ARP bumps is the reason itself
ARP_PARSE_REASONS = ("drop_truncated", "drop_bad_hwtype", "drop_bad_proto", "drop_bad_op")

ARP_COUNTERS: frozenset[str] = NEIGHBOUR_COUNTERS | names("""
    in_packets drop_own drop_bad_sender_mac dup_address drop_bad_sender_ip
    drop_unsolicited in_request request_not_for_us proxy_reply in_reply
    out_request out_gratuitous out_reply
""") | frozenset(ARP_PARSE_REASONS)

#: ``mem`` and ``mem_peak`` are gauges (bytes held), not counts
REASS_COUNTERS: frozenset[str] = names("""
    frag_in reassembled frag_duplicate frag_overlap frag_timeout frag_evicted
    drop_bad_fragment drop_too_long drop_no_memory drop_dead_datagram mem mem_peak
""")

ROUTE_COUNTERS: frozenset[str] = names("lookups lookup_miss changes")

#: why IGMP's parser refuses a message (``ParseError.reason``, stack/inet/wire/igmp.py)
IGMP_PARSE_REASONS = ("drop_truncated", "drop_bad_checksum", "drop_bad_length",
                      "drop_bad_record")

#: stack/inet/igmp.py (group ``igmp``)
IGMP_COUNTERS: frozenset[str] = names("""
    in_messages drop_no_interface drop_bad_group drop_query_bad_dst
    in_query_v1 in_query_v2 in_query_v3 in_report in_v3_report in_leave in_other_type
    report_suppressed query_covered query_not_member
    joins leaves compat_v1 compat_v2 compat_v3
    out_v1_report out_v2_report out_v2_leave out_v3_state_change out_v3_current_state
    out_iface_down out_failed
""") | frozenset(IGMP_PARSE_REASONS)
