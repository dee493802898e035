"""The files of ``<prefix>/dev/pf`` (served by lsm-pf; the pfctl tool uses them).

``ctl``            commands (root only), one per write; reading before a write gives the
                   status line. ``enable``, ``disable``, ``load [NAME]`` + newline +
                   the rule set text, ``check [NAME]`` + text (parse only), ``flush
                   rules|states|tables|info|all``, ``table NAME add|delete|flush|show
                   [ADDR...]``, ``kill states`` (= flush states), ``fault N`` (the next
                   N rule evaluations raise: tests). A bad rule set fails the write
                   with EINVAL and the reply lists ``NAME:LINE: message`` per bad line.
``rules``          ``pfctl -s rules``; ``rules.verbose`` with counters (``-v``)
``states``         ``pfctl -s states``; ``states.verbose``
``info``           ``pfctl -s info``
``tables``         table names (``pfctl -s Tables``)
``log``            pcap (LINKTYPE_RAW) of the last packets matched by ``log`` rules
"""

from __future__ import annotations

import errno

from rmgr.nodes import Caller, ControlFile, Directory, TextFile
from stack.pf.engine import Pf
from stack.pf.parse import ParseError


def build_tree(pf: Pf) -> Directory:
    root = Directory()
    root.add("ctl", ControlFile(lambda text, caller: command(pf, text, caller),
                                lambda: f"Status: {'Enabled' if pf.enabled else 'Disabled'}\n",
                                mode=0o600))
    root.add("rules", TextFile(lambda: pf.ruleset.render()))
    root.add("rules.verbose", TextFile(lambda: pf.ruleset.render(verbose=True)))
    root.add("states", TextFile(lambda: pf.states.render()))
    root.add("states.verbose", TextFile(lambda: pf.states.render(verbose=True)))
    root.add("info", TextFile(pf.render_info))
    root.add("tables", TextFile(pf.render_tables))
    root.add("log", TextFile(pf.render_log_pcap, mode=0o400))
    return root


def command(pf: Pf, text: str, caller: Caller) -> str:
    if not caller.is_root:
        raise OSError(errno.EPERM, "pf commands need root")
    first, _, body = text.partition("\n")
    words = first.split()
    if not words:
        raise OSError(errno.EINVAL, "empty command")
    verb, args = words[0], words[1:]
    if verb == "enable" and not args:
        pf.enable()
        return "pf enabled\n"
    if verb == "disable" and not args:
        pf.disable()
        return "pf disabled\n"
    if verb in ("load", "check"):
        name = args[0] if args else "pf.conf"
        try:
            rs = pf.load(body, name) if verb == "load" else pf.check(body, name)
        except ParseError as exc:
            raise OSError(errno.EINVAL, exc.format()) from None
        return (f"{'loaded' if verb == 'load' else 'checked'} {len(rs.rules)} rules, "
                f"{len(rs.tables)} tables\n")
    if verb == "flush" and len(args) == 1:
        what = args[0]
        out = []
        if what in ("rules", "all"):
            pf.flush_rules()
            out.append("rules cleared")
        if what in ("states", "all"):
            out.append(f"{pf.states.flush()} states cleared")
        if what in ("tables", "all"):
            out.append(f"{pf.flush_tables()} tables deleted.")
        if what in ("info", "all"):
            pf.flush_info()
            out.append("pf: statistics cleared")
        if not out:
            raise OSError(errno.EINVAL, f"flush what? rules, states, tables, info or all, "
                                        f"not {what!r}")
        return "\n".join(out) + "\n"
    if verb == "kill" and args == ["states"]:
        return f"killed {pf.states.flush()} states\n"
    if verb == "table" and len(args) >= 2:
        return pf.table_command(args[0], args[1], args[2:])
    if verb == "fault" and len(args) == 1 and args[0].isdigit():
        pf.fault_next = int(args[0])
        return f"the next {pf.fault_next} rule evaluations will raise\n"
    raise OSError(errno.EINVAL, f"unknown command {first!r}")
