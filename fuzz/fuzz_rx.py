"""Coverage-guided fuzzing (atheris/libFuzzer) of the whole receive path.

Each input is decoded by ``fuzz.rxpath.frames_from_fuzz`` into one or more Ethernet
frames delivered to a running in-process stack (see fuzz/rxpath.py). A crash is any
exception escaping ``Interface.deliver``, the stack's tasks dying, or an exception
swallowed by an isolating ``except`` (timer callbacks, listeners, hooks).

Run (from the repository root)::

    .venv/bin/python -m fuzz.fuzz_rx fuzz/corpus/rx -max_total_time=600
    .venv/bin/python -m fuzz.fuzz_rx -runs=20000 fuzz/corpus/rx     # bounded
    .venv/bin/python -m fuzz.fuzz_rx CRASH_FILE                       # replay one input

New interesting inputs are written into the first corpus directory given; pass a scratch
copy (``cp -r fuzz/corpus/rx /tmp/rx``) to keep the repository's corpus small.

How it runs: libFuzzer needs the main thread (it installs signal handlers); the stack
runs under ``trio.run`` in a second thread, and each input is handed to it with
``trio.from_thread.run`` so it is processed exactly like a frame from a driver task.
"""

from __future__ import annotations

import sys
import threading

import atheris

with atheris.instrument_imports(include=["stack", "fuzz.rxpath"]):
    import stack.core  # noqa: F401
    import stack.inet  # noqa: F401
    import stack.l2.bridge  # noqa: F401
    import stack.l2.vlan  # noqa: F401
    import stack.transport  # noqa: F401
    from fuzz.rxpath import RxTarget, rx_target

import trio  # noqa: E402

_target: RxTarget | None = None
_token: trio.lowlevel.TrioToken | None = None


async def _one(data: bytes) -> None:
    t = _target
    assert t is not None
    t.feed_fuzz(data)
    await t.settle()
    t.check()
    t.drain_sockets()


def TestOneInput(data: bytes) -> None:  # noqa: N802 (libFuzzer's name)
    trio.from_thread.run(_one, data, trio_token=_token)


async def _serve(ready: threading.Event) -> None:
    global _target, _token
    async with rx_target() as t:
        _target = t
        _token = trio.lowlevel.current_trio_token()
        ready.set()
        await trio.sleep_forever()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    import logging

    logging.disable(logging.CRITICAL)
    ready = threading.Event()
    # libFuzzer wants the main thread (signal handlers): trio runs the stack in another
    threading.Thread(target=trio.run, args=(_serve, ready), daemon=True).start()
    if not ready.wait(30):
        raise SystemExit("the stack did not start")
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()  # libFuzzer exits the process when done


if __name__ == "__main__":
    main()
