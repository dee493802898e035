"""The option grammar and the io-pkt command line."""

from __future__ import annotations

import logging

import pytest

from stack.cmdline import UsageError, parse_args
from stack.loader import LoadError, canonical_name, validate_name
from stack.options import OptionError, Options


def test_one_word_commas_and_flags() -> None:
    o = Options.parse("name=tap0,netns=demo,promisc,mtu=9000")
    assert o == {"name": "tap0", "netns": "demo", "promisc": "", "mtu": "9000"}
    assert o.flag("promisc") and not o.flag("absent")
    assert o.get_int("mtu") == 9000
    assert o.word() == "name=tap0,netns=demo,promisc,mtu=9000"


def test_empty_items_and_whitespace_are_ignored() -> None:
    assert Options.parse(",a=1,,b ,") == {"a": "1", "b": ""}
    assert Options.parse("") == {} and Options.parse(None) == {}


def test_value_keeps_equals_signs() -> None:
    assert Options.parse("filter=a=b")["filter"] == "a=b"


def test_bad_key_is_an_error() -> None:
    with pytest.raises(OptionError, match="bad option"):
        Options.parse("=x")
    with pytest.raises(OptionError):
        Options.parse("a b=1")


def test_typed_getters_say_what_is_wrong() -> None:
    o = Options.parse("mtu=big,loss=0.5,n=70000")
    with pytest.raises(OptionError, match="mtu='big': not an integer"):
        o.get_int("mtu")
    assert o.get_float("loss") == 0.5
    with pytest.raises(OptionError, match="out of range"):
        o.get_int("n", lo=0, hi=65535)


def test_unknown_options_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    o = Options.parse("name=tap0,bogus=1")
    o.get_str("name")
    with caplog.at_level(logging.WARNING, logger="io-pkt"):
        assert o.warn_unknown("devnp-tap") == ["bogus"]
    assert "devnp-tap: unknown option 'bogus' ignored" in caplog.text


def test_command_line_like_qnx(caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_args(["-i", "1", "-v", "-d", "tap", "name=tap0,netns=demo",
                      "-dvwire", "-p", "tcpip", "prefix=/alt,forward", "-p", "qnet"])
    assert cfg.instance == 1 and cfg.verbose == 1
    assert [(d, dict(o)) for d, o in cfg.drivers] == [
        ("tap", {"name": "tap0", "netns": "demo"}), ("vwire", {})]
    assert [p for p, _ in cfg.protocols] == ["qnet"]  # tcpip loads nothing
    assert cfg.prefix == "/alt" and cfg.socket_path == "/alt/dev/socket"
    assert cfg.tcpip.flag("forward")


def test_attached_forms_and_paths() -> None:
    cfg = parse_args(["-i2", "-vv", "-d/opt/x/devnp-foo.py", "a=1", "-p", "./lsm-bar.py"])
    assert cfg.instance == 2 and cfg.verbose == 2
    assert cfg.drivers[0][0] == "/opt/x/devnp-foo.py"
    assert cfg.protocols[0][0] == "./lsm-bar.py"


def test_unknown_tcpip_option_and_flag_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="io-pkt"):
        cfg = parse_args(["-x", "-p", "tcpip", "prefix=/a,frobnicate=2"])
    assert cfg.prefix == "/a"
    assert "unknown option -x ignored" in caplog.text
    assert "tcpip: unknown option 'frobnicate' ignored" in caplog.text


@pytest.mark.parametrize("argv,msg", [
    (["-d"], "needs a module name"),
    (["-i", "x"], "instance number"),
    (["stray"], "unexpected argument"),
    (["-p", "tcpip", "prefix=relative"], "absolute path"),
    (["-d", "tap", "name=tap0,a b=1"], "io-pkt: bad option 'a b=1'"),  # malformed, not unknown
])
def test_usage_errors(argv: list[str], msg: str) -> None:
    with pytest.raises(UsageError, match=msg):
        parse_args(argv)


def test_module_names() -> None:
    assert canonical_name("tap", "driver") == "devnp-tap"
    assert canonical_name("qnet", "protocol") == "lsm-qnet"
    assert canonical_name("devnp-e1000.so", "driver") == "devnp-e1000"
    assert canonical_name("lsm-pf", "driver") == "lsm-pf"
    validate_name("devnp-tap")
    for bad in ("devnp-../../etc", "devnp-A", "lsm-", "evil", "devnp-x/y", "devnp-.hidden"):
        with pytest.raises(LoadError, match="bad module name"):
            validate_name(bad)


def test_a_repeated_key_keeps_every_value() -> None:
    o = Options.parse("host=a,bind=tap0,bind=tap1,bind=ip,export=/srv/x")
    assert o["bind"] == "ip"  # the dict keeps the last, as before
    assert o.get_all("bind") == ["tap0", "tap1", "ip"]
    assert o.get_all("export") == ["/srv/x"] and o.get_all("nothing") == []
    assert "bind" in o.used
