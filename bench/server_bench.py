"""The rows a server on this stack feels (issue 21), each a workload of ``python -m bench``:

* ``udp_files``: UDP datagrams/s into a sink through the files (``peer --lib udp-count``:
  rmgr.libsocket's message mode, blocking ``recvmmsg(64, 2048)``: one FUSE read returns
  the first datagram and those already queued) from the kernel's ``udp-blast`` (64-byte
  payloads), beside the in-stack UDP row; kernel column: the ``udp`` row's (Python sink
  in ns b over veth). ``udp-count-plain`` (one ``recv`` per datagram) is the plain-API
  variant of the peer, not a row.
* ``udp_rr``: UDP request/response through the files: a DNS-like server on
  rmgr.libsocket (``peer --lib udp-server``: ``recvmmsg`` the queued requests in one
  read, ``sendmmsg`` their answers, the same bytes, in one write) answering 64-byte
  requests from a kernel client (``peer udp-rr``, RR_WINDOW requests in flight);
  answers/s. Kernel column: the same server (stdlib: recvfrom/sendto) in ns b, the
  client in ns a. ``udp-server-plain`` (recvfrom/sendto: one read and one write per
  request in message mode) is the plain-API variant, not a row.
* ``udp_rr_stack``: the same client against the same server written on the stack's own
  UDP API (a trio task in the stack's process): the in-stack figure ``udp_rr`` is
  measured against (the files' cost alone). Kernel column: the udp_rr one.
* ``idle``: CPU of a stack (with its files mounted) holding ``conns`` idle TCP
  connections from the kernel, as % of one core over ``idle_seconds`` (10 s).
* ``load``: 1-byte echo p99 through rmgr.libsocket (the echo row) while a TCP bulk
  transfer (kernel → in-stack sink) runs on the same stack, as a multiple of the idle
  p99 measured just before; kernel column: the same on veth (echo and bulk, ns a → b).

The stack runs in the worker process (bench.workloads.tap_stack); the CPU column is that
process's user + sys time over the timed part (bench.workloads.cpu_s).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import trio

from bench.common import median, percentile, veth_pair

if TYPE_CHECKING:  # bench.workloads imports this module to list its workloads: its
    from bench.workloads import Params  # names are imported in each function (wl)

RR_WINDOW = 16  # requests the udp_rr client keeps in flight
LOAD_RAMP = 0.3  # s of bulk transfer before the loaded echo starts


# -- UDP datagrams/s through the files ------------------------------------------------
async def stack_udp_files(p: Params) -> dict[str, Any]:
    """kernel udp-blast (TAP's namespace) → a sink using rmgr.libsocket."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    out, cpu = [], []
    async with wl.tap_stack(p, files=True) as (_st, ns, prefix):
        for i in range(p.runs):
            port = 5901 + i
            async with wl.peer("udp-count", port, p.seconds, lib_prefix=prefix) as snk:
                await snk.ready()
                c0 = wl.cpu_s()
                # the sender outlasts the sink's window (its blocking recv needs traffic)
                async with wl.peer("udp-blast", wl.SIP, port, p.seconds + 1.5,
                                   wl.UDP_SIZE, ns=ns) as bl:
                    res = await snk.line(timeout=p.seconds + 30)
                    c1 = wl.cpu_s()
                    await bl.line(timeout=p.seconds + 30)
            out.append(res["count"] / float(res["seconds"]))
            cpu.append(wl.per_unit(c1 - c0, res["count"], wl.PER_K))
    return {"metrics": {"rate": out, "cpu": cpu}, "cpu_unit": wl.CPU_DGRAM,
            "note": f"{wl.UDP_SIZE}-byte payloads; rmgr.libsocket sink (blocking recvmmsg, message mode); "
                    "kernel column: the UDP row's (a Python sink over veth)"}


# -- UDP request/response through the files -------------------------------------------
async def _rr_run(p: Params, port: int, host: str, client_ns: str, *,
                  server_ns: str | None = None,
                  lib_prefix: str | None = None) -> dict[str, Any]:
    from bench import workloads as wl

    async with wl.peer("udp-server", port, ns=server_ns, lib_prefix=lib_prefix) as srv:
        await srv.ready()
        async with wl.peer("udp-rr", host, port, p.seconds, wl.UDP_SIZE, RR_WINDOW,
                           ns=client_ns) as cl:
            res = await cl.line(timeout=p.seconds + 30)
    if not res["count"]:
        raise RuntimeError(f"no UDP answers: {res}")
    return res


def _rr_result(runs: list[dict[str, Any]], cpu: list[float] | None = None,
               server: str = "") -> dict[str, Any]:
    """The row of ``runs``: answers/s, the round trips and losses in the note, and (for
    the stack's side) the CPU per 1,000 requests and which server answered."""
    from bench import workloads as wl

    out: dict[str, Any] = {
        "metrics": {"rate": [r["count"] / float(r["seconds"]) for r in runs]},
        "note": f"{wl.UDP_SIZE}-byte requests, {RR_WINDOW} in flight; round trip p50 "
                f"{median([r['rtt_p50'] for r in runs]):,.0f} µs, p99 "
                f"{median([r['rtt_p99'] for r in runs]):,.0f} µs; "
                f"{sum(r['lost'] for r in runs)} lost"}
    if cpu is not None:
        out["metrics"]["cpu"] = cpu
        out["cpu_unit"] = wl.CPU_REQ
        out["note"] += f"; server: {server}"
    return out


async def stack_udp_rr(p: Params) -> dict[str, Any]:
    """A kernel client (TAP's namespace) ↔ a DNS-like server using rmgr.libsocket."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    runs, cpu = [], []
    async with wl.tap_stack(p, files=True) as (_st, ns, prefix):
        for i in range(p.runs):
            c0 = wl.cpu_s()
            res = await _rr_run(p, 5921 + i, wl.SIP, ns, lib_prefix=prefix)
            cpu.append(wl.per_unit(wl.cpu_s() - c0, res["count"], wl.PER_K))
            runs.append(res)
    return _rr_result(runs, cpu, "rmgr.libsocket (recvmmsg/sendmmsg, message mode)")


async def _stack_rr_server(u: Any) -> int:
    """The in-stack twin of ``peer udp-server``: take the requests queued (up to BATCH,
    as its recvmmsg), answer each with the same bytes, a run to one sender in one call
    (as its sendmmsg), then wait for more; an empty datagram ends it. Answers sent."""
    from bench.peer import BATCH

    count = 0
    while True:
        got = [await u.recvfrom(2048)]
        while len(got) < BATCH:
            try:
                got.append(u.recvfrom_nowait(2048))
            except BlockingIOError:
                break
        i = 0
        while i < len(got):
            data, addr = got[i]
            if not data:
                return count
            j = i + 1
            while j < len(got) and got[j][1] == addr and got[j][0]:
                j += 1
            sent = 0
            while sent < j - i:  # a short send: the rest again
                sent += u.sendmany_nowait([d for d, _ in got[i + sent:j]], addr)
            count += j - i
            i = j


async def stack_udp_rr_in_stack(p: Params) -> dict[str, Any]:
    """The udp_rr client ↔ the same server written on the stack's own UDP API (a trio
    task in the stack's process): what the files cost is udp_rr against this row."""
    from bench import workloads as wl

    wl.need_tap()
    runs, cpu = [], []
    async with wl.tap_stack(p) as (st, ns, _):
        for i in range(p.runs):
            u = st.udp.socket()
            u.bind((wl.SIP, 5931 + i))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stack_rr_server, u)
                c0 = wl.cpu_s()
                async with wl.peer("udp-rr", wl.SIP, 5931 + i, p.seconds, wl.UDP_SIZE,
                                   RR_WINDOW, ns=ns) as cl:
                    res = await cl.line(timeout=p.seconds + 30)
                c1 = wl.cpu_s()
                nursery.cancel_scope.cancel()  # the client's closing empty datagram may be lost
            u.close()
            if not res["count"]:
                raise RuntimeError(f"no UDP answers: {res}")
            cpu.append(wl.per_unit(c1 - c0, res["count"], wl.PER_K))
            runs.append(res)
    return _rr_result(runs, cpu, "an in-stack trio task (stack.udp)")


