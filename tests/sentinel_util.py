"""A Redis master, one replica (`--replicaof`) and one sentinel watching them, as real
processes on free ports in a temp dir (`redis-server sentinel.conf --sentinel`: no separate
redis-sentinel binary is needed)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from bot.core.local_redis import LocalRedis, RedisUnavailable, free_port

SERVICE = "lbot"
DOWN_AFTER_MS = 500  # the sentinel calls the master down after this long without an answer
SENTINEL_CONF = """port {port}
bind 127.0.0.1
daemonize no
dir {directory}
logfile {directory}/sentinel.log
sentinel monitor {service} 127.0.0.1 {master_port} 1
sentinel down-after-milliseconds {service} {down_after_ms}
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


def wait_for(condition, what: str, timeout_s: float, every_s: float = 0.1):
    """Poll `condition` until it returns something true; AssertionError naming `what` after
    `timeout_s` (a hang, not slowness: the timeouts are generous)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = condition()
        except (redis.RedisError, OSError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s:.0f} s")
        time.sleep(every_s)


class SentinelProcess:
    """One `redis-server --sentinel` watching `master_port` under SERVICE."""

    def __init__(self, directory: Path, master_port: int):
        self.directory = directory
        self.port = free_port()
        self.conf = directory / "sentinel.conf"  # the sentinel rewrites it as it learns
        self.conf.write_text(SENTINEL_CONF.format(
            port=self.port, directory=directory, service=SERVICE, master_port=master_port,
            down_after_ms=DOWN_AFTER_MS))
        self.process: subprocess.Popen | None = None

    def start(self) -> SentinelProcess:
        self.process = subprocess.Popen([LocalRedis(self.directory).binary, str(self.conf),
                                         "--sentinel"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if self.process.poll() is not None:
            raise RedisUnavailable(f"the sentinel exited at start; see {self.directory}")
        wait_for(lambda: self.client().ping(), "the sentinel answers", 10)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def master_port(self) -> int:
        with self.client() as client:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class SentinelSet:
    """Master + replica + sentinel, started in `directory`; `url` is the store's REDIS_URL."""

    def __init__(self, directory: Path):
        for name in ("master", "replica", "sentinel"):
            (directory / name).mkdir()
        # a replica's first sync starts at once, not after the default 5 s wait for others
        self.master = LocalRedis(directory / "master",
                                 extra_args=("--repl-diskless-sync-delay", "0"))
        self.replica = None
        self.sentinel = None
        self._directory = directory

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica = LocalRedis(self._directory / "replica", extra_args=(
            "--replicaof", "127.0.0.1", str(self.master.port))).start()
        wait_for(self._replica_in_sync, "the replica is in sync with the master", 20)
        self.sentinel = SentinelProcess(self._directory / "sentinel", self.master.port).start()
        wait_for(self._sentinel_sees_replica, "the sentinel knows the replica", 20)
        return self

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}/0"

    def _replica_in_sync(self) -> bool:
        """Both ends say so: the replica's link is up and the master counts it online."""
        with redis.Redis(port=self.replica.port, socket_timeout=2) as client:
            if client.info("replication").get("master_link_status") != "up":
                return False
        with redis.Redis(port=self.master.port, socket_timeout=2) as client:
            found = client.info("replication").get("slave0") or {}
        return found.get("state") == "online" and found.get("port") == self.replica.port

    def _sentinel_sees_replica(self) -> bool:
        with self.sentinel.client() as client:
            replicas = client.sentinel_slaves(SERVICE)
        return any(r["port"] == self.replica.port and not r["is_sdown"]
                   and r.get("master-link-status") == "ok" for r in replicas)

    def logs(self, lines: int = 40) -> str:
        """The last lines of each process's log, for a failure message."""
        found = []
        for name, log in (("master", "master/redis.log"), ("replica", "replica/redis.log"),
                          ("sentinel", "sentinel/sentinel.log")):
            path = self._directory / log
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            found.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(found)

    def close(self) -> None:
        for part in (self.sentinel, self.replica, self.master):
            if part is not None:
                part.close()
