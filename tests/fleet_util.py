"""What the fleet tests share besides their fixtures (a module, not conftest.py: another
folder's conftest may own that module name when several folders are collected together)."""

from __future__ import annotations


def remote_generator(app: str):
    """A RemoteGenerator for the Serve application `app` of the session's Ray instance."""
    from bot.fleet.remote import RemoteConfig, RemoteGenerator

    return RemoteGenerator(RemoteConfig(address=None, app_name=app))
