"""Bundled loadable modules: drivers ``devnp-*.py`` and protocols ``lsm-*.py``.

The files are loaded by path (their names are not Python identifiers), never imported
as ``modules.xxx``: see stack/loader.py.
"""
