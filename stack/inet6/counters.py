"""The names of the IPv6 layer's counters, one set per group: ``ip6`` (ipv6.py and the
address changes), ``icmp6``, ``nd6`` (ND's and its neighbour table's), ``reass6``,
``mld6``. A name not listed raises in strict mode (the tests)."""

from __future__ import annotations

from stack.counters import names
from stack.inet.counters import REASS_COUNTERS
from stack.l2.counters import GSO_REASONS
from stack.neighbour import NEIGHBOUR_COUNTERS

#: what the extension-header walk refuses (stack/inet6/wire/ipv6.py ``ChainError.reason``)
CHAIN_REASONS = ("drop_chain_too_long", "drop_hbh_not_first", "drop_truncated_chain",
                 "drop_two_fragment_headers", "drop_bad_option", "drop_jumbo",
                 "drop_unknown_option")

#: what the ICMPv6/ND parsers refuse (stack/inet6/wire/icmp6.py ``ParseError.reason``)
ND_PARSE_REASONS = ("drop_truncated", "drop_bad_option")

IP6_COUNTERS: frozenset[str] = names("""
    in_receive in_delivered in_multicast
    drop_truncated drop_bad_version drop_bad_length drop_bad_source drop_bad_dest
    drop_loopback_on_wire drop_pfil_in drop_pfil_bad_replacement drop_multicast_not_joined
    drop_unknown_protocol drop_routing_type0 drop_routing_header drop_tentative_dest
    drop_nd_fragment drop_incomplete_first_fragment atomic_fragments
    out_requests out_packets out_not_ipv6 out_no_route out_reject out_blackhole
    out_no_source out_drop_too_long out_drop_too_big out_drop_mtu_too_small
    out_fragments out_fragmented out_unresolved drop_pfil_out out_no_scope
    drop_not_for_us drop_fwd_scope drop_hlim_exceeded drop_no_route drop_fwd_reject
    drop_fwd_too_big drop_fwd_loopback forwarded fwd_same_interface fwd_send_failed
    fwd_offload_sw drop_fwd_gso_mtu pmtu_learned pmtu_ignored
    drop_pfil_prefrag prefrag_rerouted prefrag_replaced prefrag_offload_sw
    drop_prefrag_reroute_down drop_prefrag_bad_replacement
    addr_added addr_removed addr_dad_ok addr_duplicated addr_expired addr_deprecated
    slaac_added slaac_updated slaac_ignored tempaddr_added
""") | frozenset(CHAIN_REASONS) | frozenset(f"drop_prefrag_{r}" for r in GSO_REASONS)

#: ``in_error_<type>``, ``out_error_<type>_<code>``
ICMP6_ERROR_CODES: dict[int, range] = {1: range(8), 2: range(1), 3: range(2), 4: range(4)}

ICMP6_COUNTERS: frozenset[str] = names("""
    drop_truncated drop_bad_checksum in_echo in_echo_reply echo_reply_unmatched
    in_other_type out_echo_reply out_echo_reply_failed out_echo drop_multicast_echo
    drop_error_bad_quote error_to_ping error_no_handler error_dispatched
    error_suppressed_multicast error_suppressed_icmp_error error_suppressed_source
    error_ratelimited error_no_source error_send_failed in_nd in_mld
""") | frozenset(f"in_error_{t}" for t in ICMP6_ERROR_CODES) \
    | frozenset(f"out_error_{t}_{c}" for t, codes in ICMP6_ERROR_CODES.items() for c in codes)

ND_COUNTERS: frozenset[str] = NEIGHBOUR_COUNTERS | names("""
    drop_bad_hlim drop_bad_code drop_truncated drop_bad_option drop_bad_target
    drop_bad_source drop_ra_not_linklocal drop_ra_ignored drop_dad_ns_bad_dest
    in_ns in_na in_rs in_ra in_redirect out_ns out_na out_rs out_ra
    dad_ns_out dad_conflict_ns dad_conflict_na dup_address ns_not_for_us
    na_multicast_solicited proxy_na ra_mtu ra_mtu_ignored ra_prefix ra_rdnss ra_router
    ra_router_expired redirect_installed drop_redirect_bad drop_redirect_not_router
    drop_redirect_forwarding
    drop_own
""")

MLD_COUNTERS: frozenset[str] = names("""
    in_query in_report in_done drop_truncated drop_bad_hlim drop_bad_source
    out_report out_done joined left query_general query_group
""")

REASS6_COUNTERS: frozenset[str] = REASS_COUNTERS | names("drop_incomplete_chain")