async def kernel_udp_rr(p: Params) -> dict[str, Any]:
    from bench import workloads as wl

    runs = []
    with veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            runs.append(await _rr_run(p, 5921 + i, wl.KB, a, server_ns=b))
    res = _rr_result(runs)
    res["note"] = res["note"].split("; ", 1)[1]
    return res


# -- idle CPU with N idle connections -------------------------------------------------
async def stack_idle(p: Params) -> dict[str, Any]:
    """The kernel opens ``conns`` connections to an in-stack listener and holds them;
    then, per run, the CPU this process uses over ``idle_seconds`` with no traffic."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    pct, cpu = [], []
    async with wl.tap_stack(p, files=True) as (st, ns, _):
        ls = st.tcp.socket()
        ls.bind((wl.SIP, 5941))
        ls.listen(1024)
        conns: list[Any] = []

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wl.hold_accepted, ls, conns)
            async with wl.peer("hold", wl.SIP, 5941, p.conns, ns=ns) as h:
                await h.ready(timeout=120)
                with trio.move_on_after(30):
                    while len(conns) < p.conns:
                        await trio.sleep(0.05)
                if len(conns) < p.conns:
                    raise RuntimeError(f"only {len(conns)} of {p.conns} connections accepted")
                gc.collect()
                await trio.sleep(1.0)  # delayed ACKs, busy polls and the like settle
                for _ in range(p.runs):
                    c0, t0 = wl.cpu_s(), trio.current_time()
                    await trio.sleep(p.idle_seconds)
                    used, dt = wl.cpu_s() - c0, trio.current_time() - t0
                    pct.append(100 * used / dt)
                    cpu.append(wl.per_unit(used, len(conns), wl.PER_K))
                n = len(conns)
                await h.close_stdin()
            nursery.cancel_scope.cancel()
        for c in conns:
            c.abort()
        ls.close()
    return {"metrics": {"pct": pct, "cpu": cpu},
            "cpu_unit": f"{wl.CPU_CONN} in {p.idle_seconds:g} s",
            "note": f"{n} connections held, files mounted; {p.idle_seconds:g} s per run"}


# -- latency under load ---------------------------------------------------------------
def _load_result(idle: list[list[float]], loaded: list[list[float]]) -> dict[str, Any]:
    i99 = [percentile(r, 99) for r in idle]
    l99 = [percentile(r, 99) for r in loaded]
    return {"metrics": {"x": [b / a for a, b in zip(i99, l99, strict=True)]},
            "note": f"{len(idle[0])} round trips per phase; p99 idle {median(i99):,.0f} → "
                    f"under load {median(l99):,.0f} µs, p50 "
                    f"{median([percentile(r, 50) for r in idle]):,.0f} → "
                    f"{median([percentile(r, 50) for r in loaded]):,.0f} µs (medians)"}


async def stack_load(p: Params) -> dict[str, Any]:
    """Per run: N round trips of the echo row (rmgr.libsocket client ↔ kernel echo
    server), then N more while the kernel sends a bulk TCP stream to an in-stack sink."""
    from bench import workloads as wl

    wl.need_tap()
    wl.need_files()
    idle, loaded, cpu, mbit = [], [], [], []
    async with wl.tap_stack(p, files=True) as (st, ns, prefix):
        ls = st.tcp.socket()
        ls.bind((wl.SIP, 5961))
        ls.listen(8)
        for i in range(p.runs):
            idle.append(await wl._echo_run(5971 + 2 * i, wl.KIP, p.echo_count,
                                           server_ns=ns, lib_prefix=prefix))
            got: list[int] = []

            async def sink(into: list[int]) -> None:
                into.append(await wl._instack_sink(ls))

            async with trio.open_nursery() as nursery:
                c0 = wl.cpu_s()
                async with wl.peer("source-stdin", wl.SIP, 5961, ns=ns) as src:
                    nursery.start_soon(sink, got)
                    await trio.sleep(LOAD_RAMP)
                    loaded.append(await wl._echo_run(5972 + 2 * i, wl.KIP, p.echo_count,
                                                     server_ns=ns, lib_prefix=prefix))
                    await src.close_stdin()
                    res = await src.line(timeout=60)
            cpu.append(wl.per_unit(wl.cpu_s() - c0, got[0], wl.PER_GB))
            mbit.append(res["bytes"] * 8 / res["seconds"] / 1e6)
        ls.close()
    out = _load_result(idle, loaded)
    out["metrics"]["cpu"] = cpu
    out["cpu_unit"] = wl.CPU_GB
    out["note"] += (f"; bulk kernel → in-stack sink {median(mbit):,.0f} Mbit/s; "
                    "CPU: per GB of the bulk, the echo beside it")
    return out


async def kernel_load(p: Params) -> dict[str, Any]:
    """The same on veth: echo client and bulk source in ns a, their servers in ns b."""
    from bench import workloads as wl

    idle, loaded = [], []
    with veth_pair(tag=p.tag) as (a, b):
        for i in range(p.runs):
            idle.append(await wl._echo_run(5971 + 2 * i, wl.KB, p.echo_count,
                                           server_ns=b, client_ns=a))
            async with wl.peer("sink", 5961 + i, ns=b) as snk:
                await snk.ready()
                async with wl.peer("source-stdin", wl.KB, 5961 + i, ns=a) as src:
                    await trio.sleep(LOAD_RAMP)
                    loaded.append(await wl._echo_run(5972 + 2 * i, wl.KB, p.echo_count,
                                                     server_ns=b, client_ns=a))
                    await src.close_stdin()
                    await src.line(timeout=60)
                await snk.line(timeout=60)
    res = _load_result(idle, loaded)
    del res["note"]
    return res
