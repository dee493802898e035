"""Wire formats of the IPv6 layer (smoltcp's wire/ipv6*.rs, wire/icmpv6.rs, wire/ndisc*.rs):
parse a buffer in place, emit into a new one, nothing else.

``ipv6``: the fixed header and the extension-header chain (RFC 8200); ``icmp6``: ICMPv6
(RFC 4443), Neighbor Discovery messages and options (RFC 4861, 8106) and MLDv2 (RFC
3810). Parsers raise ``stack.inet.wire.ParseError`` whose ``reason`` is the counter the
handler bumps.
"""

from stack.inet.wire import ParseError

__all__ = ["ParseError"]
