"""SACK (RFC 2018): the receiver's out-of-order queue that reports blocks, and the
sender's scoreboard (RFC 6675-style accounting, see tcb.py for its use)."""

from __future__ import annotations

from stack.transport.tcp import seq as sq


class ReassemblyQueue:
    """Out-of-order data, as disjoint blocks [start, start+len(data)) kept in order."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, bytearray]] = []  # (start, data)
        self.bytes = 0
        self._recent: list[int] = []  # block starts, most recently touched first

    def __len__(self) -> int:
        return len(self.blocks)

    def insert(self, seq: int, data: memoryview | bytes, rcv_nxt: int) -> bool:
        """Queue a segment beyond rcv_nxt. Returns False if it added nothing new."""
        off = sq.sub(rcv_nxt, seq)
        if off > 0:
            if off >= len(data):
                return False
            data = data[off:]
            seq = rcv_nxt
        start = sq.sub(seq, rcv_nxt)
        end = start + len(data)
        blocks = self.blocks
        # collect overlapping/adjacent blocks
        new_start, new_end = start, end
        first = len(blocks)
        last = -1
        for i, (bstart_abs, bdata) in enumerate(blocks):
            bs = sq.sub(bstart_abs, rcv_nxt)
            be = bs + len(bdata)
            if be < start:
                continue
            if bs > end:
                break
            first = min(first, i)
            last = i
            new_start = min(new_start, bs)
            new_end = max(new_end, be)
        if last < 0:
            idx = 0
            while idx < len(blocks) and sq.sub(blocks[idx][0], rcv_nxt) < start:
                idx += 1
            blocks.insert(idx, (seq, bytearray(data)))
            self.bytes += len(data)
            self._touch(seq)
            return True
        covered = sum(len(b[1]) for b in blocks[first:last + 1])
        if new_start == start and new_end == end:
            merged = bytearray(data)
        else:
            merged = bytearray(new_end - new_start)
            for bstart_abs, bdata in blocks[first:last + 1]:
                bs = sq.sub(bstart_abs, rcv_nxt) - new_start
                merged[bs:bs + len(bdata)] = bdata
            merged[start - new_start:end - new_start] = data
        if len(merged) == covered:
            self._touch(blocks[first][0])
            return False
        for b in blocks[first:last + 1]:
            if b[0] in self._recent:
                self._recent.remove(b[0])
        abs_start = sq.add(rcv_nxt, new_start)
        blocks[first:last + 1] = [(abs_start, merged)]
        self.bytes += len(merged) - covered
        self._touch(abs_start)
        return True

    def _touch(self, start: int) -> None:
        if start in self._recent:
            self._recent.remove(start)
        self._recent.insert(0, start)
        del self._recent[8:]

    def pop_ready(self, rcv_nxt: int) -> bytes | bytearray | None:
        """The block continuing the in-order stream at rcv_nxt (trimmed), if any."""
        while self.blocks:
            bstart, bdata = self.blocks[0]
            off = sq.sub(rcv_nxt, bstart)
            if off < 0:
                return None
            self.blocks.pop(0)
            self.bytes -= len(bdata)
            if bstart in self._recent:
                self._recent.remove(bstart)
            if off < len(bdata):
                return bdata[off:] if off else bdata
        return None

    def sack_blocks(self, limit: int) -> list[tuple[int, int]]:
        """Up to ``limit`` blocks, the most recently changed first (RFC 2018 4)."""
        out: list[tuple[int, int]] = []
        by_start = {b[0]: len(b[1]) for b in self.blocks}
        for s in self._recent:
            if s in by_start:
                out.append((s, sq.add(s, by_start.pop(s))))
                if len(out) >= limit:
                    return out
        for s, n in by_start.items():
            out.append((s, sq.add(s, n)))
            if len(out) >= limit:
                break
        return out

    def clear(self) -> None:
        self.blocks.clear()
        self._recent.clear()
        self.bytes = 0


class Scoreboard:
    """The sender's record of SACKed ranges above SND.UNA, as offsets from SND.UNA kept
    as absolute sequence numbers in order."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []  # [start, end) absolute
        self.sacked = 0

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def clear(self) -> None:
        self.ranges.clear()
        self.sacked = 0

    def update(self, blocks: list[tuple[int, int]], snd_una: int, snd_max: int) -> int:
        """Add reported blocks (ignoring invalid ones, RFC 2883 D-SACKs below SND.UNA).
        Returns the number of newly SACKed bytes."""
        before = self.sacked
        for left, right in blocks:
            if not (sq.lt(left, right) and sq.ge(left, snd_una) and sq.le(right, snd_max)):
                continue
            self._add(sq.sub(left, snd_una), sq.sub(right, snd_una), snd_una)
        return self.sacked - before

    def _add(self, s: int, e: int, una: int) -> None:
        rel = [[sq.sub(a, una), sq.sub(b, una)] for a, b in self.ranges]
        out: list[list[int]] = []
        placed = False
        for a, b in rel:
            if b < s:
                out.append([a, b])
            elif a > e:
                if not placed:
                    out.append([s, e])
                    placed = True
                out.append([a, b])
            else:
                s, e = min(a, s), max(b, e)
        if not placed:
            out.append([s, e])
        self.ranges = [[sq.add(una, a), sq.add(una, b)] for a, b in out]
        self.sacked = sum(b - a for a, b in out)

    def ack(self, snd_una: int) -> None:
        """SND.UNA advanced: forget what is now cumulatively acknowledged."""
        if not self.ranges:
            return
        keep: list[list[int]] = []
        total = 0
        for a, b in self.ranges:
            if sq.le(b, snd_una):
                continue
            if sq.lt(a, snd_una):
                a = snd_una
            keep.append([a, b])
            total += sq.sub(b, a)
        self.ranges = keep
        self.sacked = total

    def high(self, snd_una: int) -> int:
        """The highest SACKed sequence number (SND.UNA when none)."""
        return self.ranges[-1][1] if self.ranges else snd_una

    def sacked_between(self, lo: int, hi: int) -> int:
        total = 0
        for a, b in self.ranges:
            a2 = a if sq.gt(a, lo) else lo
            b2 = b if sq.lt(b, hi) else hi
            if sq.lt(a2, b2):
                total += sq.sub(b2, a2)
        return total

    def is_sacked(self, seq: int) -> bool:
        return any(sq.between(a, seq, b) for a, b in self.ranges)

    def next_hole(self, frm: int, limit: int) -> tuple[int, int] | None:
        """The first un-SACKed range [start, end) at or after ``frm`` and below ``limit``."""
        cur = frm
        for a, b in self.ranges:
            if sq.le(b, cur):
                continue
            if sq.lt(cur, a):
                end = a if sq.lt(a, limit) else limit
                return (cur, end) if sq.lt(cur, end) else None
            cur = b
        return (cur, limit) if sq.lt(cur, limit) else None
