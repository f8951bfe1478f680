"""`python -m bot servers ...`: the operator's acts across servers (never Discord commands).

    list              every server with data: its adapter, the default, its numbers
    default ID        make server ID's adapter the default for servers without their own
    wipe ID --yes     delete everything of server ID (exchanges, ratings, adapters, state)
"""

from __future__ import annotations

from bot.core.generation import BASE_VERSION
from bot.core.store import Store
from bot.core.store.wipe import wipe_tenant


async def list_servers(store: Store, home: int | None) -> list[str]:
    default = await store.registry.default_tenant() or home
    lines = [f"default adapter: server {default}" if default is not None
             else "default adapter: none (servers without their own get the base model)"]
    for tenant in await store.tenants():
        own = store.tenant(tenant)
        active = await own.registry.active()
        total = (await own.exchanges.stats())["total"]
        runs = await own.trainer.recent_runs(1)
        marks = [m for m, on in (("home", tenant == home), ("default", tenant == default)) if on]
        lines.append(f"server {tenant}{' (' + ', '.join(marks) + ')' if marks else ''}: "
                     f"adapter {active}, versions {len(await own.registry.records())}, "
                     f"exchanges {total['exchanges']}, rated {total['rated']}, last cycle "
                     f"{runs[0].get('outcome') if runs else 'none'}")
    if len(lines) == 1:
        lines.append("no server has data yet")
    return lines


async def make_default(store: Store, tenant: int) -> str:
    active = await store.tenant(tenant).registry.active()
    await store.registry.set_default_tenant(tenant)
    note = "" if active != BASE_VERSION else " (it has no adapter yet: the base model serves)"
    return f"server {tenant}'s adapter ({active}) is now the default{note}"


async def wipe(store: Store, tenant: int) -> str:
    counts = await wipe_tenant(store, tenant)
    return (f"deleted server {tenant}'s data: {counts['exchanges']} exchange(s), "
            f"{counts['adapters']} adapter(s), its training state and settings")
