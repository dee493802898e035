"""The ``ipsec`` group's counter names: one per drop reason (docs/ipsec.md)."""

from __future__ import annotations

from stack.counters import names

OUT_DROPS = names("""
    out_drop_no_sa out_drop_seq_overflow out_drop_sa_expired out_drop_crypto
    out_drop_send out_drop_policy_discard out_drop_bad_packet out_drop_no_policy
    out_drop_too_big
""")
IN_DROPS = names("""
    in_drop_truncated in_drop_bad_spi in_drop_replay in_drop_out_of_window
    in_drop_auth_failed in_drop_bad_length in_drop_bad_padding in_drop_bad_inner
    in_drop_sa_expired in_drop_policy_mismatch in_drop_policy_discard in_drop_crypto
    in_drop_natt_bad
""")
IPSEC_COUNTERS: frozenset[str] = OUT_DROPS | IN_DROPS | names("""
    out_packets out_bytes out_natt out_async in_packets in_bytes in_natt in_natt_keepalive
    in_async sa_soft_expired sa_hard_expired sa_added sa_deleted sp_added sp_deleted
    out_bypass in_bypass out_pmtu_local
""")
