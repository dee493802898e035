"""Hostile local input on the files of a running io-pkt, and permissions.

Each bad request is answered with an errno; the stack keeps serving. No TAP needed."""

from __future__ import annotations

import ast
import errno
import fcntl
import os
import pathlib
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from rmgr.libsocket import abi
from tests.conftest import HAVE_FUSE, REPO, io_pkt_env

pytestmark = [pytest.mark.skipif(not HAVE_FUSE, reason="needs root, /dev/fuse, fusermount3")]


def sock_path(sp: Any, rel: str) -> str:
    return os.path.join(sp.path, rel)


def count_sockets(sp: Any) -> int:
    """Every socket, bound or not, has a directory in the text door's tcp/ or udp/."""
    return sum(1 for d in ("tcp", "udp") for n in os.listdir(sock_path(sp, d)) if n.isdigit())


def alive(sp: Any) -> None:
    assert sp.proc.poll() is None
    with open(sock_path(sp, "config/status")) as f:
        assert "pid" in f.read()


def test_ioctls_unknown_and_wrong_sizes(stack_process: Any) -> None:
    sp = stack_process()
    fd = os.open(sock_path(sp, "2/2/17"), os.O_RDWR)
    try:
        bad = [
            abi._IOWR(abi.IOP_MAGIC, 200, 16),  # unknown number
            abi._IOW(ord("Z"), 1, 8),  # unknown type
            abi._IOW(abi.IOP_MAGIC, 1, abi.SOCKADDR.size + 8),  # BIND, wrong size
            abi._IOW(abi.IOP_MAGIC, 1, 4),  # BIND, too small
            abi._IOR(abi.IOP_MAGIC, 10, 64),  # NREAD, wrong size
            abi._IOC(0, abi.IOP_MAGIC, 3, 0),  # LISTEN without data
            0x5401,  # TCGETS
        ]
        for cmd in bad:
            size = (cmd >> abi._IOC_SIZESHIFT) & ((1 << 14) - 1)
            with pytest.raises(OSError) as e:
                fcntl.ioctl(fd, cmd, bytearray(max(size, 4)) if size else 0)
            assert e.value.errno in (errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                     errno.EFAULT), (hex(cmd), e.value)
        # garbage inside a well-sized request: a sockaddr of an unknown family
        junk = abi.SOCKADDR.pack(12345, 0, b"\xff" * 32)
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, abi.IOP_BIND, bytearray(junk))
        assert e.value.errno in (errno.EAFNOSUPPORT, errno.EINVAL)
    finally:
        os.close(fd)
    alive(sp)


CONTROL = ["interfaces", "routes", "arp", "sysctl", "modules", "bridges"]


@pytest.mark.parametrize("data", [b"\x00\xff\xfe garbage \x01", b"add", b"\n\n\n",
                                  "ünïcödé ☃ ifconfig".encode(), b"A" * 5000,
                                  b"__import__('os').system('touch /tmp/iopkt-pwned')"],
                         ids=["binary", "truncated", "newlines", "unicode", "long", "python"])
def test_garbage_writes_to_control_files(stack_process: Any, data: bytes) -> None:
    sp = stack_process()
    for name in CONTROL:
        path = sock_path(sp, f"config/{name}")
        if not os.path.exists(path):
            continue
        fd = os.open(path, os.O_RDWR)
        try:
            # refused with an errno, and the reply names it: "error: EINVAL: why"
            with pytest.raises(OSError) as e:
                os.write(fd, data)
            assert e.value.errno in (errno.EINVAL, errno.ENXIO), (name, e.value)
            reply = os.read(fd, 65536)
            assert reply.startswith(f"error: {errno.errorcode[e.value.errno]}: ".encode()), \
                (name, reply)
            assert reply.endswith(b"\n") and reply.count(b"\n") == 1, (name, reply)
        finally:
            os.close(fd)
    assert not os.path.exists("/tmp/iopkt-pwned")
    alive(sp)


