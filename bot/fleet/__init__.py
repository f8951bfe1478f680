"""Inference workers on Ray Serve, and the remote Generator that front ends use to reach them.

Only this package imports ray, and only processes with GENERATOR=ray (front ends) or running
`python -m bot worker` import it: the embedded default (one process, the local engine) never
does. wire.py is what crosses between the two; worker.py is the deployment, app.py deploys it,
remote.py is the RemoteGenerator.
"""

import os

# Ray Serve reads these when it is imported, so they are set before any module here imports
# ray (an operator's own values win). With Ray's defaults, Serve's router sent requests to a
# replica without their adapter on a busy 2-core host: a request for a version the router sent
# somewhere before it learned which replica loaded it waited only 1 s for that news, and a
# replica whose queue length did not come back within 0.1 s counted as busy, so the request
# went to any replica.
os.environ.setdefault("RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S", "5")
os.environ.setdefault("RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "1.0")
os.environ.setdefault("RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "2.0")
