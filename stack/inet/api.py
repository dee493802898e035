"""Compatibility: the network-layer/transport contract moved to ``stack/network.py``
(both families, addresses as ``stack.addr.Addr``). This module re-exports its types for
code that still imports them from here; new code imports ``stack.network``.

What the IPv4 layer adds beyond that contract (``stack/inet/ipv4.py``, docs/inet.md):
``register_protocol`` / ``unregister_protocol`` / ``register_error_handler`` (the
demultiplexing tables the registries' watcher fills), ``output(..., ident=None,
options=b"")``, ``icmp.send_error(type, code, packet_view, extra=0, src=None)``.
"""

from __future__ import annotations

from stack.network import (
    ErrorHandler,
    IPInfo,
    NetworkLayer,
    Payload,
    RawTap,
    TransportHandler,
    control_errno,
)
from stack.packet import TxMeta

__all__ = ["IPInfo", "TransportHandler", "ErrorHandler", "RawTap", "Payload", "TxMeta",
           "NetworkLayer", "control_errno"]
