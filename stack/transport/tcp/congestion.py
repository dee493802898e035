"""Congestion control: NewReno (RFC 5681 + RFC 6582) and CUBIC (RFC 9438).

The TCB owns loss detection and recovery bookkeeping (which segments to resend, the
NewReno inflation); a controller only decides ``cwnd``/``ssthresh`` on these events:
``on_ack`` (new data acknowledged outside recovery), ``on_congestion`` (fast retransmit),
``on_recovery_end``, ``on_rto``. All sizes are bytes."""

from __future__ import annotations

INITIAL_WINDOW_SEGMENTS = 10  # RFC 6928


class Controller:
    name = "base"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = INITIAL_WINDOW_SEGMENTS * mss
        self.ssthresh = 0x7FFFFFFF
        self._acc = 0  # bytes acked towards the next congestion-avoidance increase

    def set_mss(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = max(self.cwnd, 2 * mss)

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def slow_start(self, acked: int) -> int:
        """RFC 5681 with appropriate byte counting (RFC 3465, L = 2*SMSS). Returns the
        bytes left over once cwnd reached ssthresh."""
        inc = min(acked, 2 * self.mss)
        room = self.ssthresh - self.cwnd
        if inc > room:
            self.cwnd = self.ssthresh
            return acked - room
        self.cwnd += inc
        return 0

    def on_ack(self, acked: int, now: float, rtt: float, flight: int) -> None:
        raise NotImplementedError

    def on_congestion(self, now: float, flight: int) -> None:
        raise NotImplementedError

    def on_recovery_end(self, now: float, flight: int) -> None:
        # RFC 6582 3.2 step 3 (full ACK): deflate to min(ssthresh, FlightSize + SMSS)
        self.cwnd = max(min(self.ssthresh, flight + self.mss), 2 * self.mss)

    def on_rto(self, now: float, flight: int) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss  # loss window
        self._acc = 0


class NewReno(Controller):
    name = "newreno"

    def on_ack(self, acked: int, now: float, rtt: float, flight: int) -> None:
        if self.cwnd < self.ssthresh:
            acked = self.slow_start(acked)
            if not acked:
                return
        # congestion avoidance: one SMSS per cwnd of bytes acknowledged
        self._acc += acked
        if self._acc >= self.cwnd:
            self._acc -= self.cwnd
            self.cwnd += self.mss

    def on_congestion(self, now: float, flight: int) -> None:
        # RFC 5681 eq. (4)
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self._acc = 0


class Cubic(Controller):
    """RFC 9438. Windows are computed in segments (floats) and kept in bytes."""

    name = "cubic"
    C = 0.4
    BETA = 0.7

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self.w_max = 0.0          # segments
        self.w_last_max = 0.0
        self.k = 0.0
        self.epoch_start: float | None = None
        self.w_est = 0.0          # Reno-friendly estimate, segments
        self.cwnd_epoch = 0.0

    def _start_epoch(self, now: float) -> None:
        self.epoch_start = now
        cw = self.cwnd / self.mss
        if cw < self.w_max:
            self.k = ((self.w_max - cw) / self.C) ** (1 / 3)
        else:
            self.k = 0.0
            self.w_max = cw
        self.w_est = cw
        self.cwnd_epoch = cw

    def on_ack(self, acked: int, now: float, rtt: float, flight: int) -> None:
        if self.cwnd < self.ssthresh:
            acked = self.slow_start(acked)
            if not acked:
                return
        if self.epoch_start is None:
            self._start_epoch(now)
        assert self.epoch_start is not None
        t = now - self.epoch_start
        cw = self.cwnd / self.mss
        # RFC 9438 4.3: Reno-friendly region estimate
        alpha = 3 * (1 - self.BETA) / (1 + self.BETA) if self.w_est < self.w_max else 1.0
        self.w_est += alpha * (acked / self.mss) / cw
        # 4.2: target W_cubic(t + RTT), clamped to [cwnd, 1.5 cwnd]
        target = self.C * (t + rtt - self.k) ** 3 + self.w_max
        target = min(max(target, cw), 1.5 * cw)
        if self.w_est > target:
            new = self.w_est if self.w_est > cw else cw
            inc = (new - cw)
        else:
            inc = (target - cw) / cw * (acked / self.mss)
        self.cwnd = int(max(cw + inc, 2) * self.mss)

    def on_congestion(self, now: float, flight: int) -> None:
        cw = self.cwnd / self.mss
        # 4.7 fast convergence
        if cw < self.w_last_max:
            self.w_last_max = cw
            self.w_max = cw * (1 + self.BETA) / 2
        else:
            self.w_last_max = cw
            self.w_max = cw
        self.ssthresh = max(int(flight * self.BETA), 2 * self.mss)
        self.cwnd = self.ssthresh
        self.epoch_start = None

    def on_rto(self, now: float, flight: int) -> None:
        cw = self.cwnd / self.mss
        self.w_last_max = cw
        self.w_max = cw
        self.ssthresh = max(int(flight * self.BETA), 2 * self.mss)
        self.cwnd = self.mss
        self.epoch_start = None


ALGORITHMS: dict[str, type[Controller]] = {"newreno": NewReno, "cubic": Cubic}


def make(name: str, mss: int) -> Controller:
    try:
        return ALGORITHMS[name](mss)
    except KeyError:
        raise ValueError(f"unknown congestion control {name!r}; "
                         f"one of {', '.join(ALGORITHMS)}") from None
