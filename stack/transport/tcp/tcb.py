"""The TCP connection (TCB): its state (state.py) and its four roles (input.py,
output.py, timers.py, user.py) assembled into one class; see state.py for the layout.

The roles come before ``TCBState`` in the bases, so their methods are the ones found (the
stubs ``TCBState`` declares for type checking never run)."""

from __future__ import annotations

from stack.transport.tcp.input import TCBInput
from stack.transport.tcp.output import TCBOutput
from stack.transport.tcp.state import (
    INF,
    IPPROTO_TCP,
    RECV_STATES,
    SEND_STATES,
    SYNCHRONIZED,
    ConnKey,
    State,
)
from stack.transport.tcp.timers import TCBTimers
from stack.transport.tcp.user import TCBUser

__all__ = ["TCB", "State", "ConnKey", "INF", "IPPROTO_TCP", "RECV_STATES", "SEND_STATES",
           "SYNCHRONIZED"]


class TCB(TCBInput, TCBOutput, TCBTimers, TCBUser):
    """One connection (also the control block of a bound or listening socket)."""

    __slots__ = ()  # the attributes are TCBState's slots

