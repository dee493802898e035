"""A stub resolver's logic without its I/O (so one copy serves the stack, on trio, and
rmgr.libsocket, blocking).

* ``plan(name, qtypes, conf)`` is a generator: it yields the questions for one candidate
  name (the search list applied as glibc does: a name with at least ``ndots`` dots is
  tried as given first, else after the search domains; a trailing dot means as given
  only), is sent back the answers the I/O got (``{(qname, qtype): Message}``, or
  ``None`` when no server answered at all), follows CNAME chains (within an answer, and
  by asking again for a target the answer left unresolved, up to ``MAX_CNAMES``), and
  returns a ``Result``: the addresses and canonical name, or the ``EAI_*`` error.
* ``Exchange`` is one attempt at one server: the queries to send, and ``accept`` for
  every datagram that comes back, which refuses (and counts, by the returned reason)
  what does not answer a question asked: from another address or port
  (``drop_spoofed_source``), another id (``drop_bad_id``), not a response
  (``drop_not_response``), another question (``drop_question_mismatch``), malformed
  (``drop_<parse reason>``, stack/dns/wire.py). A truncated answer (TC) is kept aside
  for the TCP retry (``truncated()``).

Errors map to getaddrinfo's as glibc's do: every candidate NXDOMAIN → ``EAI_NONAME``;
the name exists without an address of the asked family → ``EAI_NODATA``; SERVFAIL /
REFUSED / no answer from any server (the timeout) → ``EAI_AGAIN``.
"""

from __future__ import annotations

import random
import socket as _std
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from stack.dns import wire
from stack.dns.conf import ResolvConf

EAI_NONAME = _std.EAI_NONAME
EAI_AGAIN = _std.EAI_AGAIN
EAI_FAIL = _std.EAI_FAIL
EAI_NODATA: int = getattr(_std, "EAI_NODATA", -5)

#: glibc's messages (gai_strerror)
EAI_MESSAGES = {
    EAI_NONAME: "Name or service not known",
    EAI_AGAIN: "Temporary failure in name resolution",
    EAI_FAIL: "Non-recoverable failure in name resolution",
    EAI_NODATA: "No address associated with hostname",
}

MAX_CNAMES = 8

Key = tuple[str, int]
Answers = dict[Key, wire.Message]

#: the counters the resolvers count (the stack's ``dns`` group, libsocket's own)
DNS_COUNTERS: frozenset[str] = frozenset(
    {"queries_out", "answers_in", "timeouts", "tcp_fallback", "tcp_errors", "nxdomain",
     "servfail", "refused", "lookups", "lookup_errors", "drop_spoofed_source",
     "drop_bad_id", "drop_not_response", "drop_question_mismatch", "send_errors",
     # the stack's cs and dns files (stack/dns)
     "cs_requests", "cs_errors"} | {f"drop_{r}" for r in wire.PARSE_REASONS})
#: the names ``Exchange.accept`` returns (and counts) for a refused answer
REFUSALS: frozenset[str] = frozenset(
    {"drop_spoofed_source", "drop_bad_id", "drop_not_response", "drop_question_mismatch"}
    | {f"drop_{r}" for r in wire.PARSE_REASONS})


@dataclass
class Result:
    """What a lookup found: ``addrs`` as (4 or 6, text), or ``error`` (an EAI_* code)."""

    name: str
    canonical: str = ""
    addrs: list[tuple[int, str]] = field(default_factory=list)
    error: int = 0

    @property
    def message(self) -> str:
        return EAI_MESSAGES.get(self.error, "Unknown error")


def candidates(name: str, conf: ResolvConf) -> list[str]:
    """The names to try for ``name``, in order (glibc's res_search)."""
    if name.endswith("."):
        return [name.rstrip(".")]
    given = [name]
    searched = [f"{name}.{d}" for d in conf.search if d]
    if name.count(".") >= conf.ndots:
        return given + searched
    return searched + given


def _follow(msg: wire.Message, qname: str, qtype: int) -> tuple[str, list[str], bool]:
    """(the name the CNAME chain from ``qname`` ends at, its ``qtype`` records, whether
    a CNAME was followed) within one answer section."""
    cur = wire.normalize(qname)
    followed = False
    for _ in range(MAX_CNAMES + 1):
        addrs = [str(r.data) for r in msg.answers
                 if wire.normalize(r.name) == cur and r.rtype == qtype]
        if addrs:
            return cur, addrs, followed
        nxt = [r for r in msg.answers if wire.normalize(r.name) == cur
               and r.rtype == wire.TYPE_CNAME and isinstance(r.data, str)]
        if not nxt:
            return cur, [], followed
        cur = wire.normalize(str(nxt[0].data))
        followed = True
    return cur, [], followed


