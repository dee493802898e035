"""The ``qnet`` group's counter names (stack/counters.py): one group per Qnet instance,
shown by ``io-pkt qnet`` and ``<prefix>/net/.qnet/stats``."""

from __future__ import annotations

from stack.counters import names

#: why a frame is refused (wire.ParseError.reason and the transport's own checks)
DROP_REASONS = names("""
    drop_truncated drop_bad_version drop_unknown_type drop_unknown_layer drop_no_crc
    drop_bad_crc drop_bad_mac drop_bad_tcs drop_bad_lr drop_bad_conn drop_unknown_conn
    drop_out_of_window drop_bad_ack drop_bad_fragment drop_not_bound drop_user_type
    drop_nr_layer drop_bad_kif drop_not_allowed
""")

QNET_COUNTERS: frozenset[str] = DROP_REASONS | names("""
    frames_in frames_out bytes_in bytes_out data_in data_out dup_in ooo_in
    acks_in acks_out nacks_in nacks_out retransmits timeouts rtt_samples
    messages_in messages_out fragments_out tx_queued tx_no_link
    tcs_init_in tcs_init_out tcs_rem_up_in tcs_up_in tcs_down_in tcs_down_out
    tcs_rem_down_in tcs_rem_down_out conn_up conn_down conn_reset peer_restart
    link_down link_up probes_out probes_in
    lr_in lr_requests_out lr_replies_out lr_announce_out lr_learned lr_expired
    lr_refused_unsolicited lr_rate_limited lr_table_full lr_bad_name
    kif_requests kif_replies kif_errors kif_interrupts kif_poll_events
    kif_served kif_server_errors kif_denied ip_in ip_out
""")
