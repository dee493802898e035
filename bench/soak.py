"""Soak: mixed traffic against a real io-pkt for a chosen time, printing RSS and open
sockets over time (not run in CI).

    sudo .venv/bin/python -m bench.soak --minutes 10 [--interval 30]

It makes its own network namespace (the TAP's kernel side, 10.9.0.1; the stack is
10.9.0.2), starts ``io-pkt -d tap`` at a temporary prefix, and runs at once:

* TCP: a kernel client sends 1 MB to a stack server (through the socket files) over and
  over, each transfer checked with sha256; a new connection each time;
* UDP: a kernel client echoes datagrams off a stack UDP echo server;
* ping from the kernel side, 5 per second;
* socket churn: open/close 50 sockets per second through the files;
* a small SYN/UDP/ARP burst from nspeer every 10 s.

Every ``--interval`` seconds one line: elapsed, RSS (kB), sockets (text door entries),
transfers done, ping loss, UDP echoes. The namespace, the process and the mount are
removed on every exit path. Exit status 1 if a transfer was corrupted or the stack died.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NSPEER = os.path.join(REPO, "tests", "reliability", "nspeer.py")
STACK_IP, KERNEL_IP = "10.9.0.2", "10.9.0.1"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, timeout=60)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, seconds: float, interval: float) -> None:
        self.seconds = seconds
        self.interval = interval
        self.ns = f"iopkt-soak-{uuid.uuid4().hex[:6]}"
        self.tmp = tempfile.mkdtemp(prefix="iopkt-soak-")
        self.prefix = os.path.join(self.tmp, "s")
        self.sock = f"{self.prefix}/dev/socket"
        self.proc: subprocess.Popen[str] | None = None
        self.stop = threading.Event()
        self.transfers = 0
        self.bytes = 0
        self.udp_echoes = 0
        self.churned = 0
        self.errors: list[str] = []
        self.env = dict(os.environ, PYTHONPATH=REPO, SOCK=self.prefix)

    # -- setup / teardown --------------------------------------------------------------
    def tool(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "stack.main", *args], cwd=REPO, env=self.env,
                           capture_output=True, text=True, timeout=30)
        if r.returncode:
            raise RuntimeError(f"io-pkt {' '.join(args)}: {r.stderr}")
        return r.stdout

    def start(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        self.proc = subprocess.Popen([sys.executable, "-m", "stack.main", "-d", "tap",
                                      f"name=tap0,netns={self.ns}", "-p", "tcpip",
                                      f"prefix={self.prefix}"], cwd=REPO, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(f"{self.sock}/config/status"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("io-pkt did not start: " + (self.proc.stderr.read() if self.proc.stderr else ""))
            time.sleep(0.05)
        self.tool("ifconfig", "tap0", f"{STACK_IP}/24", "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{KERNEL_IP}/24", "dev", "tap0")
        sh("ip", "-n", self.ns, "link", "set", "tap0", "up")

    def cleanup(self) -> None:
        self.stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", self.sock], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- workloads -----------------------------------------------------------------------
    def nsexec(self, *cmd: str, **kw: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **kw)  # type: ignore[call-overload,no-any-return]

    def tcp_loop(self) -> None:
        from rmgr import libsocket

        libsocket.setsockprefix(self.prefix)
        ls = libsocket.socket()
        ls.setsockopt(libsocket.SOL_SOCKET, 2, 1)  # SO_REUSEADDR
        ls.bind(("0.0.0.0", 5001))
        ls.listen(8)
        ls.settimeout(30)
        client = ("import hashlib,socket,sys\nd=bytes(range(256))*4096\n"
                  f"c=socket.create_connection(('{STACK_IP}',5001),timeout=30)\n"
                  "c.sendall(d);c.shutdown(socket.SHUT_WR);c.recv(1)\n"
                  "print(hashlib.sha256(d).hexdigest())\n")
        while not self.stop.is_set():
            p = self.nsexec(sys.executable, "-c", client, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
            try:
                c, _ = ls.accept()
                c.settimeout(30)
                h = hashlib.sha256()
                n = 0
                while True:
                    d = c.recv(65536)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
                c.close()
                out, err = p.communicate(timeout=30)
                if out.decode().strip() != h.hexdigest():
                    self.errors.append(f"transfer {self.transfers}: digest mismatch ({n} bytes)")
                self.transfers += 1
                self.bytes += n
            except Exception as e:  # counted, reported at the end
                self.errors.append(f"tcp: {e!r}")
                with contextlib.suppress(Exception):
                    p.kill()
                    p.communicate()
                time.sleep(1)
        ls.close()

    def udp_loop(self) -> None:
        from rmgr import libsocket

        libsocket.setsockprefix(self.prefix)
        s = libsocket.socket(libsocket.AF_INET, libsocket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 7000))
        s.settimeout(0.5)
        client = ("import socket,time,sys\nc=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  "c.settimeout(1)\nn=0\nend=time.time()+float(sys.argv[1])\n"
                  "while time.time()<end:\n"
                  f"  c.sendto(b'x'*200,('{STACK_IP}',7000))\n"
                  "  try: c.recv(300); n+=1\n  except OSError: pass\n  time.sleep(0.01)\n"
                  "print(n)\n")
        p = self.nsexec(sys.executable, "-c", client, str(self.seconds),
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        while not self.stop.is_set():
            try:
                data, addr = s.recvfrom(2048)
                s.sendto(data, addr)
                self.udp_echoes += 1
            except OSError:
                continue
        s.close()
        with contextlib.suppress(Exception):
            p.kill()
            p.communicate(timeout=5)

    def churn_loop(self) -> None:
        while not self.stop.is_set():
            fds = []
            for i in range(50):
                with contextlib.suppress(OSError):
                    fds.append(os.open(f"{self.sock}/{'2/1/6' if i % 2 else '2/2/17'}", os.O_RDWR))
            for fd in fds:
                os.close(fd)
            self.churned += len(fds)
            time.sleep(1)

    def burst_loop(self) -> None:
        mac = ""
        for line in open(f"{self.sock}/config/interfaces").read().split("tap0:", 1)[1].splitlines():
            if line.strip().startswith("mac "):
                mac = line.split()[1]
                break
        i = 0
        while not self.stop.wait(10):
            cmd = [("synflood", "2000", mac, STACK_IP, "5001"), ("udpflood", "2000", mac, STACK_IP, "7001"),
                   ("arpflood", "2000", mac)][i % 3]
            i += 1
            p = self.nsexec(sys.executable, NSPEER, *cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
            p.wait(60)

    def sockets(self) -> int:
        return sum(1 for d in ("tcp", "udp") for n in os.listdir(f"{self.sock}/{d}") if n.isdigit())

    # -- main ----------------------------------------------------------------------------
    def run(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        ping = self.nsexec("ping", "-i", "0.2", "-W", "1", STACK_IP, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        threads = [threading.Thread(target=f, daemon=True) for f in
                   (self.tcp_loop, self.udp_loop, self.churn_loop, self.burst_loop)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        print(f"{'elapsed':>8} {'rss_kB':>8} {'sockets':>7} {'xfers':>6} {'MB':>7} "
              f"{'udp_echo':>8} {'churned':>8} {'errors':>6}", flush=True)
        rows = []
        try:
            while True:
                now = time.monotonic() - t0
                if self.proc.poll() is not None:
                    self.errors.append(f"io-pkt died with {self.proc.returncode}")
                    break
                row = (now, rss_kb(pid), self.sockets(), self.transfers, self.bytes / 1e6,
                       self.udp_echoes, self.churned, len(self.errors))
                rows.append(row)
                print(f"{row[0]:8.0f} {row[1]:8d} {row[2]:7d} {row[3]:6d} {row[4]:7.1f} "
                      f"{row[5]:8d} {row[6]:8d} {row[7]:6d}", flush=True)
                if now >= self.seconds:
                    break
                time.sleep(min(self.interval, max(0.1, self.seconds - now)))
        finally:
            self.stop.set()
            ping.send_signal(signal.SIGINT)
            out, _ = ping.communicate(timeout=10)
            for t in threads:
                t.join(35)
        summary = [ln for ln in out.decode().splitlines() if "packet loss" in ln]
        print("ping:", summary[0] if summary else "?")
        rss = [r[1] for r in rows]
        print(f"RSS kB: start {rss[0]} min {min(rss)} max {max(rss)} end {rss[-1]}; "
              f"transfers {self.transfers} ({self.bytes / 1e6:.0f} MB, all sha256-checked); "
              f"UDP echoes {self.udp_echoes}; sockets churned {self.churned}")
        for e in self.errors[:20]:
            print("error:", e)
        return 1 if any("digest" in e or "died" in e for e in self.errors) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between report lines")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("soak needs root (network namespace, TAP, FUSE)", file=sys.stderr)
        return 2
    s = Soak(a.minutes * 60, a.interval)
    try:
        s.start()
        return s.run()
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(main())
