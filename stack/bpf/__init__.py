"""Packet capture: the classic BPF machine (vm.py) and the bpf device (device.py),
served by the ``lsm-bpf`` module at ``<prefix>/dev/bpf``."""

from stack.bpf.device import BpfDevice, BpfReader
from stack.bpf.vm import BpfError, Filter, Insn, parse_ddd, run, validate

__all__ = ["BpfDevice", "BpfReader", "BpfError", "Filter", "Insn", "parse_ddd", "run", "validate"]