def plan(name: str, qtypes: Sequence[int], conf: ResolvConf
         ) -> Generator[list[wire.Question], Answers | None, Result]:
    """See the module docstring."""
    result = Result(name)
    saw_nodata = saw_again = False
    for cand in candidates(name, conf):
        asked = {qt: cand for qt in qtypes}
        found: list[tuple[int, str]] = []
        canonical = ""
        status = "nxdomain"
        for _hop in range(MAX_CNAMES):
            questions = [wire.Question(n, qt) for qt, n in asked.items()]
            answers = yield questions
            if answers is None:  # no server answered: glibc gives up at once
                result.error = EAI_AGAIN
                return result
            again: dict[int, str] = {}
            for qt, qname in asked.items():
                msg = answers.get((wire.normalize(qname), qt))
                if msg is None or msg.rcode in (wire.RCODE_SERVFAIL, wire.RCODE_REFUSED,
                                                wire.RCODE_FORMERR, wire.RCODE_NOTIMP):
                    if status == "nxdomain":
                        status = "again"
                    continue
                end, addrs, _ = _follow(msg, qname, qt)
                if addrs:
                    family = 6 if qt == wire.TYPE_AAAA else 4
                    found += [(family, a) for a in addrs if (family, a) not in found]
                    canonical = canonical or end
                    status = "ok"
                elif msg.rcode == wire.RCODE_NXDOMAIN:
                    continue
                elif end != wire.normalize(qname) and not any(
                        r.rtype == wire.TYPE_CNAME and wire.normalize(r.name) == end
                        for r in msg.answers):
                    again[qt] = end  # a CNAME to a name the answer did not resolve
                elif status != "ok":
                    status = "nodata"
            if not again:
                break
            asked = again
        if found:
            result.addrs = found
            result.canonical = canonical or cand
            return result
        saw_nodata |= status == "nodata"
        saw_again |= status == "again"
    result.error = EAI_NODATA if saw_nodata else EAI_AGAIN if saw_again else EAI_NONAME
    return result


class Exchange:
    """One attempt at one server: see the module docstring. ``counters`` is any mapping
    of the ``DNS_COUNTERS`` names (a stack.counters.Counters)."""

    def __init__(self, server: str, port: int, questions: list[wire.Question],
                 counters: dict[str, int]) -> None:
        self.server = server
        self.port = port
        self.counters = counters
        #: id → question
        self.pending: dict[int, wire.Question] = {}
        self.queries: dict[int, bytes] = {}
        ids = random.sample(range(1, 0x10000), len(questions))
        for qid, q in zip(ids, questions, strict=True):
            self.pending[qid] = q
            self.queries[qid] = wire.build_query(qid, q.name, q.qtype)
        self.answers: Answers = {}
        self._truncated: dict[int, wire.Question] = {}

    @property
    def done(self) -> bool:
        return not self.pending

    def datagrams(self) -> list[bytes]:
        """The queries still unanswered."""
        return [self.queries[qid] for qid in self.pending]

    def truncated(self) -> list[tuple[int, bytes]]:
        """(id, query) of the answers that came back with TC, for TCP."""
        return [(qid, self.queries[qid]) for qid in self._truncated]

    def accept(self, data: bytes, src: str, sport: int, *, tcp_id: int | None = None) -> str:
        """Take one datagram (or a TCP answer to ``tcp_id``); returns "" if it answered
        a pending question, else the counter name it was refused under."""
        c = self.counters
        reason = self._check(data, src, sport, tcp_id)
        if reason:
            c[reason] += 1
        else:
            c["answers_in"] += 1
        return reason

    def _check(self, data: bytes, src: str, sport: int, tcp_id: int | None) -> str:
        if sport != self.port or not _same_addr(src, self.server):
            return "drop_spoofed_source"
        try:
            msg = wire.parse(data)
        except wire.DnsError as exc:
            return f"drop_{exc.reason}"
        q = self.pending.get(msg.id) if tcp_id is None else \
            self._truncated.get(msg.id) if msg.id == tcp_id else None
        if q is None:
            return "drop_bad_id"
        if not msg.is_response:
            return "drop_not_response"
        if len(msg.questions) != 1 or wire.normalize(msg.questions[0].name) != \
                wire.normalize(q.name) or msg.questions[0].qtype != q.qtype:
            return "drop_question_mismatch"
        if msg.truncated and tcp_id is None:
            self.counters["tcp_fallback"] += 1
            self._truncated[msg.id] = q
            del self.pending[msg.id]
            return ""
        self._truncated.pop(msg.id, None)
        self.pending.pop(msg.id, None)
        if msg.rcode == wire.RCODE_NXDOMAIN:
            self.counters["nxdomain"] += 1
        elif msg.rcode == wire.RCODE_SERVFAIL:
            self.counters["servfail"] += 1
        elif msg.rcode == wire.RCODE_REFUSED:
            self.counters["refused"] += 1
        self.answers[(wire.normalize(q.name), q.qtype)] = msg
        return ""

    def tcp_failed(self, qid: int) -> None:
        """The TCP retry of a truncated answer failed: use the truncated one (what it
        holds, if anything, is still an answer)."""
        self.counters["tcp_errors"] += 1
        self._truncated.pop(qid, None)

    def usable(self) -> bool:
        """An answer a resolver stops at: every question answered, none with SERVFAIL
        or REFUSED (those make it ask the next server)."""
        return self.done and not self._truncated and all(
            m.rcode not in (wire.RCODE_SERVFAIL, wire.RCODE_REFUSED)
            for m in self.answers.values())


def _same_addr(a: str, b: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def tcp_frame(query: bytes) -> bytes:
    """A query as sent over TCP (RFC 1035 §4.2.2: a two-octet length first)."""
    return len(query).to_bytes(2, "big") + query


def server_order(conf: ResolvConf) -> list[str]:
    servers = conf.servers()
    if conf.rotate and len(servers) > 1:
        k = random.randrange(len(servers))
        servers = servers[k:] + servers[:k]
    return servers


def qtypes_for(family: int) -> list[int]:
    """The record types for a getaddrinfo family (AF_INET, AF_INET6, AF_UNSPEC)."""
    if family == _std.AF_INET:
        return [wire.TYPE_A]
    if family == _std.AF_INET6:
        return [wire.TYPE_AAAA]
    return [wire.TYPE_A, wire.TYPE_AAAA]


def reverse_name(addr: str) -> str:
    """in-addr.arpa / ip6.arpa name of an address (PTR lookups)."""
    import ipaddress

    return ipaddress.ip_address(addr).reverse_pointer
