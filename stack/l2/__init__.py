"""Layer 2: the driver API (interfaces), Ethernet dispatch, bridge, VLAN, fast-forward,
capture taps and pfil hooks."""
