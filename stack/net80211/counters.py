"""The counter names of a wireless interface (``wlan0``'s counters: config/interfaces,
nicinfo) beside the generic interface ones (stack/l2/counters.py IFACE_COUNTERS)."""

from __future__ import annotations

from stack.counters import names
from stack.l2.counters import IFACE_COUNTERS

#: why a received 802.11 frame was refused by the parser (``rx_bad_<reason>``)
PARSE_REASONS = names("short version type control ie rsn body")

WLAN_COUNTERS: frozenset[str] = IFACE_COUNTERS | names("""
    rx_frames rx_bytes rx_mgmt rx_data rx_dup rx_not_for_us rx_down rx_frag_unsupported
    rx_beacon rx_probe_req rx_probe_resp rx_auth rx_assoc_req rx_reassoc_req rx_assoc_resp
    rx_deauth rx_disassoc rx_deauth_foreign rx_deauth_unknown rx_mgmt_ignored
    rx_mgmt_bad_state rx_auth_unsupported
    rx_data_bad_ds rx_data_not_assoc rx_data_no_bss rx_null rx_no_key rx_ccmp_bad
    rx_replay rx_ccmp_mic_fail rx_ccmp_error rx_decrypted rx_unencrypted rx_bad_llc
    rx_unauthorized rx_mcast_echo rx_deliver rx_eapol
    intra_bss_unicast intra_bss_group
    tx_frames tx_bytes tx_mgmt tx_data tx_not_associated tx_foreign_source tx_no_station
    tx_encrypted tx_crypto_error tx_radio_drop tx_runt
    eapol_bad eapol_bad_mic eapol_replay eapol_unexpected eapol_no_node eapol_bad_ie
    eapol_bad_key_data
    handshakes_done handshake_timeouts group_rekeys group_handshakes_done
    scans scan_entries assoc_attempts assoc_ok assoc_failed auth_failed
    beacon_miss roams deauth_sent sta_joined sta_left sta_aged sta_refused
    beacons_sent probe_resp_sent
""") | frozenset("rx_bad_" + r for r in PARSE_REASONS)
