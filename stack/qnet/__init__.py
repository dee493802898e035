"""Qnet: transparent distributed processing (issue 17); docs/qnet.md."""
