"""A rating acknowledged by Redis survives `kill -9` when the server runs with appendonly."""

from __future__ import annotations

import redis.asyncio as aioredis
from paths import REPO
from store_util import TENANT, raw_redis, score

from bot.core.local_redis import LocalRedis
from bot.core.store import Exchange, Store

DEPLOY_REDIS_CONF = REPO / "deploy" / "redis.conf"


def _store(server: LocalRedis) -> Store:
    return Store(aioredis.from_url(server.url), prefix="dur", user_secret="s")


async def test_acknowledged_rating_survives_kill_9(tmp_path):
    server = LocalRedis(tmp_path, appendonly=True).start()
    try:
        store = _store(server)
        exchange = await store.exchanges.add(Exchange(tenant=TENANT, user_message="hi",
                                                      reply="hello"))
        assert await store.exchanges.rate(exchange.id, moderator_id=1, value=1) == 1
        await raw_redis(store).aclose()
        server.kill()  # SIGKILL right after the acknowledgement

        server.start()  # same directory, same port
        store = _store(server)
        assert await score(store, exchange.id) == 1
        assert (await store.exchanges.get(exchange.id)).reply == "hello"
        assert (await store.tenant(TENANT).trainer.snapshot()).new_ratings == 1
        await store.close()
    finally:
        server.close()


def test_deploy_redis_uses_the_same_persistence():
    conf = DEPLOY_REDIS_CONF.read_text().splitlines()
    settings = {line.split()[0]: line.split()[1] for line in conf
                if line.strip() and not line.lstrip().startswith("#") and len(line.split()) > 1}
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "everysec"
