"""TCP user calls (RFC 9293 3.10.1-3.10.6): queue data to send, take received data
(with receive-buffer autotuning and window updates), shutdown, close, abort. The socket
(socket.py) calls these and turns their effects into wake-ups. NetBSD's tcp_usrreq.c."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from stack.packet import Buffer
from stack.transport.tcp.state import SEND_STATES, SYNCHRONIZED, S, TCBState

if TYPE_CHECKING:  # cycle: TCB is assembled from this role (tcb.py imports it); types only
    from stack.transport.tcp.tcb import TCB


class TCBUser(TCBState):
    """The user-call role of the TCB (see state.py)."""

    __slots__ = ()  # the attributes are TCBState's slots

    def user_send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as the send buffer takes; returns the count."""
        room = self.snd_limit - len(self.sndbuf)
        if room <= 0:
            return 0
        n = min(room, len(data))
        self.sndbuf.append(data[:n] if n < len(data) else data)
        self.c["user_bytes_in"] += n
        if self.state in SEND_STATES:
            if self.flight():
                # data in flight: its ACKs will clock this out anyway, so within a batch
                # (a FUSE WRITE's handler) it goes after the reply, as Linux's autocork
                # holds small writes behind data in flight
                self.output_soon()
            else:
                self.output()  # an idle connection (a request, an echo): on the wire now
        return n

    def user_recv(self, n: int, peek: bool = False) -> bytes:
        data = self.rcvbuf.take(n, peek)  # the one copy
        if peek or not data:
            return data
        self._read_out(len(data))
        return data

    def user_recv_views(self, n: int) -> tuple[list[Buffer], int]:
        """``user_recv`` without the copy: (pieces, their size) for a writer that
        gathers (the socket door's FUSE reply)."""
        n = min(n, len(self.rcvbuf))
        if n <= 0:
            return [], 0
        parts = self.rcvbuf.take_views(n)
        self._read_out(n)
        return parts, n

    def _read_out(self, n: int) -> None:
        """``n`` bytes left the receive buffer: autotuning, and a window update if due."""
        self.rcv_copied += n
        self._autotune_rcv()
        if self.window_update_needed():
            self.c["window_updates"] += 1
            self.ack_now = True
            self.output_soon()

    def _autotune_rcv(self) -> None:
        cfg = self.proto.cfg
        if not cfg.recvbuf_auto or self.rcv_limit >= cfg.recvbuf_max:
            return
        now = self.now()
        period = max(self.srtt, 0.001)
        if now - self.rcv_mark >= period:
            if self.rcv_copied * 2 >= self.rcv_limit:
                self.rcv_limit = min(self.rcv_limit * 2, cfg.recvbuf_max)
                self.c["rcvbuf_grown"] += 1
            self.rcv_copied = 0
            self.rcv_mark = now

    def user_shutdown_write(self) -> None:
        if self.wr_shut:
            return
        if self.state in (S.SYN_SENT, S.CLOSED, S.LISTEN):
            self.wr_shut = True
            return
        self.wr_shut = True
        if self.state == S.ESTABLISHED:
            self.set_state(S.FIN_WAIT_1)
        elif self.state == S.CLOSE_WAIT:
            self.set_state(S.LAST_ACK)
        self.output()

    def user_close(self, linger_zero: bool = False) -> None:
        """close(): the socket is gone; the connection finishes on its own."""
        self.user_closed = True
        self.sock = None
        st = self.state
        if st == S.LISTEN:
            self.proto.close_listener(cast("TCB", self))
            return
        if st in (S.CLOSED, S.SYN_SENT):
            self.destroy()
            return
        if linger_zero or self.rcvbuf or (st in SYNCHRONIZED and self.ooo.bytes and False):
            if st != S.TIME_WAIT:
                self.c["close_rst"] += 1
                self.send_rst()
            self.destroy()
            return
        self.user_shutdown_write()
        if self.state == S.FIN_WAIT_2:
            self.t_conn = self.now() + self.proto.cfg.fin_wait2_timeout
            self.rearm()

    def user_abort(self) -> None:
        if self.state in SYNCHRONIZED or self.state == S.SYN_RECEIVED:
            self.send_rst()
        self.destroy()
