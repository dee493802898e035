"""``io-pkt setkey`` against a running io-pkt: -c from stdin, -f FILE, -D, -DP, -F, -FP,
errors as one line, keys never printed in full."""

from __future__ import annotations

import subprocess

from tests.conftest import IO_PKT, REPO, io_pkt_env, needs_fuse

KEY = "0x" + "11" * 16 + "22334455"
CONF = f"""# a comment
add 192.0.2.1 192.0.2.2 esp 0x2001 -m tunnel -E aes-gcm-16 {KEY} ;
add 192.0.2.2 192.0.2.1 esp 0x2002 -m tunnel -esn -r 64 -lh 3600 -ls 3000
    -E aes-cbc 0x{'33' * 16} -A hmac-sha256 0x{'44' * 32} ;
spdadd 10.1.0.0/24 10.2.0.0/24 any -P out ipsec esp/tunnel/192.0.2.1-192.0.2.2/require ;
spdadd 10.2.0.0/24[any] 10.1.0.0/24[any] tcp -P in ipsec esp/tunnel/192.0.2.2-192.0.2.1/require ;
spdadd 10.1.0.0/24 10.3.0.0/24 any -P out discard ;
"""


def run(sp: object, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(IO_PKT + ["setkey", *args], cwd=REPO, input=stdin, text=True,
                          capture_output=True, timeout=30,
                          env=io_pkt_env(SOCK=sp.prefix))  # type: ignore[attr-defined]


@needs_fuse
def test_setkey_tool(stack_process: object, tmp_path: object) -> None:
    sp = stack_process()  # type: ignore[operator]
    r = run(sp, "-c", stdin=CONF)
    assert r.returncode == 0, r.stderr
    d = run(sp, "-D").stdout
    assert "192.0.2.1 192.0.2.2 \n\tesp mode=tunnel spi=8193(0x00002001)" in d
    assert "E: aes-gcm-16  11111111... (20 bytes)" in d
    assert "A: hmac-sha256  44444444... (32 bytes)" in d and "flags=esn" in d
    assert "11" * 16 not in d and "44" * 32 not in d and "33" * 16 not in d
    p = run(sp, "-DP").stdout
    assert "10.1.0.0/24[any] 10.2.0.0/24[any] any\n\tout ipsec\n\tesp/tunnel/192.0.2.1-192.0.2.2/require" in p
    assert "10.2.0.0/24[any] 10.1.0.0/24[any] tcp\n\tin ipsec" in p and "out discard" in p
    # the same SA again, a bad key, a bad statement: one line each, exit 1
    for text, msg in ((f"add 192.0.2.1 192.0.2.2 esp 0x2001 -E aes-gcm-16 {KEY};", "exists"),
                      ("add 192.0.2.1 192.0.2.2 esp 0x2003 -E aes-gcm-16 0x1234;", "salt"),
                      ("frobnicate;", "unknown command")):
        r = run(sp, "-c", stdin=text)
        assert r.returncode == 1 and msg in r.stderr and r.stderr.count("\n") == 1, r.stderr
    f = tmp_path / "more.conf"  # type: ignore[operator]
    f.write_text("delete 192.0.2.1 192.0.2.2 esp 0x2001;\n"
                 "spddelete 10.1.0.0/24 10.3.0.0/24 any -P out;\n")
    assert run(sp, "-f", str(f)).returncode == 0
    assert "0x00002001" not in run(sp, "-D").stdout and "discard" not in run(sp, "-DP").stdout
    assert run(sp, "-F").returncode == 0 and run(sp, "-D").stdout == "No SAD entries.\n"
    assert run(sp, "-FP").returncode == 0 and run(sp, "-DP").stdout == "No SPD entries.\n"
    stats = sp.tool("sysctl", "-a").stdout  # type: ignore[attr-defined]
    assert "kern.usercrypto = 1" in stats
