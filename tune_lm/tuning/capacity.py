"""What the connected Ray can hold: a trial must fit on one of its nodes, and in memory,
or it would never start (or fail in every trial); and how many trials fit at once."""

from __future__ import annotations

import math

import ray
import torch

from tune_lm.lm.errors import ConfigError
from tune_lm.lm.memory import available_bytes, memory_problem, training_bytes
from tune_lm.tuning.space import SearchSpace


def _wanted(space: SearchSpace) -> dict[str, float]:
    return {"CPU": space.resources.cpus_per_trial, "GPU": space.resources.gpus_per_trial}


def _alive_nodes() -> list[dict[str, float]]:
    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]


def trials_at_once(space: SearchSpace) -> int:
    """How many of the space's trials the connected Ray's nodes hold at once, each node
    counted whole trials (1.5 CPUs a trial on a 2-CPU node: one). An autoscaling
    cluster's future nodes are not counted."""
    wanted = {k: v for k, v in _wanted(space).items() if v}
    return sum(min(math.floor(node.get(k, 0.0) / v + 1e-6) for k, v in wanted.items())
               for node in _alive_nodes())  # fmt: skip


def check_trial_fits(space: SearchSpace) -> None:
    """A trial must fit on one node of the Ray just started or joined, else it would stay
    PENDING for ever. (An autoscaling cluster's future nodes are not seen: start it with
    a node of the trial's size.)"""
    wanted = _wanted(space)
    nodes = _alive_nodes()
    if any(all(node.get(k, 0.0) >= v for k, v in wanted.items() if v) for node in nodes):
        return
    largest = {k: max((node.get(k, 0.0) for node in nodes), default=0.0) for k in wanted}
    flags = {"CPU": "--cpus-per-trial (resources.cpus_per_trial)",
             "GPU": "--gpus-per-trial (resources.gpus_per_trial)"}  # fmt: skip
    short = [f"{flags[k]} is {v:g} but the largest node has {largest[k]:g} {k}s"
             for k, v in wanted.items() if v and largest[k] < v]  # fmt: skip
    raise ConfigError(
        f"no Ray node can run a trial, so none would ever start: {'; '.join(short) or wanted}. "
        "Ask for less per trial, or join a cluster with larger nodes (--address)"
    )


def check_trial_memory(space: SearchSpace, ntokens: int, source: str, *,
                       on_cluster: bool) -> None:  # fmt: skip
    """The space's largest trial (over its corners) must fit in memory, or every such trial
    would fail in torch's allocator (or be killed): this machine's free memory for a local
    Ray (checked before it starts), else what Ray gives tasks on the cluster's largest
    node. GPU trials are checked on their device when they start (:mod:`lm.memory`)."""
    if space.resources.gpus_per_trial:
        return
    configs = [space.trial_config(sampled) for sampled in space.corners()]
    largest = max(configs, key=lambda config: training_bytes(config, ntokens))
    if on_cluster:
        nodes = _alive_nodes()
        memory = int(max((node.get("memory", 0.0) for node in nodes), default=0.0)) or None
        where = "the largest Ray node (the memory Ray gives its tasks)"
    else:
        memory, where = available_bytes(torch.device("cpu")), "this machine"
    problem = memory_problem(largest, ntokens, memory, where)
    if problem:
        raise ConfigError(f"{source}: the space's largest trial cannot fit: {problem}")
