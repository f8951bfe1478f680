"""Inference workers on Ray Serve, and the remote Generator that front ends use to reach them.

Only this package imports ray, and only processes with GENERATOR=ray (front ends) or running
`python -m bot worker` import it: the embedded default (one process, the local engine) never
does. wire.py is what crosses between the two; worker.py is the deployment, app.py deploys it,
remote.py is the RemoteGenerator.
"""
