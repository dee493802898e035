"""A module without IO_PKT_MODULE (test fixture)."""

VALUE = 1
