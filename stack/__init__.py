"""The io-pkt network stack: layer 2, IPv4, transports, pfil hooks, the module loader."""
