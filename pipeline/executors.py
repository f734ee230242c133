"""Where the steps of the chunk backfills run: this machine, or a cluster, by one setting.

The media and feature chunks (``assets/chunks.py``) are one run per ``dataset × item_chunk``
partition, each run a few steps that only talk through the data directory. Here they run on the
multiprocess executor. On a cluster the same definitions run with ``KG4REC_EXECUTOR`` set:

* ``k8s`` — ``dagster_k8s.k8s_job_executor``: each step in its own Kubernetes job (the run
  launcher, images and volumes are the deployment's: ``deploy/k8s/``);
* ``celery`` — ``dagster_celery.celery_executor``: steps go to Celery workers (``deploy/celery/``).

Neither package is a dependency of the project (nothing here can reach a cluster); asking for
one that is not installed says which package to add.
"""

from __future__ import annotations

import os

EXECUTOR_ENV = "KG4REC_EXECUTOR"
_EXECUTORS = {"k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
              "celery": ("dagster_celery", "celery_executor", "dagster-celery")}


def chunk_executor(environ=None):
    """The executor of the chunk backfill job: None (Dagster's default, multiprocess) unless
    ``$KG4REC_EXECUTOR`` names a cluster executor."""
    name = (environ if environ is not None else os.environ).get(EXECUTOR_ENV, "").strip()
    if not name:
        return None
    if name not in _EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {', '.join(_EXECUTORS)} (or unset)")
    module, attribute, package = _EXECUTORS[name]
    try:
        return getattr(__import__(module), attribute)
    except ImportError as exc:
        raise ImportError(f"{EXECUTOR_ENV}={name} needs the {package} package "
                          f"(pip install {package}==0.29.27, the dagster 1.13.27 family)") from exc
