"""TCP (RFC 9293 and friends). ``TCPProto`` is ``stack.tcp``; ``TCPSocket`` its sockets."""

from stack.transport.tcp.proto import TCPConfig, TCPProto
from stack.transport.tcp.socket import TCPSocket
from stack.transport.tcp.tcb import TCB, State

__all__ = ["TCPProto", "TCPConfig", "TCPSocket", "TCB", "State"]
