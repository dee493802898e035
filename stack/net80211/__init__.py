"""IEEE 802.11 (issue 19): NetBSD's net80211 for io-pkt. See docs/wlan.md."""
