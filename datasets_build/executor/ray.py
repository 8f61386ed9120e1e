"""The Ray executor: the build's chunk task on a Ray cluster, through Ray Data.

    build(config, RayExecutor(address="ray://head:10001"))       # or address=None: a local instance

The items (chunks of ids) become a Ray dataset of one row per block; `map_batches` runs a callable
class on an actor pool, so each actor sets the task up once (every processor's `setup()`: models,
LLM clients), calls it once per chunk, and tears it down when Ray Data ends the actor. Results come
back in the items' order (Ray Data's `preserve_order`, and a reorder buffer besides), so the
builder writes the same shards in the same order as the local executor: the published output is
byte for byte the local build's with the same number of workers (the chunk size depends on it).

Resources per actor come from the task's processors: `num_gpus` (a ClassVar a processor may
declare: text features, segmentation, motion tokens) when the cluster has GPUs; a task that asks an
LLM gets a pool of at most `llm.concurrency` actors that share that concurrency, so the endpoint
sees the requests in flight it was configured for, however many actors run. Errors raised by the
task (a strict build's stop, a processor's broken contract) reach the caller as themselves.

Caches (`ray_stores.py`): with workers on several machines the stores are served by one actor on
the driver's machine; on one machine (a local instance) workers open the files directly, as the
local executor's do. `stores="auto"` picks by that: served when connecting to a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import sys
import traceback
from typing import Any, Iterator, Sequence

from datasets_build.core.errors import UserError
from datasets_build.executor.base import Task
from datasets_build.executor.ray_stores import StoreServer, check_routing, route_stores
from datasets_build.llm.engine import LLMConfig

STORE_MODES = ("auto", "direct", "served")
# Environment read by a worker's LLM client: sent to the actors (a cluster's nodes lack the driver's).
FORWARDED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL")
log = logging.getLogger(__name__)


class RayUnavailable(UserError, RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


@dataclasses.dataclass(frozen=True)
class ActorPlan:
    """How many actors run the task, and what each one reserves."""

    actors: int
    num_cpus: float
    num_gpus: float
    llm_concurrency: int | None  # per actor, for a task that asks an LLM


class RayExecutor:
    """Runs a task over items on Ray actors. `address`: a cluster (`ray://host:10001`, `host:6379`,
    `auto`); None: RAY_ADDRESS if set, else a local instance on loopback with `num_cpus` (default:
    all), stopped by `close()`. `workers`: actors at most (default: the cluster's CPUs). `stores`:
    auto, direct (workers open the cache files: one machine only) or served (see ray_stores.py)."""

    def __init__(self, address: str | None = None, workers: int | None = None, stores: str | None = None,
                 num_cpus: int | None = None) -> None:
        stores = stores or os.environ.get("DATASETS_BUILD_RAY_STORES") or "auto"
        if stores not in STORE_MODES:
            raise ValueError(f"stores must be one of {', '.join(STORE_MODES)}, got {stores!r}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.stores = stores
        self.num_cpus = num_cpus
        self._workers = workers
        self._started = False  # whether close() stops the instance (one this executor started)

    @property
    def workers(self) -> int:
        if self._workers is None:
            self._workers = max(1, int(self._ray().cluster_resources().get("CPU", 1)))
        return self._workers

    def served(self) -> bool:
        """Whether workers reach the stores through the store server (see the module docstring)."""
        return self.stores == "served" or (self.stores == "auto" and self.address is not None)

    def map(self, task: Task, items: Sequence[Any]) -> Iterator[Any]:
        if not items:
            return
        ray = self._ray()
        if self.served():
            check_routing()  # before any actor starts
        plan = plan_actors(task, min(self.workers, len(items)), ray.cluster_resources())
        task = share_llm_concurrency(task, plan.llm_concurrency)
        server = _start_store_server(ray) if self.served() else None
        try:
            yield from self._run(task, items, plan, server)
        finally:
            if server is not None:
                with contextlib.suppress(Exception):  # a dead server has closed its files already
                    ray.get(server.close.remote(), timeout=60)
                ray.kill(server)

    def _run(self, task: Task, items: Sequence[Any], plan: ActorPlan, server: Any) -> Iterator[Any]:
        from ray import cloudpickle  # classes defined in a script or a test pickle by value
        from ray import data as ray_data

        rows = [{"index": i, "item": cloudpickle.dumps(item)} for i, item in enumerate(items)]
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        with _quiet_data_context(ray_data.DataContext.get_current()):
            dataset = ray_data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                ChunkActor, fn_constructor_args=(task, os.getcwd(), env, server), batch_size=1,
                batch_format="numpy",
                # One chunk at a time per actor: no chunk queues behind a slow one while another
                # actor is free, and one actor meets the chunks (and the caches) in the items' order.
                compute=ray_data.ActorPoolStrategy(size=plan.actors, max_tasks_in_flight_per_actor=1),
                num_cpus=plan.num_cpus, num_gpus=plan.num_gpus or None)
            done: dict[int, Any] = {}
            following = 0
            for row in dataset.iter_rows():
                done[int(row["index"])] = pickle.loads(row["result"])
                while following in done:  # hand results on in the items' order
                    status, value = done.pop(following)
                    if status == "error":
                        raise value
                    yield value
                    following += 1

    def _ray(self) -> Any:
        if not self.address and "ray" not in sys.modules:
            # Ray's addresses are then loopback ones: a local instance that the network cannot reach.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise RayUnavailable("Ray is not installed; install it with: pip install 't2m-datasets-build[ray]'") from None
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, logging_level=logging.WARNING)
                else:  # nothing beyond loopback: no dashboard, the node on 127.0.0.1
                    ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                             logging_level=logging.WARNING)
                    self._started = True
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                raise RayUnavailable(f"could not start or reach {where}: {error}") from None
        return ray

    def close(self) -> None:
        """Stop the local instance this executor started (a cluster it connected to keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def plan_actors(task: Task, workers: int, cluster: dict[str, float]) -> ActorPlan:
    """The actor pool for `task` on a cluster with `cluster` resources (ray.cluster_resources())."""
    steps = getattr(task, "processors", ())
    num_gpus = max((float(getattr(step, "num_gpus", 0) or 0) for step in steps), default=0.0)
    actors = workers
    if num_gpus and cluster.get("GPU", 0) >= num_gpus:
        actors = min(actors, int(cluster["GPU"] // num_gpus))  # no actor waits for a GPU that never frees
    elif num_gpus:
        log.warning("the processors ask for %g GPU per worker and the Ray cluster has none: running on CPUs", num_gpus)
        num_gpus = 0.0
    limits = [step.llm.concurrency for step in steps if isinstance(getattr(step, "llm", None), LLMConfig)]
    per_actor = None
    if limits:
        endpoint = min(limits)  # requests in flight that the endpoint was configured for
        actors = max(1, min(actors, endpoint))
        per_actor = math.ceil(endpoint / actors)
    return ActorPlan(actors=max(1, actors), num_cpus=1.0, num_gpus=num_gpus, llm_concurrency=per_actor)


def share_llm_concurrency(task: Task, per_actor: int | None) -> Task:
    """`task` with each LLM processor's concurrency set to `per_actor` (a share of the endpoint's).

    Only the processors' copies sent to the actors change: concurrency is no part of a processor's
    fingerprint (LLMConfig.identity), which is checked, so the build's record and caches are the same.
    """
    steps = getattr(task, "processors", None)
    if per_actor is None or not dataclasses.is_dataclass(task) or not isinstance(steps, tuple):
        return task
    shared = []
    for step in steps:
        llm = getattr(step, "llm", None)
        if isinstance(llm, LLMConfig) and llm.concurrency != per_actor:
            copy = dataclasses.replace(step, llm=dataclasses.replace(llm, concurrency=per_actor))
            step = copy if copy.fingerprint() == step.fingerprint() else step
        shared.append(step)
    return dataclasses.replace(task, processors=tuple(shared))


class ChunkActor:
    """The callable class of the actor pool: the task set up once per actor, called per item.

    Whatever the task raises, here or in `setup()`, goes back as the item's result and is raised
    by the driver, so a user's error stays one sentence instead of a Ray actor's death.
    """

    def __init__(self, task: Task, cwd: str, env: dict[str, str], server: Any) -> None:
        self.task, self.ready, self.failure = task, False, None
        try:
            if os.path.isdir(cwd):  # relative paths mean what they mean to the driver (shared storage)
                os.chdir(cwd)
            os.environ.update(env)
            if server is not None:
                route_stores(server)
            task.setup()
            self.ready = True
        except Exception as error:  # noqa: BLE001  # raised by the driver, with its type
            self.failure = _portable(error)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = np.empty(len(batch["item"]), dtype=object)  # pickled (status, value) per item
        for i, blob in enumerate(batch["item"]):
            if self.failure is not None:
                outcome = ("error", self.failure)
            else:
                try:
                    outcome = ("ok", self.task(pickle.loads(blob)))
                except Exception as error:  # noqa: BLE001
                    outcome = ("error", _portable(error))
            results[i] = _dumps(outcome)
        return {"index": batch["index"], "result": results}

    def __del__(self) -> None:  # Ray Data deletes the callable when it ends the actor
        if self.ready:
            self.ready = False
            self.task.teardown()


def _portable(error: Exception) -> Exception:
    """`error` with the worker's traceback as a note, or a RuntimeError saying it when it cannot be
    pickled back to the driver."""
    error.add_note("raised in a Ray worker:\n" + traceback.format_exc())
    try:
        _dumps(error)
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
    return error


def _dumps(value: Any) -> bytes:
    from ray import cloudpickle

    return cloudpickle.dumps(value)


def _start_store_server(ray: Any) -> Any:
    """A StoreServer actor on this (the driver's) machine, where the local executor opens the files."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    server = ray.remote(StoreServer).options(num_cpus=0, scheduling_strategy=here).remote(os.getcwd())
    ray.get(server.pid.remote())  # started before any worker needs it
    return server


@contextlib.contextmanager
def _quiet_data_context(context: Any) -> Iterator[None]:
    """Ray Data in the items' order, without its own progress bars (the build shows one)."""
    from ray.util.debug import log_once

    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")  # its warning that they are off: said once, here, unseen
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.WARNING)  # no INFO lines on each execution's start and end
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        data_log.setLevel(level)
