"""The scale rows (issue 21), each a workload of ``python -m bench``:

* ``conns10k``: a stack with its files mounted (as a real one) in a fresh worker
  process per run (``ONE_PROCESS_PER_RUN``); a kernel client in the TAP's namespace
  (``python -m bench.scale_bench hold``) opens ``scale_conns`` TCP connections (10,000;
  200 with ``--smoke``) to an in-stack listener, all accepted and held; the figure is
  the stack process's VmRSS (MB); CPU per 1,000 connections set up.
* ``churn`` (a soak row: only with ``--long`` or ``--only churn``): CHURN_WORKERS kernel
  client processes in the TAP's namespace (``python -m bench.scale_bench churn``), each
  for ``churn_seconds`` as fast as it can: connect, send 1 KB, read the 1 KB echoed back,
  close, against an in-stack echo server (which echoes, then closes on the client's
  EOF); connections/s. Every second the worker samples its own RSS, its open fds
  (/proc/self/fd) and the stack's TCP connection table (TIME_WAIT records apart);
  "met" is RSS growth from 10 s to the end ≤ CHURN_RSS_GROWTH and the fd count flat.
* ``churn_files`` (a soak row too: ``--long`` or ``--only churn_files``): the same
  clients against an echo server on rmgr.libsocket through the stack's files (``python
  -m bench.scale_bench churn-server``, a child process of the worker with SOCK= the
  stack's prefix: one acceptor thread, a thread per accepted connection), where fd or
  FUSE-handle leaks would show. Every second the worker also samples the socket door's
  table (st.sockets: open sockets, unclaimed accepts) and the FUSE session's open
  handles and known inodes; "met" is churn's plus the handles, the table and the inodes
  flat (within CHURN_INFLIGHT of their count at 10 s).

The client programs are in this module too (``python -m bench.scale_bench MODE ...``):
plain blocking stdlib sockets, JSON lines on stdout, as bench/peer.py's.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:  # bench.workloads imports this module to list its workloads
    from bench.workloads import Params

SCALE_PORT = 6001
CHURN_PORT = 6011
#: kernel client processes doing the churn in parallel (2 cores: the stack is the other)
CHURN_WORKERS = 3
CHURN_SIZE = 1024  # bytes each way per connection
CHURN_WARMUP = 10.0  # s: RSS and fds are compared from here to the end
#: met: RSS at the end at most this much above RSS at 10 s
CHURN_RSS_GROWTH = 0.05
#: met: the fd count at the end within this of the count at 10 s. The stack opens no fd
#: per in-stack connection, and the samples are taken while every client runs (their
#: pipes are this process's fds too), so the count should not move at all; 2 covers an
#: fd that a sampling moment may catch in passing (a FUSE request's, trio's wake-up)
CHURN_FD_TOLERANCE = 2
#: churn_files, met: open FUSE handles, socket-table entries and known inodes at the end
#: within this of their count at 10 s. A sample catches connections in flight (each
#: client's: the accepted socket's handle and table entry, one more queued for accept);
#: a leak of one per connection would be thousands
CHURN_INFLIGHT = 2 * CHURN_WORKERS
#: local port range in the client's namespace: 10,000 connections from one address
PORT_RANGE = "10000 65000"
PORTS_PER_ADDR = 50000


# -- the kernel clients -----------------------------------------------------------------
def out(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def raise_nofile(n: int) -> None:
    """Room for ``n`` sockets (root may raise the hard limit as well)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if want <= soft:
        return
    if hard != resource.RLIM_INFINITY and want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def hold(host: str, port: int, n: int, sources: list[str]) -> None:
    """Open ``n`` connections (spread over ``sources``, PORTS_PER_ADDR each), print ready
    with the seconds it took, hold them until stdin reaches EOF."""
    raise_nofile(n)
    conns = []
    t0 = time.perf_counter()
    for i in range(n):
        src = sources[min(i // PORTS_PER_ADDR, len(sources) - 1)] if sources else ""
        conns.append(socket.create_connection((host, port), timeout=30,
                                              source_address=(src, 0) if src else None))
    out({"ready": True, "count": len(conns), "seconds": time.perf_counter() - t0})
    sys.stdin.read()
    for c in conns:
        c.close()


def churn(host: str, port: int, seconds: float, size: int) -> None:
    """Connect, send ``size`` bytes, read ``size`` back, close; for ``seconds``."""
    data = b"\x5a" * size
    count = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(data)
        got = 0
        while got < size:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError(f"EOF after {got} of {size} bytes")
            got += len(chunk)
        s.close()
        count += 1
    out({"count": count, "seconds": time.perf_counter() - t0})


def churn_server(port: int, size: int) -> None:
    """The churn_files echo server, on rmgr.libsocket (SOCK= the stack's prefix): a thread
    per accepted connection reads ``size`` bytes, sends them back, closes at the client's
    EOF. Prints ready (with its open fds); at stdin's EOF (the clients are done) prints
    ``{"accepted", "errors", "fds_ready", "fds_end"}`` and exits."""
    import threading

    from rmgr import libsocket

    ls = libsocket.socket()
    ls.setsockopt(libsocket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1024)
    fds_ready = fd_count()
    counts = {"accepted": 0, "errors": 0}
    lock = threading.Lock()

    def echo(c: Any) -> None:
        try:
            got = bytearray()
            while len(got) < size:
                d = c.recv(65536)
                if not d:
                    break
                got += d
            if got:
                c.sendall(bytes(got))
            while c.recv(65536):
                pass
        except OSError:
            with lock:
                counts["errors"] += 1
        finally:
            c.close()

    def acceptor() -> None:
        while True:
            c, _ = ls.accept()
            with lock:
                counts["accepted"] += 1
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    threading.Thread(target=acceptor, daemon=True).start()
    out({"ready": True, "fds": fds_ready})
    sys.stdin.read()
    time.sleep(0.2)  # the last connections' threads close
    with lock:
        out({**counts, "fds_ready": fds_ready, "fds_end": fd_count()})
    os._exit(0)  # the acceptor thread blocks in accept


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = args.pop(0)
    if mode == "hold":
        hold(args[0], int(args[1]), int(args[2]), args[3:])
    elif mode == "churn":
        churn(args[0], int(args[1]), float(args[2]), int(args[3]))
    elif mode == "churn-server":
        churn_server(int(args[0]), int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    return 0


# -- the stack side -----------------------------------------------------------------------
def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _ns_setup(ns: str, n: int) -> list[str]:
    """A wide local port range in the client's namespace, and (past PORTS_PER_ADDR
    connections) more source addresses on its side of the TAP: their list."""
    await trio.run_process(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                            f"net.ipv4.ip_local_port_range={PORT_RANGE}"])
    # the churn client's TIME_WAIT ports (it closes first) come back after 1 s
    await trio.run_process(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                            "net.ipv4.tcp_tw_reuse=1"])
    extra = (n - 1) // PORTS_PER_ADDR
    sources = []
    for i in range(extra):
        addr = f"198.18.1.{10 + i}"
        await trio.run_process(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "tap0"])
        sources.append(addr)
    return ["198.18.1.1", *sources] if sources else []


