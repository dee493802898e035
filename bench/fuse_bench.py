"""FUSE session throughput: small writes/s, small reads/s and 128 KiB write MB/s through
one session, beside the same client loop on a kernel pipe.

    python -m bench.fuse_bench [--seconds 2] [--markdown] [--profile FILE]

The session runs in this process on trio (as in the stack); the client is a separate
Python process doing plain os.read/os.write in a loop, so each 64-byte call is one FUSE
request. Needs root (or a user allowed to run fusermount3) and /dev/fuse.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench.common import PY, REPO, Row, machine, table

SMALL = 64
BIG = 128 * 1024


def client(mode: str, path: str, seconds: float) -> None:
    """The measuring loop (run in a child process). Prints "<ops> <bytes> <elapsed>"."""
    if path == "-":
        fd = 0 if mode == "r64" else 1
    else:
        fd = os.open(path, os.O_RDWR)
    size = BIG if mode == "w128k" else SMALL
    buf = b"x" * size
    ops = nbytes = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    write, read, now = os.write, os.read, time.perf_counter
    while True:
        for _ in range(64):
            if mode == "r64":
                nbytes += len(read(fd, SMALL))
            else:
                nbytes += write(fd, buf)
        ops += 64
        if now() >= deadline:
            break
    elapsed = now() - t0
    print(ops, nbytes, elapsed, file=sys.stderr if path == "-" else sys.stdout, flush=True)


def _client_cmd(mode: str, path: str, seconds: float) -> list[str]:
    return [PY, "-m", "bench.fuse_bench", "--client", mode, path, str(seconds)]


def _parse(out: str) -> tuple[int, int, float]:
    ops, nbytes, elapsed = out.split()
    return int(ops), int(nbytes), float(elapsed)


def client_run(mode: str, path: str, seconds: float) -> tuple[int, int, float]:
    """The client loop in its own process on PATH (a FUSE file): (ops, bytes, seconds)."""
    res = subprocess.run(_client_cmd(mode, path, seconds), capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, check=True)
    return _parse(res.stdout)


def pipe_run(mode: str, seconds: float) -> tuple[int, int, float]:
    """The same client against a pipe whose other end is another process."""
    env = dict(os.environ, PYTHONPATH=REPO)
    if mode == "r64":
        feeder = subprocess.Popen(["cat", "/dev/zero"], stdout=subprocess.PIPE)
        res = subprocess.run(_client_cmd(mode, "-", seconds), stdin=feeder.stdout, env=env,
                             capture_output=True, text=True, cwd=REPO, check=True)
        feeder.kill()
        feeder.wait()
    else:
        drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        res = subprocess.run(_client_cmd(mode, "-", seconds), stdout=drain.stdin, env=env,
                             stderr=subprocess.PIPE, text=True, cwd=REPO, check=True)
        drain.stdin.close()  # type: ignore[union-attr]
        drain.wait()
    return _parse(res.stderr)


def fuse_runs(modes: list[str], seconds: float, profile: str | None,
              cpu: dict[str, float] | None = None) -> dict[str, tuple[int, int, float]]:
    """One session in this process, the client loop run once per mode against it; with
    ``cpu``, the CPU seconds (user + sys) this process spent during each mode's client run
    go there."""
    import resource

    import trio

    from rmgr.fuse.session import serve_mount
    from rmgr.nodes import Directory, Handle, HandleFile, IoRequest

    class Sink(Handle):
        chunk = b"r" * SMALL

        async def read(self, size: int, req: IoRequest) -> bytes:
            return self.chunk

        async def write(self, data: memoryview, req: IoRequest) -> int:
            return len(data)

    results: dict[str, tuple[int, int, float]] = {}
    mnt = tempfile.mkdtemp(prefix="iopkt-fbench-")
    root = Directory({"sink": HandleFile(lambda req: Sink())})

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_mount, root, os.path.join(mnt, "m"))
            env = dict(os.environ, PYTHONPATH=REPO)
            for mode in modes:
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                proc = await trio.run_process(_client_cmd(mode, os.path.join(mnt, "m", "sink"),
                                                          seconds),
                                              capture_stdout=True, env=env, cwd=REPO)
                ru1 = resource.getrusage(resource.RUSAGE_SELF)
                results[mode] = _parse(proc.stdout.decode())
                if cpu is not None:
                    cpu[mode] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            nursery.cancel_scope.cancel()

    try:
        if profile:
            import cProfile

            cProfile.runctx("trio.run(main)", globals(), {"trio": trio, "main": main},
                            filename=profile)
        else:
            trio.run(main)
    finally:
        os.rmdir(mnt)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the session into FILE")
    ap.add_argument("--client", nargs=3, metavar=("MODE", "PATH", "SECONDS"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        client(args.client[0], args.client[1], float(args.client[2]))
        return 0
    modes = ["w64", "r64", "w128k"]
    fuse = fuse_runs(modes, args.seconds, args.profile)
    pipe = {m: pipe_run(m, args.seconds) for m in modes}

    def rate(r: tuple[int, int, float]) -> float:
        return r[0] / r[2]

    def mbps(r: tuple[int, int, float]) -> float:
        return r[1] / r[2] / 1e6

    rows = [
        Row("64-byte writes", "calls/s", rate(fuse["w64"]), rate(pipe["w64"]), ">= 18000",
            "one FUSE WRITE each; kernel column: a pipe"),
        Row("64-byte reads", "calls/s", rate(fuse["r64"]), rate(pipe["r64"]), ">= 18000",
            "one FUSE READ each; kernel column: a pipe"),
        Row("128 KiB writes", "MB/s", mbps(fuse["w128k"]), mbps(pipe["w128k"]), ">= 1000",
            "one FUSE WRITE each; kernel column: a pipe"),
    ]
    print(machine())
    print(table(rows, markdown=args.markdown), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
