"""pf against the Linux kernel as the peer (its namespace is the test's own)."""

from __future__ import annotations

import trio

from stack.addr import AF_INET
from tests.pf.conftest import ECHO_PORT, KERNEL_IP, STACK_IP, PfNet


async def test_pass_by_default_and_block_drop_times_out(pfnet: PfNet) -> None:
    assert await pfnet.connect() == "ok"  # pf loaded but disabled
    await pfnet.load(f"block drop in quick proto tcp from any to any port {ECHO_PORT}\n")
    code, reply = await pfnet.ctl("enable")
    assert code == 0 and "enabled" in reply
    assert await pfnet.connect(timeout=1.5) == "timeout"
    assert await pfnet.kping()  # other traffic still passes
    assert pfnet.pf.stats["block-in"] >= 1


async def test_block_return_refuses_tcp_and_udp(pfnet: PfNet) -> None:
    await pfnet.load("block return in quick proto tcp to port 8080\n"
                     "block return in quick proto udp to port 9999\n")
    await pfnet.ctl("enable")
    with trio.fail_after(5):
        assert await pfnet.connect(timeout=3) == "refused"
    udp = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           f"s.connect(('{STACK_IP}', 9999)); s.settimeout(2); s.send(b'x')\n"
           "try:\n s.recv(10); print('data')\n"
           "except ConnectionRefusedError: print('refused')\n"
           "except socket.timeout: print('timeout')")
    assert (await pfnet.kernel("python3", "-c", udp)).strip() == "refused"
    assert pfnet.pf.stats["return-rst"] >= 1
    assert pfnet.pf.stats["return-icmp"] >= 1


async def test_keep_state_lets_replies_through_default_block(pfnet: PfNet) -> None:
    await pfnet.load("block all\npass out proto icmp keep state\n")
    await pfnet.ctl("enable")
    # the stack pings out: the reply matches the state
    rtt = await pfnet.st.inet.ping(KERNEL_IP, timeout=2)
    assert rtt > 0
    states = await pfnet.read_file(pfnet.pfdir / "states")
    assert f"all icmp {STACK_IP}:" in states and f"-> {KERNEL_IP}:" in states
    # the kernel pings in: no state, no pass rule
    assert not await pfnet.kping()
    # a TCP connection in is blocked too, until a rule lets it in (then state does)
    assert await pfnet.connect(timeout=1) == "timeout"
    await pfnet.load("block all\npass out proto icmp keep state\n"
                     f"pass in proto tcp to {STACK_IP} port {ECHO_PORT} keep state\n")
    assert await pfnet.connect() == "ok"


async def test_tables(pfnet: PfNet) -> None:
    await pfnet.load(f"table <bad> {{ 192.0.2.1, {KERNEL_IP} }}\n"
                     "table <nets> { 10.77.0.0/24 }\n"
                     "block in quick proto icmp from <bad>\n"
                     "block in quick proto tcp from <nets> to any port 8080\n")
    await pfnet.ctl("enable")
    assert not await pfnet.kping()
    code, reply = await pfnet.ctl(f"table bad delete {KERNEL_IP}")
    assert code == 0 and reply.startswith("1/1"), reply
    assert await pfnet.kping()
    assert await pfnet.connect(timeout=1) == "timeout"
    await pfnet.ctl("table nets flush")
    assert await pfnet.connect() == "ok"
    code, reply = await pfnet.ctl("table bad show")
    assert "192.0.2.1" in reply and KERNEL_IP not in reply


