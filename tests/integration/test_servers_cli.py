"""`python -m bot servers`: the operator's acts across servers, as a real child process."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from store_util import TENANT
from subprocess_env import settings_env

from bot.core.store import AdapterRecord, Exchange

OTHER = 2


def servers(settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot", "servers", *args],
                          env=settings_env(settings), capture_output=True, text=True, timeout=60)


async def run(settings, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(servers, settings, *args)


async def test_list_default_and_wipe_a_server(settings, store):
    for tenant in (TENANT, OTHER):
        exchange = await store.exchanges.add(Exchange(tenant=tenant, user_message="hi",
                                                      reply="hello", message_id=tenant),
                                             user_id=7)
        await store.exchanges.rate(exchange.id, "mod", 1)
        record = await store.tenant(tenant).registry.save(AdapterRecord(base_model="m"), b"x")
        await store.tenant(tenant).registry.activate(record.version)

    listed = await run(settings, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"default adapter: server {TENANT}"
    assert lines[1].startswith(f"server {TENANT} (home, default): adapter v1, versions 1, "
                               "exchanges 1, rated 1")
    assert lines[2].startswith(f"server {OTHER}: adapter v2")

    made = await run(settings, "default", str(OTHER))
    assert made.returncode == 0 and "now the default" in made.stdout
    assert await store.registry.default_tenant() == OTHER

    refused = await run(settings, "wipe", str(OTHER))
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert await store.tenants() == [TENANT, OTHER]
    wiped = await run(settings, "wipe", str(OTHER), "--yes")
    assert wiped.returncode == 0, wiped.stderr
    assert "1 exchange(s), 1 adapter(s)" in wiped.stdout
    assert await store.tenants() == [TENANT]
    assert await store.tenant(OTHER).registry.active() == "base"
    assert await store.tenant(OTHER).exchanges.rated() == []
    assert await store.exchanges.for_message(OTHER) is None
    assert await store.registry.default_tenant() is None  # it was the default
    assert [r.exchange.tenant for r in await store.tenant(TENANT).exchanges.rated()] == [TENANT]
