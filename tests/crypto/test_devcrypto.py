"""/dev/crypto from C: known answers through NetBSD's cryptodev ioctls
(rmgr/include/io_pkt_crypto.h), on the software provider and on the offload engine,
and the kern.usercrypto / kern.cryptodevallowsoft sysctls."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
import trio

from stack.core import Stack
from stack.crypto import cryptodev
from tests.conftest import HAVE_FUSE, REPO, running_stack

HERE = os.path.dirname(os.path.abspath(__file__))
needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs root, /dev/fuse and fusermount3")


@pytest.fixture(scope="module")
def kat(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler")
    out = str(tmp_path_factory.mktemp("ckat") / "crypto_kat")
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-I", os.path.join(REPO, "rmgr", "include"),
                    "-o", out, os.path.join(HERE, "c", "crypto_kat.c")], check=True, timeout=60)
    return out


def test_abi_matches_python(kat: str) -> None:
    out = subprocess.run([kat, "--abi"], capture_output=True, text=True, check=True).stdout
    got = {w[0]: (int(w[1], 16), int(w[2])) for w in (line.split() for line in out.splitlines())}
    assert got == {
        "CIOCGSESSION": (cryptodev.CIOCGSESSION, cryptodev.SESSION_OP.size),
        "CIOCFSESSION": (cryptodev.CIOCFSESSION, 4),
        "CIOCCRYPT": (cryptodev.CIOCCRYPT, cryptodev.CRYPT_OP.size),
        "CIOCCRYPTAEAD": (cryptodev.CIOCCRYPTAEAD, cryptodev.CRYPT_AEAD.size),
    }


@pytest.fixture
async def mounted(tmp_path: object) -> AsyncIterator[tuple[Stack, str]]:
    if not HAVE_FUSE:
        pytest.skip("needs root, /dev/fuse and fusermount3")
    prefix = str(tmp_path) + "/p"
    async with running_stack(prefix=prefix, mount=True,
                             drivers=[("cryptosim", "latency=0.3,reorder")]) as st:
        yield st, f"{prefix}/dev/crypto"
    assert not os.path.exists(f"{prefix}/dev/crypto")  # the mountpoint file went with it


async def _kat(exe: str, dev: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process([exe, dev], capture_stdout=True, capture_stderr=True,
                                      check=False)


@needs_fuse
async def test_c_known_answers(kat: str, mounted: tuple[Stack, str]) -> None:
    st, dev = mounted
    assert await trio.to_thread.run_sync(os.path.isfile, dev)  # not on the FUSE thread
    sim = st.crypto.provider("cryptosim0")
    assert sim is not None
    p = await _kat(kat, dev)  # sessions land on the engine (highest priority)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode().split("\n")
    assert {"ok gcm-encrypt", "ok gcm-decrypt", "ok gcm-badtag", "ok gcm-free",
            "ok hmac-sha256-rfc4231-1", "ok hmac-sha256-rfc4231-2",
            "ok hmac-sha512-rfc4231-1", "ok aes-cbc", "ok aes-ctr"} <= set(out)
    assert sim.stats.ops >= 8
    c = st.crypto.counters
    assert c["dev_sessions"] >= 6 and c["dev_ops"] >= 9
    # the engine unloaded: the same through software
    inst = next(m for m in st.modules.loaded if m.name == "devnp-cryptosim")
    st.modules.unload(inst)
    while inst in st.modules.loaded:
        await trio.sleep(0.01)
    sw = st.crypto.provider("swcrypto")
    assert sw is not None
    before = sw.stats.ops
    p = await _kat(kat, dev)
    assert p.returncode == 0, p.stderr.decode()
    assert sw.stats.ops >= before + 8
    # kern.cryptodevallowsoft=0: no engine left, so no session
    st.sysctl.set("kern.cryptodevallowsoft", "0")
    p = await _kat(kat, dev)
    assert p.returncode == 1 and b"FAIL CIOCGSESSION (errno 22" in p.stderr
    assert c["dev_soft_refused"] >= 1
    st.sysctl.set("kern.cryptodevallowsoft", "1")
    # kern.usercrypto=0: the device does not open
    st.sysctl.set("kern.usercrypto", "0")
    p = await _kat(kat, dev)
    assert p.returncode == 1 and b"FAIL open (errno 6" in p.stderr
    st.sysctl.set("kern.usercrypto", "1")
    assert st.crypto.sessions == {}  # every session freed at close


@needs_fuse
async def test_bad_pointers_are_efault(mounted: tuple[Stack, str]) -> None:
    """A struct pointing nowhere fails with EFAULT; the stack keeps serving."""
    import errno
    import fcntl

    st, dev = mounted

    def call() -> int:
        fd = os.open(dev, os.O_RDWR)
        try:
            arg = bytearray(cryptodev.SESSION_OP.pack(29, 0, 0, 16, 0x10, 0, 0, 0))
            try:
                fcntl.ioctl(fd, cryptodev.CIOCGSESSION, arg)
            except OSError as exc:
                return exc.errno or 0
            return 0
        finally:
            os.close(fd)

    assert await trio.to_thread.run_sync(call) == errno.EFAULT
    assert st.crypto.counters["dev_bad_memory"] == 1
