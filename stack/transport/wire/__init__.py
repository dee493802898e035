"""Wire formats of the transports: parse in place (memoryview), emit into buffers.

No protocol logic lives here; every malformed input raises :class:`ParseError`."""

from stack.transport.wire.checksum import ParseError, checksum, pseudo_header_sum

__all__ = ["ParseError", "checksum", "pseudo_header_sum"]