def test_huge_write_to_control_file(stack_process: Any) -> None:
    sp = stack_process()
    for name in ("sysctl", "interfaces", "modules"):
        fd = os.open(sock_path(sp, f"config/{name}"), os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:  # a command is at most 64 KiB
                os.write(fd, b"x" * (16 << 20))
            assert e.value.errno == errno.EFBIG, e.value
        finally:
            os.close(fd)
    # counted where the tools look (netstat/stats read config/stats/fuse)
    with open(sock_path(sp, "config/stats/fuse")) as f:
        fuse = dict(line.split() for line in f)
    assert int(fuse["write_too_big"]) == 3, fuse
    alive(sp)
    assert sp.proc.poll() is None


def test_thousands_of_sockets_and_status_reads_while_churning(stack_process: Any) -> None:
    sp = stack_process()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3000
    if soft < want + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 200), hard))
    fds: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for rel in ("config/sockets", "config/status", "config/stats/udp",
                        "config/interfaces"):
                try:
                    with open(sock_path(sp, rel)) as f:
                        f.read()
                except OSError as e:  # any errno is an answer; a crash would be ENOTCONN
                    if e.errno == errno.ENOTCONN:
                        errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        base = count_sockets(sp)
        for i in range(want):
            try:
                fds.append(os.open(sock_path(sp, "2/2/17" if i % 2 else "2/1/6"), os.O_RDWR))
            except OSError as e:
                assert e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS), e
                break
        n = len(fds)
        assert n >= 1000, n
        assert count_sockets(sp) - base == n
        for fd in fds[: n // 2]:
            os.close(fd)
        fds = fds[n // 2:]
    finally:
        for fd in fds:
            os.close(fd)
        stop.set()
        t.join(30)
    assert not errors
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and count_sockets(sp) > base:
        time.sleep(0.1)
    assert count_sockets(sp) == base
    alive(sp)


# ----------------------------------------------------------------------------- permissions
NOBODY = 65534
_AS_USER = r"""
import errno, os, sys, json
from rmgr import libsocket
from rmgr.libsocket import abi
sockdir = sys.argv[1]
res = {}
def attempt(name, fn):
    try:
        fn(); res[name] = "ok"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
libsocket.setsockprefix(os.path.dirname(os.path.dirname(sockdir)))
attempt("open_udp", lambda: os.close(os.open(sockdir + "/2/2/17", os.O_RDWR)))
def bind(port):
    s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
    try: s.bind(("0.0.0.0", port))
    finally: s.close()
attempt("bind_80", lambda: bind(80))
attempt("bind_8080", lambda: bind(8080))
attempt("open_raw", lambda: os.close(os.open(sockdir + "/2/3/1", os.O_RDWR)))
def write(rel, data):
    fd = os.open(sockdir + "/config/" + rel, os.O_WRONLY)
    try: os.write(fd, data)
    finally: os.close(fd)
attempt("sysctl_write", lambda: write("sysctl", b"net.inet.ip.ttl=5"))
attempt("modules_write", lambda: write("modules", b"load -d dummy"))
attempt("interfaces_write", lambda: write("interfaces", b"lo0 down"))
attempt("read_status", lambda: open(sockdir + "/config/status").read())
print(json.dumps(res))
"""


def run_as(uid: int, sockdir: str) -> dict[str, str]:
    import json

    def demote() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    r = subprocess.run([sys.executable, "-c", _AS_USER, sockdir], env=io_pkt_env(),
                       preexec_fn=demote, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_other_users_cannot_reach_a_root_stack(stack_process: Any) -> None:
    """Mounted by root without allow_other (the default; ``-p tcpip allow_other`` asks for
    it): other users get EACCES from the kernel for every file."""
    sp = stack_process()
    for d in (os.path.dirname(sp.prefix), sp.prefix, os.path.dirname(sp.path)):
        os.chmod(d, 0o755)

    def demote() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    for cmd in (f"cat {sp.path}/config/status", f"exec 3<>{sp.path}/2/2/17",
                f"echo net.inet.ip.ttl=5 > {sp.path}/config/sysctl", f"ls {sp.path}"):
        r = subprocess.run(["/bin/sh", "-c", cmd], preexec_fn=demote, capture_output=True,
                           text=True, timeout=20, cwd="/")
        assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r.stderr)
    alive(sp)


def test_user_stack_permissions(tmp_path: Any) -> None:
    """A stack run by an ordinary user (fusermount3 path): that user's sockets work, but
    ports below 1024, raw sockets and configuration writes are refused."""
    if not os.path.exists("/usr/bin/fusermount3") or not os.stat("/usr/bin/fusermount3").st_mode & 0o4000:
        pytest.skip("fusermount3 is not setuid: ordinary users cannot mount")
    if (os.stat("/dev/fuse").st_mode & 0o006) != 0o006:
        pytest.skip("/dev/fuse is not open to ordinary users on this machine (mode 0600)")
    if not os.access(sys.executable, os.X_OK) or any(
            (os.stat(p).st_mode & 0o001) == 0 for p in ("/root",) if sys.executable.startswith("/root")):
        pytest.skip("the Python interpreter is not reachable by ordinary users")
    base = pathlib.Path(tempfile_dir(tmp_path))
    prefix = str(base / "u")
    os.makedirs(prefix)
    for p in (base, pathlib.Path(prefix)):
        os.chown(p, NOBODY, NOBODY)

    def demote() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    env = io_pkt_env(HOME="/tmp")
    proc = subprocess.Popen([sys.executable, "-m", "stack.main", "-p", "tcpip", f"prefix={prefix}"],
                            cwd=REPO, env=env, preexec_fn=demote, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sockdir = f"{prefix}/dev/socket"
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(f"{sockdir}/config/status"):
            if proc.poll() is not None:
                pytest.skip(f"io-pkt as an ordinary user did not start: {proc.stderr.read()[-500:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError("user stack not ready")
            time.sleep(0.05)
        res = run_as(NOBODY, sockdir)
        assert res["open_udp"] == "ok" and res["bind_8080"] == "ok", res
        assert res["bind_80"] == "EACCES", res
        assert res["open_raw"] in ("EPERM", "EACCES"), res
        for k in ("sysctl_write", "modules_write", "interfaces_write"):
            assert res[k] in ("EPERM", "EACCES"), (k, res)
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        subprocess.run(["fusermount3", "-u", "-z", sockdir], capture_output=True)


def tempfile_dir(tmp_path: Any) -> str:
    """A directory every user can traverse (pytest's tmp_path is 0700 under /tmp)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="iopkt-user-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


NOT_A_MODULE = "not a module file (expected a path to devnp-NAME.py or lsm-NAME.py)"


def module_files(d: str) -> dict[str, str]:
    """A world-writable module file and a module that is not a .py file, in ``d``
    (0755); each would leave ``<file>.ran`` if it were ever executed."""
    body = "__import__('pathlib').Path(__file__ + '.ran').touch()\n"
    out = {}
    for key, name, mode in (("ww", "devnp-ww.py", 0o666), ("txt", "devnp-txt.txt", 0o644)):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(body)
        os.chmod(path, mode)
        out[key] = path
    return out


def test_module_names_and_paths_validated(stack_process: Any, tmp_path: Any) -> None:
    """Bad specs through ``io-pkt mount`` (a running stack): each refused with its reason
    in one ``Unable to load/init`` message; nothing is executed; the stack lives. The
    mount tool makes a relative path absolute, so the message shows that path."""
    d = tempfile_dir(tmp_path)
    files = module_files(d)
    sp = stack_process()
    cases = [
        (("-p", "../../../etc/passwd"), f"Unable to load/init /etc/passwd: {NOT_A_MODULE}"),
        (("-d", "devnp-../x"), f"Unable to load/init {REPO}/devnp-../x: {NOT_A_MODULE}"),
        (("-d", files["ww"]), f"Unable to load/init {files['ww']}: {files['ww']} is "
                              f"world-writable: refusing to run it (chmod o-w {files['ww']})"),
        (("-d", files["txt"]), f"Unable to load/init {files['txt']}: {NOT_A_MODULE}"),
        (("-d", "/nonexistent/devnp-x.py"),
         "Unable to load/init /nonexistent/devnp-x.py: no such file /nonexistent/devnp-x.py"),
        (("-p", "lsm-a;rm"), "Unable to load/init lsm-a;rm: bad module name 'lsm-a;rm'"),
        # the control file splits words: "-rf" is taken as the module's options
        (("-p", "lsm-a;rm -rf"), "Unable to load/init lsm-a;rm: bad option '-rf'"),
        (("-d", "DEVNP-TAP"), "Unable to load/init DEVNP-TAP: bad module name 'devnp-DEVNP-TAP'"),
        (("-p", "lsm-"), "Unable to load/init lsm-: bad module name 'lsm-'"),
    ]
    for args, want in cases:
        r = sp.tool("mount", "-T", "io-pkt", *args, check=False)
        assert r.returncode != 0, (args, r.stdout)
        assert r.stderr.splitlines()[0].startswith(f"mount: {want}"), (args, r.stderr)
        alive(sp)
    # without -d/-p a path must name a devnp-/lsm- file to say what it is
    r = sp.tool("mount", "-T", "io-pkt", "../../../etc/passwd", check=False)
    assert r.returncode != 0 and "say -d or -p, or use a devnp-/lsm- name" in r.stderr, r.stderr
    assert not [f for f in os.listdir(d) if f.endswith(".ran")]
    alive(sp)


def test_bad_modules_on_the_command_line_one_line_each(stack_process: Any, tmp_path: Any) -> None:
    """The same specs given at start: one ``Unable to load/init NAME: reason`` line each
    (the module's name, or the path as typed when it names no module file), nothing
    executed, and the stack starts without them."""
    d = tempfile_dir(tmp_path)
    files = module_files(d)
    sp = stack_process("-d", "../../../etc/passwd", "-p", "devnp-../x", "-d", files["ww"],
                       "-d", files["txt"], "-p", "missing")
    alive(sp)
    _, err = sp.stop()
    lines = [ln.split(": ", 1)[1] for ln in err.splitlines() if "Unable to load/init" in ln]
    assert lines == [
        f"Unable to load/init ../../../etc/passwd: {NOT_A_MODULE}",
        f"Unable to load/init devnp-ww: {files['ww']} is world-writable: refusing to run it "
        f"(chmod o-w {files['ww']})",
        f"Unable to load/init {files['txt']}: {NOT_A_MODULE}",
        f"Unable to load/init devnp-../x: {NOT_A_MODULE}",
        "Unable to load/init lsm-missing: module not found (searched modules/, "
        "IO_PKT_MODULE_PATH, entry points 'io_pkt.modules')",
    ], err
    assert not [f for f in os.listdir(d) if f.endswith(".ran")]


#: reviewed uses: pf compiles its *parsed* rules (ints and repr() of interface names) into
#: a matcher function; ``python -m rmgr.libsocket -c CODE`` runs the user's own program
#: (as ``python -c``). Neither evaluates configuration text.
EXEC_ALLOWED = {"stack/pf/rules.py", "rmgr/libsocket/__main__.py"}


def test_no_eval_or_exec_of_configuration() -> None:
    """No eval()/exec()/compile() of text anywhere in the stack, the resource manager or
    the modules (configuration is parsed, never evaluated), outside the reviewed uses."""
    bad = []
    for top in ("stack", "rmgr", "modules"):
        for path in pathlib.Path(REPO, top).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                        node.func.id in ("eval", "exec", "compile") and \
                        str(path.relative_to(REPO)) not in EXEC_ALLOWED:
                    bad.append(f"{path}:{node.lineno} {node.func.id}")
    assert not bad, bad
