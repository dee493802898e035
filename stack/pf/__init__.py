"""pf: the packet filter served by lsm-pf (parser, compiled rules, state table).

``Pf(stack)`` is the engine (engine.py), ``parse(text)`` the pf.conf parser (parse.py),
``build_tree(pf)`` the files of ``<prefix>/dev/pf`` (files.py). See docs/pf-bpf.md."""

from stack.pf.engine import Pf
from stack.pf.files import build_tree
from stack.pf.parse import ParseError, parse

__all__ = ["Pf", "ParseError", "build_tree", "parse"]
