"""The names of layer 2's counters, declared in one place (stack/counters.py): the
``ether`` group (``Layer2``), ``fastfwd`` (the fast-forward cache) and an interface's
own group (``iface.counters``, named after the interface), whose names depend on the
kind of interface: ``Interface.counter_names`` (every interface's), a bridge's and an fd
driver's here, a driver module's in its own file (``COUNTERS`` in modules/devnp-tap.py).

A name not listed raises in strict mode (the tests) and is reported by
tests/arch/test_counter_names.py. Adding a counter means adding its name here.
"""

from __future__ import annotations

from stack.counters import ERRNO_NAMES, names

#: why software segmentation refuses a frame (``GsoError.reason``, stack/l2/gso.py):
#: counted as ``gso_error_<reason>`` by the interface sending it, ``drop_gso_<reason>``
#: by layer 2 receiving it, ``drop_prefrag_<reason>`` by the IPv4 output hook
GSO_REASONS = ("runt", "bad_ip_header", "not_ip", "gso_type_mismatch", "gso_type_unknown",
               "bad_csum_offset", "bad_tcp_header", "mtu_too_small", "already_fragmented")


def ethertype_counters(ethertype: int) -> frozenset[str]:
    """A dispatched EtherType's counter, ``in_0x800`` (``"in_" + hex(etype)`` in
    ``Layer2.input``): declared when a protocol registers it."""
    return frozenset({"in_" + hex(ethertype)})


#: ``stack.l2.counters``
ETHER_COUNTERS: frozenset[str] = names("""
    drop_runt drop_pfil_in drop_pfil_out drop_multicast_not_joined in_multicast
    promisc_not_ours drop_not_our_mac fastforwarded drop_unknown_ethertype
    gso_rx_frames gso_rx_segments drop_vlan_runt drop_vlan_unknown in_vlan
""") | frozenset(f"drop_gso_{r}" for r in GSO_REASONS) \
    | ethertype_counters(0x0800) | ethertype_counters(0x0806)  # IPv4, ARP: always there

#: ``stack.l2.fastfwd.counters``
FASTFWD_COUNTERS: frozenset[str] = names("""
    inserted evicted invalidated flushes forwarded offload_sw
    miss_special miss_options miss_noflow miss_slowpath miss_bad_checksum miss_bad_source
    forwarded6 miss6_special miss6_hbh miss6_noflow miss6_slowpath miss6_bad_source
""")

#: every interface's (``Interface.counter_names``): BSD's if_data, the taps, software
#: offloads (iface.py) and the medium's (medium.py); layer 2 counts some of them too
IFACE_COUNTERS: frozenset[str] = names("""
    ipackets ibytes ierrors iqdrops opackets obytes oerrors oqdrops
    tap_errors gso_errors gso_frames gso_segments csum_completed
    drop_no_medium_input drop_no_neighbour_table drop_unknown_protocol
""") | frozenset(f"gso_error_{r}" for r in GSO_REASONS)

#: a driver on a file descriptor (stack/l2/fdio.py: ``FdInterface``); ``tx_errno_<E>``
#: counts a write that failed with errno E
FDIO_COUNTERS: frozenset[str] = IFACE_COUNTERS | names("""
    rx_wakeups rx_budget_yields device_gone tx_blocked tx_queued rx_other_queues
""") | frozenset(f"tx_errno_{n}" for n in (*ERRNO_NAMES, "unknown"))

#: a bridge interface (stack/l2/bridge.py)
BRIDGE_COUNTERS: frozenset[str] = IFACE_COUNTERS | names("""
    members_added learned learn_table_full aged local flooded_multicast flooded_unknown
    filtered_same_port forwarded drop_member_down
""")