async def stack_conns10k(p: Params) -> dict[str, Any]:
    """The kernel opens ``scale_conns`` connections to an in-stack listener (files
    mounted) and holds them; this process's VmRSS once all are accepted."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    async with wl.tap_stack(p, files=True) as (st, ns, _):
        sources = await _ns_setup(ns, p.scale_conns)
        ls = st.tcp.socket()
        ls.bind((wl.SIP, SCALE_PORT))
        ls.listen(1024)
        conns: list[Any] = []
        gc.collect()
        await trio.sleep(0.2)
        base = wl.rss_mb()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wl.hold_accepted, ls, conns)
            c0, t0 = wl.cpu_s(), trio.current_time()
            async with wl.spawn("bench.scale_bench", "hold", wl.SIP, SCALE_PORT,
                                p.scale_conns, *sources, ns=ns) as h:
                ready = await h.ready(timeout=60 + p.scale_conns * 0.02)
                with trio.move_on_after(30):
                    while len(conns) < p.scale_conns:
                        await trio.sleep(0.02)
                setup = trio.current_time() - t0
                if len(conns) < p.scale_conns:
                    raise RuntimeError(f"only {len(conns)} of {p.scale_conns} accepted")
                cpu = wl.per_unit(wl.cpu_s() - c0, len(conns), wl.PER_K)
                await trio.sleep(0.5)
                gc.collect()
                rss = wl.rss_mb()
                n = len(conns)
                table = len(st.tcp.conns)
                await h.close_stdin()
            nursery.cancel_scope.cancel()
        for c in conns:
            c.abort()
        ls.close()
    per_conn = (rss - base) * 1024 * 1024 / n
    return {"metrics": {"mb": [rss], "cpu": [cpu], "per_conn": [per_conn],
                        "setup_s": [setup]},
            "cpu_unit": wl.CPU_CONN,
            "note": f"{n} connections held ({table} in the TCP table), files mounted; "
                    f"{rss - base:.1f} MB over the idle stack ({per_conn / 1024:.1f} KB "
                    f"per connection); set up in {setup:.1f} s (client "
                    f"{float(ready['seconds']):.1f} s); CPU: setting them up"}


async def _echo_1k(conn: Any, size: int) -> None:
    """Read ``size`` bytes, send them back, close at the client's EOF."""
    try:
        got = bytearray()
        while len(got) < size:
            d = await conn.recv(65536)
            if not d:
                break
            got += d
        if got:
            await conn.send(bytes(got))
        while await conn.recv(65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


async def _churn_clients(p: Params, ns: str, sample: Callable[[float], None]
                         ) -> tuple[list[dict[str, Any]], float]:
    """CHURN_WORKERS kernel churn clients in ``ns`` against the stack's CHURN_PORT for
    ``churn_seconds``, ``sample(t0)`` called every second while every client runs (their
    pipes are open fds of this process too); (the clients' results, CPU seconds used)."""
    from bench import workloads as wl

    results: list[dict[str, Any]] = []

    async def sampler(t0: float) -> None:
        while trio.current_time() - t0 <= p.churn_seconds - 0.5:
            sample(t0)
            await trio.sleep(1.0)

    async def client() -> None:
        async with wl.spawn("bench.scale_bench", "churn", wl.SIP, CHURN_PORT,
                            p.churn_seconds, CHURN_SIZE, ns=ns) as cl:
            results.append(await cl.line(timeout=p.churn_seconds + 60))

    async with trio.open_nursery() as nursery:
        gc.collect()
        t0, c0 = trio.current_time(), wl.cpu_s()
        nursery.start_soon(sampler, t0)
        async with trio.open_nursery() as clients:
            for _ in range(CHURN_WORKERS):
                clients.start_soon(client)
        used = wl.cpu_s() - c0
        nursery.cancel_scope.cancel()
    return results, used


def _churn_rate(results: list[dict[str, Any]]) -> tuple[int, float]:
    """(connections completed, connections/s over the longest client's time)."""
    count = sum(int(r["count"]) for r in results)
    return count, count / max(float(r["seconds"]) for r in results)


def _at_warmup(p: Params, samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The first sample at CHURN_WARMUP (or a sixth of a shorter soak)."""
    at = min(CHURN_WARMUP, p.churn_seconds / 6)
    return next((s for s in samples if s[0] >= at), samples[0])


async def stack_churn(p: Params) -> dict[str, Any]:
    """CHURN_WORKERS kernel clients churn connections to an in-stack echo server for
    ``churn_seconds``; RSS, fds and the TCP table sampled every second."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    async with wl.tap_stack(p, files=True) as (st, ns, _):
        await _ns_setup(ns, 1)
        tcp = st.tcp
        ls = tcp.socket()
        ls.bind((wl.SIP, CHURN_PORT))
        ls.listen(1024)
        #: (s since start, RSS MB, open fds, live TCP connections, TIME_WAIT records)
        samples: list[tuple[float, float, int, int, int]] = []
        accepted = [0]

        def sample(t0: float) -> None:
            samples.append((trio.current_time() - t0, wl.rss_mb(), fd_count(),
                            len(tcp.conns) - tcp.tw_count, tcp.tw_count))

        async def server(nursery: trio.Nursery) -> None:
            while True:
                conn, _ = await ls.accept()
                accepted[0] += 1
                nursery.start_soon(_echo_1k, conn, CHURN_SIZE)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server, nursery)
            results, used = await _churn_clients(p, ns, sample)
            nursery.cancel_scope.cancel()
        ls.close()
    count, rate = _churn_rate(results)
    mid, end = _at_warmup(p, samples), samples[-1]
    grow = (end[1] - mid[1]) / mid[1]
    fd_drift = end[2] - mid[2]
    flat = grow <= CHURN_RSS_GROWTH and abs(fd_drift) <= CHURN_FD_TOLERANCE
    return {"metrics": {"rate": [rate], "cpu": [wl.per_unit(used, count, wl.PER_K)],
                        "rss_growth_pct": [100 * grow], "fd_drift": [float(fd_drift)]},
            "met": {"rate": "yes" if flat else "no"},
            "cpu_unit": wl.CPU_CONN,
            "samples": samples,
            "note": f"one {p.churn_seconds:g} s soak; {CHURN_WORKERS} kernel clients × "
                    f"(connect, {CHURN_SIZE} B each way, close), in-stack echo server, "
                    f"files mounted; RSS {mid[1]:.1f} MB at {mid[0]:.0f} s → {end[1]:.1f} "
                    f"MB at {end[0]:.0f} s ({100 * grow:+.1f} %), fds {mid[2]} → {end[2]}; "
                    f"TCP table at most {max(s[3] for s in samples)} live + "
                    f"{max(s[4] for s in samples)} TIME_WAIT (end: {end[3]} + {end[4]}); "
                    f"{count} connections, {accepted[0]} accepted"}


def _door_session(st: Any) -> Any:
    """The FUSE session serving the socket door (the stack's tree; it serves dev/crypto
    from a session of its own), found as tests/transport/test_conn_lifetime.py does."""
    from rmgr.fuse.session import FuseSession

    found = [o for o in gc.get_objects() if type(o) is FuseSession and o.root is st.tree]
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} FUSE sessions serve the stack's tree")
    return found[0]


