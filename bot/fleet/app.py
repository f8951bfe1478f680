"""`python -m bot worker`: deploy the inference workers (worker.py) as a Ray Serve application
named RAY_APP, and keep it until stopped.

RAY_ADDRESS names the Ray cluster (`auto` on a node of it, or ray://head:10001); unset, a local
Ray instance starts in this process and ends with it. WORKER_REPLICAS replicas run, each
reserving WORKER_NUM_CPUS cores and WORKER_NUM_GPUS GPUs (one replica per GPU: 1). Serve starts
no HTTP proxy: front ends reach the replicas through Ray handles (remote.py). Stopping the
command (SIGTERM, Ctrl-C) deletes the application; Ray restarts a replica that dies meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from bot.fleet.worker import InferenceWorker

log = logging.getLogger(__name__)

DEPLOYMENT = "InferenceWorker"
# How often the command logs the application's status while it serves.
STATUS_EVERY_S = 60.0


def worker_app(settings, overrides: dict | None = None):
    """The bound Serve application of `settings` (WORKER_* and the generation settings);
    `overrides` go to each replica's own settings (worker.py)."""
    from ray import serve

    deployment = serve.deployment(InferenceWorker, name=DEPLOYMENT).options(
        num_replicas=settings.worker_replicas,
        ray_actor_options={"num_cpus": settings.worker_num_cpus,
                           "num_gpus": settings.worker_num_gpus},
        # The engine bounds its own queue (EngineBusy): let every request it could hold in.
        max_ongoing_requests=settings.batch_max_size + settings.queue_max,
        # Past this many waiting in a front end's router, Serve refuses (EngineBusy there).
        max_queued_requests=settings.queue_max,
        # The replicas' settings as changed from their hosts' environment (worker.py).
        user_config=dict(overrides or {}))
    return deployment.bind()


def deploy(settings, overrides: dict | None = None):
    """Deploy (or update) RAY_APP on the connected Ray cluster; returns its handle once every
    replica has loaded the model."""
    from ray import serve

    serve.start(proxy_location="Disabled")
    return serve.run(worker_app(settings, overrides), name=settings.ray_app, route_prefix=None)


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (None: start a local instance), once per process."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)


async def run_worker(settings) -> int:
    """`python -m bot worker` (see the module docstring)."""
    from ray import serve

    await asyncio.to_thread(connect, settings.ray_address)
    await asyncio.to_thread(deploy, settings)
    log.info("inference workers serving as Ray Serve application %r (%d replica(s), "
             "%.2g CPU and %.2g GPU each)", settings.ray_app, settings.worker_replicas,
             settings.worker_num_cpus, settings.worker_num_gpus)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), STATUS_EVERY_S)
            except TimeoutError:
                status = (await asyncio.to_thread(serve.status)).applications[settings.ray_app]
                log.info("application %s: %s", settings.ray_app, status.status)
    finally:
        log.info("stopping: deleting application %s", settings.ray_app)
        await asyncio.to_thread(serve.delete, settings.ray_app)
    return 0
