"""A fake Discord gateway and the two HTTP routes a connecting bot calls, served on a free local
port by aiohttp, speaking the gateway protocol as Discord does (JSON text frames).

A client connects to the websocket, gets HELLO, answers heartbeats with HEARTBEAT_ACK, sends
IDENTIFY (with `shard: [id, count]` when sharded) and gets READY with the guilds of its shard
(Discord's rule: `(guild_id >> 22) % shard_count`), then one GUILD_CREATE per guild. Every
IDENTIFY is recorded in `identified` (shard, shard count, time). An IDENTIFY with fewer shards
than `shards_needed` (none counts as one) is closed with 4011, as Discord closes a bot in too
many servers for its shard count.
`GET /gateway/bot` says `max_concurrency`; `/users/@me` and `/oauth2/applications/@me` are what
discord.py's login reads. `use(monkeypatch)` points discord.py at it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.core.local_redis import free_port

BOT_USER = {"id": "4242", "username": "learning-bot", "discriminator": "0", "avatar": None,
            "bot": True, "global_name": None}
APPLICATION_ID = "4242"
APPLICATION = {"id": APPLICATION_ID, "name": "learning-bot", "description": "", "icon": None,
               "bot_public": False, "bot_require_code_grant": False, "verify_key": "0" * 64,
               "owner": {**BOT_USER, "id": "1", "username": "owner", "bot": False}, "flags": 0}
HELLO, HEARTBEAT, IDENTIFY, HEARTBEAT_ACK, DISPATCH = 10, 1, 2, 11, 0
SHARDING_REQUIRED = 4011


@dataclass
class Identified:
    shard: tuple[int, int] | None  # (id, count) as the client sent it
    at: float  # time.monotonic() when it arrived


@dataclass
class FakeGateway:
    guild_ids: list[int]
    max_concurrency: int = 1
    shards_needed: int = 1
    identified: list[Identified] = field(default_factory=list)

    def __post_init__(self):
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def guilds_of(self, shard: tuple[int, int] | None) -> list[int]:
        if shard is None:
            return list(self.guild_ids)
        shard_id, count = shard
        return [g for g in self.guild_ids if (g >> 22) % count == shard_id]

    async def start(self) -> FakeGateway:
        app = web.Application()
        app.router.add_get("/api/v10/users/@me", self._me)
        app.router.add_get("/api/v10/oauth2/applications/@me", self._application)
        app.router.add_get("/api/v10/gateway/bot", self._gateway_bot)
        app.router.add_get("/gateway", self._websocket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def use(self, monkeypatch) -> None:
        """Send discord.py's HTTP and gateway connections here instead of to Discord."""
        monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{self.port}/api/v10")
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.ws_url))

    async def _me(self, request: web.Request) -> web.Response:
        return json_response(BOT_USER)

    async def _application(self, request: web.Request) -> web.Response:
        return json_response(APPLICATION)

    async def _gateway_bot(self, request: web.Request) -> web.Response:
        return json_response({
            "url": self.ws_url, "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0,
                                    "max_concurrency": self.max_concurrency}})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": HELLO, "d": {"heartbeat_interval": 41250}}))
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                break
            payload = json.loads(message.data)
            if payload["op"] == HEARTBEAT:
                await ws.send_str(json.dumps({"op": HEARTBEAT_ACK, "d": None}))
            elif payload["op"] == IDENTIFY:
                shard = payload["d"].get("shard")
                shard = tuple(shard) if shard else None
                self.identified.append(Identified(shard, time.monotonic()))
                if (shard[1] if shard else 1) < self.shards_needed:
                    await ws.close(code=SHARDING_REQUIRED, message=b"Sharding required.")
                    break
                await self._ready(ws, shard)
        return ws

    async def _ready(self, ws: web.WebSocketResponse, shard: tuple[int, int] | None) -> None:
        guilds = self.guilds_of(shard)
        ready = {"v": 10, "user": BOT_USER, "session_id": f"session-{shard}",
                 "resume_gateway_url": self.ws_url,
                 "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
                 "application": {"id": APPLICATION_ID, "flags": 0}}
        if shard is not None:
            ready["shard"] = list(shard)
        sequence = 1
        await ws.send_str(json.dumps({"op": DISPATCH, "t": "READY", "s": sequence, "d": ready}))
        for guild in guilds:
            sequence += 1
            await ws.send_str(json.dumps({"op": DISPATCH, "t": "GUILD_CREATE", "s": sequence,
                                          "d": guild_payload(guild)}))


def json_response(data: dict) -> web.Response:
    """JSON with the bare content type Discord sends (discord.py reads JSON only under it)."""
    return web.Response(body=json.dumps(data).encode(), headers={
        "Content-Type": "application/json"})


def guild_payload(guild_id: int) -> dict:
    everyone = {"id": str(guild_id), "name": "@everyone", "permissions": "0", "position": 0,
                "color": 0, "hoist": False, "managed": False, "mentionable": False}
    return {"id": str(guild_id), "name": f"guild {guild_id}", "unavailable": False,
            "owner_id": "1", "member_count": 1, "large": False, "features": [],
            "roles": [everyone], "emojis": [], "stickers": [], "channels": [], "threads": [],
            "members": [], "voice_states": [], "presences": []}