def _socket_table(st: Any) -> int:
    """Entries in the socket door's table: open sockets of every kind, plus accepted
    connections not yet claimed through a handover slot."""
    table = st.sockets
    return sum(len(conns) for conns in table.conns.values()) + len(table.handover)


async def stack_churn_files(p: Params) -> dict[str, Any]:
    """churn against an echo server on rmgr.libsocket (a child process through the
    stack's files); RSS, fds, the socket table and the FUSE session's open handles and
    known inodes sampled every second."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    async with wl.tap_stack(p, files=True) as (st, ns, prefix):
        await _ns_setup(ns, 1)
        session = _door_session(st)
        tcp = st.tcp
        #: (s since start, RSS MB, open fds, socket-table entries, open FUSE handles,
        #: known inodes, live TCP connections)
        samples: list[tuple[float, float, int, int, int, int, int]] = []

        def sample(t0: float) -> None:
            samples.append((trio.current_time() - t0, wl.rss_mb(), fd_count(),
                            _socket_table(st), session.open_files,
                            len(session.known_inodes()), len(tcp.conns) - tcp.tw_count))

        async with wl.spawn("bench.scale_bench", "churn-server", CHURN_PORT, CHURN_SIZE,
                            lib_prefix=prefix) as srv:
            ready = await srv.ready()
            results, used = await _churn_clients(p, ns, sample)
            await srv.close_stdin()
            served = await srv.line(timeout=30)
        await trio.sleep(1.5)  # the session's sweep (1 s): the settled counts, for the note
        after = (_socket_table(st), session.open_files, len(session.known_inodes()))
    count, rate = _churn_rate(results)
    mid, end = _at_warmup(p, samples), samples[-1]
    grow = (end[1] - mid[1]) / mid[1]
    drift = {"fd": end[2] - mid[2], "table": end[3] - mid[3], "handles": end[4] - mid[4],
             "inodes": end[5] - mid[5]}
    flat = (grow <= CHURN_RSS_GROWTH and abs(drift["fd"]) <= CHURN_FD_TOLERANCE
            and all(abs(drift[k]) <= CHURN_INFLIGHT for k in ("table", "handles", "inodes")))
    return {"metrics": {"rate": [rate], "cpu": [wl.per_unit(used, count, wl.PER_K)],
                        "rss_growth_pct": [100 * grow],
                        **{f"{k}_drift": [float(v)] for k, v in drift.items()}},
            "met": {"rate": "yes" if flat else "no"},
            "cpu_unit": wl.CPU_CONN,
            "samples": samples,
            "note": f"one {p.churn_seconds:g} s soak; {CHURN_WORKERS} kernel clients × "
                    f"(connect, {CHURN_SIZE} B each way, close), echo server on "
                    f"rmgr.libsocket through the files (a thread per connection); RSS "
                    f"{mid[1]:.1f} MB at {mid[0]:.0f} s → {end[1]:.1f} MB at {end[0]:.0f} s "
                    f"({100 * grow:+.1f} %), fds {mid[2]} → {end[2]}, socket table "
                    f"{mid[3]} → {end[3]} (max {max(s[3] for s in samples)}), open FUSE "
                    f"handles {mid[4]} → {end[4]} (max {max(s[4] for s in samples)}), known "
                    f"inodes {mid[5]} → {end[5]} (max {max(s[5] for s in samples)}); after "
                    f"the soak: table {after[0]}, handles {after[1]}, inodes {after[2]}; "
                    f"TCP table at most {max(s[6] for s in samples)} live; {count} "
                    f"connections, {served['accepted']} accepted, {served['errors']} server "
                    f"errors; server fds {ready.get('fds')} → {served['fds_end']}"}


if __name__ == "__main__":
    sys.exit(main())