LONG_CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"one"); assert s.recv(10) == b"one"
print("first", flush=True)
time.sleep(float(sys.argv[3]))
s.sendall(b"two"); s.settimeout(3)
print("second", s.recv(10).decode(), flush=True)
"""


async def test_reload_keeps_established_states(pfnet: PfNet) -> None:
    await pfnet.load("block all\n"
                     f"pass in proto tcp to port {ECHO_PORT} keep state\n")
    await pfnet.ctl("enable")
    result: list[str] = []

    async def client() -> None:
        result.append(await pfnet.kernel("python3", "-c", LONG_CLIENT, STACK_IP,
                                         str(ECHO_PORT), "2"))

    async with trio.open_nursery() as n:
        n.start_soon(client)
        for _ in range(100):
            await trio.sleep(0.05)
            if len(pfnet.pf.states):
                break
        await trio.sleep(0.3)
        states = await pfnet.read_file(pfnet.pfdir / "states")
        assert f"all tcp {STACK_IP}:{ECHO_PORT} <- {KERNEL_IP}:" in states, states
        assert "ESTABLISHED:ESTABLISHED" in states
        # a new rule set that lets no new connection in
        await pfnet.load("block all\n")
        assert await pfnet.connect(timeout=1) == "timeout"
    assert "second two" in result[0], result
    verbose = await pfnet.read_file(pfnet.pfdir / "states.verbose")
    assert "pkts" in verbose and "rule 1" in verbose


async def test_rule_evaluation_fault_does_not_crash_the_stack(pfnet: PfNet) -> None:
    await pfnet.load("pass all\n")
    await pfnet.ctl("enable")
    code, _ = await pfnet.ctl("fault 3")
    assert code == 0
    assert not await pfnet.kping(count=1)  # the request hits a raising evaluation
    for _ in range(3):
        if await pfnet.kping():
            break
    else:
        raise AssertionError("stack does not answer after the fault")
    assert pfnet.st.pfil.counters["hook_errors"] >= 1
    assert pfnet.pf.stats["errors"] >= 1
    # a rule function that raises by itself (not the injection knob)

    def broken(*args: object) -> None:
        raise ZeroDivisionError("boom")

    icmp_in = pfnet.pf.match[AF_INET]["in"]
    saved = icmp_in[1]
    icmp_in[1] = broken  # type: ignore[assignment]
    assert not await pfnet.kping()
    icmp_in[1] = saved
    assert await pfnet.kping()
    assert await pfnet.connect() == "ok"


async def test_log_and_info(pfnet: PfNet) -> None:
    await pfnet.load("block in log quick proto icmp\n")
    await pfnet.ctl("enable")
    assert not await pfnet.kping()
    info = await pfnet.read_file(pfnet.pfdir / "info")
    assert info.startswith("Status: Enabled")
    assert "logged" in info
    data = await trio.to_thread.run_sync((pfnet.pfdir / "log").read_bytes)
    out = await trio.run_process(["tcpdump", "-n", "-r", "-"], stdin=data,
                                 capture_stdout=True, capture_stderr=True)
    assert b"ICMP echo request" in out.stdout, out
    rules = await pfnet.read_file(pfnet.pfdir / "rules.verbose")
    assert "@0 block drop in log quick proto icmp all" in rules
    assert "Packets: 1" in rules


#: python3 in the namespace: a UDP peer on 7777 that echoes the first datagram at once,
#: then sends "late" from the same port after argv[1] seconds
LATE_PEER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[2], 7777))
print("ready", flush=True)
data, addr = s.recvfrom(100)
s.sendto(data, addr)
time.sleep(float(sys.argv[1]))
s.sendto(b"late", addr)
"""


async def udp_reply_then_late(pfnet: PfNet, late_after: float) -> list[bytes]:
    """The stack sends one datagram out; what comes back within late_after + 2 s."""
    s = pfnet.st.udp.socket()
    s.bind((STACK_IP, 0))
    got: list[bytes] = []
    async with trio.open_nursery() as n:
        n.start_soon(pfnet.kernel, "python3", "-c", LATE_PEER, str(late_after), KERNEL_IP)
        with trio.fail_after(10):
            while not got:  # until the peer is up and answers
                await s.sendto(b"hi", (KERNEL_IP, 7777))
                with trio.move_on_after(0.5):
                    got.append((await s.recvfrom(100))[0])
        with trio.move_on_after(late_after + 2):
            got.append((await s.recvfrom(100))[0])
    s.close()
    return got


async def test_udp_keep_state_and_its_timeout(pfnet: PfNet) -> None:
    # long UDP timeouts: the reply and the late datagram both match the state
    await pfnet.load("block all\npass out proto udp keep state\n")
    await pfnet.ctl("enable")
    assert await udp_reply_then_late(pfnet, 1.5) == [b"hi", b"late"]
    assert "all udp " in await pfnet.read_file(pfnet.pfdir / "states")
    # short ones: the state is gone when "late" comes, and default block drops it
    await pfnet.load("set timeout udp.first 1\nset timeout udp.single 1\n"
                     "set timeout udp.multiple 1\nblock all\npass out proto udp keep state\n")
    blocked = pfnet.pf.stats["block-in"]
    assert await udp_reply_then_late(pfnet, 2.5) == [b"hi"]
    assert pfnet.pf.stats["block-in"] > blocked
