"""Where steps run: in the run's own process by default, or on a cluster, by one setting.

The stage jobs and ``main`` run their steps in the run's process unless a run config asks for
``execution: {config: {multiprocess: {...}}}`` (:data:`in_process_by_default`).

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

import dagster as dg

EXECUTOR_ENV = "KG4REC_EXECUTOR"
_EXECUTORS = {"k8s": ("dagster_k8s", "k8s_job_executor", "dagster-k8s"),
              "celery": ("dagster_celery", "celery_executor", "dagster-celery")}


def chunk_executor(environ=None):
    """The executor of the chunk backfill job: Dagster's default (multiprocess unless the run
    config says ``in_process``), or the cluster executor ``$KG4REC_EXECUTOR`` names."""
    name = (environ if environ is not None else os.environ).get(EXECUTOR_ENV, "").strip()
    if not name:
        return dg.multi_or_in_process_executor
    if name not in _EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected one of {', '.join(_EXECUTORS)} (or unset)")
    module, attribute, package = _EXECUTORS[name]
    try:
        return getattr(__import__(module), attribute)
    except ImportError as exc:
        raise ImportError(f"{EXECUTOR_ENV}={name} needs the {package} package "
                          f"(pip install {package}==0.29.27, the dagster 1.13.27 family)") from exc


#: Dagster's ``multi_or_in_process_executor`` with the other default. The multiprocess executor
#: starts a process and imports the code location again for every step, which on 2 idle cores
#: made the offline ml-100k stages 1-5 take 2.24x their steps' own time (in process: 1.26x;
#: ``python bench/pipeline_overhead.py``). A default run config on the job would not do: any
#: run config a user passes (``dagster job execute -c their.yaml`` with only ``ops:``) replaces
#: it whole, and the executor's own default, multiprocess, came back.
in_process_by_default = dg.ExecutorDefinition(
    name="in_process_or_multiprocess",
    config_schema=dg.Field(dg.multi_or_in_process_executor.config_schema.as_field().config_type,
                           default_value={"in_process": {}}),
    requirements=dg.multi_or_in_process_executor.get_requirements,
    executor_creation_fn=dg.multi_or_in_process_executor.executor_creation_fn,
    description="Steps in the run's process; `multiprocess: {}` in the run config runs each step "
                "in a process of its own.",
)
