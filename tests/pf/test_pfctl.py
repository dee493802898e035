"""pfctl end to end: a real io-pkt process (-p pf -p bpf), the tool, the kernel peer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import IO_PKT, REPO, io_pkt_env, needs_fuse, needs_tun

S_IP, K_IP = "10.77.1.2", "10.77.1.1"


def test_pfctl_n_checks_without_a_stack(tmp_path: Path) -> None:
    good = tmp_path / "good.conf"
    good.write_text("block all\npass out keep state\n")
    bad = tmp_path / "bad.conf"
    bad.write_text("block all\npass in proto tcp to port 99999\nfrob\n")
    env = io_pkt_env(SOCK=str(tmp_path / "none"))
    r = subprocess.run([*IO_PKT, "pfctl", "-nvf", str(good)], cwd=REPO, env=env, text=True,
                       capture_output=True)
    assert r.returncode == 0 and r.stdout == "block drop all\npass out all flags S/SA keep state\n"
    r = subprocess.run([*IO_PKT, "pfctl", "-n", "-f", str(bad)], cwd=REPO, env=env, text=True,
                       capture_output=True)
    assert r.returncode == 1
    assert f"{bad}:2: port 99999 out of range 0..65535" in r.stderr
    assert f"{bad}:3: syntax error: unknown keyword 'frob'" in r.stderr
    assert "pf rules not loaded" in r.stderr


@needs_fuse
@needs_tun
def test_pfctl_drives_a_running_stack(pf_stack_process, netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sp = pf_stack_process("-d", "tap", f"name=tap0,netns={netns}", "-p", "pf", "-p", "bpf")
    sp.tool("ifconfig", "tap0", f"{S_IP}/24", "up")
    netns.run("ip", "addr", "add", f"{K_IP}/24", "dev", "tap0")
    netns.run("ip", "link", "set", "tap0", "up")
    assert Path(sp.prefix, "dev", "pf", "ctl").exists()
    assert Path(sp.prefix, "dev", "bpf", "tap0").exists()

    def kping() -> bool:
        return netns.run("ping", "-n", "-c", "1", "-W", "1", S_IP, check=False).returncode == 0

    assert kping()
    conf = tmp_path / "pf.conf"
    conf.write_text(f"table <kernel> {{ {K_IP} }}\nblock all\npass out proto icmp keep state\n"
                    "block in quick from <kernel>\n")
    sp.tool("pfctl", "-f", str(conf))
    r = sp.tool("pfctl", "-e")
    assert "pf enabled" in r.stderr
    r = sp.tool("pfctl", "-e", check=False)
    assert "already enabled" in r.stderr
    assert not kping()
    # the stack pings out: allowed by the state
    r = sp.tool("ping", "-c", "1", K_IP, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    r = sp.tool("pfctl", "-s", "rules")
    assert r.stdout.splitlines() == ["block drop all", "pass out proto icmp all keep state",
                                     "block drop in quick from <kernel> to any"]
    r = sp.tool("pfctl", "-ss")
    assert f"all icmp {S_IP}:" in r.stdout and f"-> {K_IP}:" in r.stdout
    r = sp.tool("pfctl", "-si")
    assert r.stdout.startswith("Status: Enabled") and "block-in" in r.stdout
    r = sp.tool("pfctl", "-t", "kernel", "-T", "show")
    assert r.stdout.strip() == K_IP
    # a bad file is refused with line numbers, and the loaded rules stay
    bad = tmp_path / "bad.conf"
    bad.write_text("pass all\npass in proto tcp from any port ssh to 1.2.3\n")
    r = sp.tool("pfctl", "-f", str(bad), check=False)
    assert r.returncode == 1 and f"{bad}:2: bad address '1.2.3'" in r.stderr
    assert "block drop all" in sp.tool("pfctl", "-sr").stdout
    r = sp.tool("pfctl", "-F", "all")
    assert "rules cleared" in r.stderr and "states cleared" in r.stderr
    assert sp.tool("pfctl", "-sr").stdout == ""
    assert kping()
    r = sp.tool("pfctl", "-d")
    assert "pf disabled" in r.stderr
    # a second instance is refused; the first keeps serving
    r = sp.tool("mount", "-T", "io-pkt", "lsm-pf", check=False)
    assert r.returncode != 0 and "already loaded" in r.stderr
    assert sp.tool("pfctl", "-si").stdout.startswith("Status: Disabled")
    code, err = sp.stop()
    assert code == 0, err


@needs_fuse
def test_pfctl_without_pf_loaded(pf_stack_process) -> None:  # type: ignore[no-untyped-def]
    sp = pf_stack_process()
    r = sp.tool("pfctl", "-s", "rules", check=False)
    assert r.returncode == 1 and "pf is not loaded" in r.stderr
    pytest.importorskip("stack.tools.mount")
    sp.tool("mount", "-T", "io-pkt", "lsm-pf")
    r = sp.tool("pfctl", "-s", "info")
    assert r.stdout.startswith("Status: Disabled")
    code, err = sp.stop()  # orderly: every mount (dev/pf too) is unmounted
    assert code == 0, err
    assert not Path(sp.prefix, "dev", "pf", "ctl").exists()
