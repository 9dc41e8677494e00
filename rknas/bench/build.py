"""``rknas bench build``: draw architectures from a space, train each with one recipe, append to a table.

The draw is uniform over the space's architecture knobs (Optuna's ``RandomSampler`` through the
space's own ``sample``, so a table architecture is exactly what a search could propose),
seeded, with the space's ``start_from`` models first. Runs are Ray tasks, one per
(architecture, seed), on every CPU or GPU of the cluster; each finished run is appended in
one transaction, so an interrupted build continues with the same command.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import optuna
import torch

from rknas.bench.table import BenchTable, EpochRow
from rknas.data.core import TensorData, load_dataset, normalizer, split
from rknas.data.download import ensure_dataset
from rknas.errors import ConfigError
from rknas.events import BenchEvents, bench_listener
from rknas.models.counting import count_network
from rknas.models.network import build_network
from rknas.options import BenchBuildOptions
from rknas.search.space import Range, SearchSpace, load_space
from rknas.search.warmstart import start_params
from rknas.train import evaluate, fit, resolve_channels_last, resolve_precision, seed_everything

DRAW_ATTEMPTS = 50  # draws per wanted architecture before the space is taken to hold no more


def check_recipe(space: SearchSpace) -> None:
    """A bench space fixes its training: every run of a table trains with the same recipe.

    Raises:
        ConfigError: A training setting is a choice or a range.
    """
    training: Any = space.training
    searched = [k for k in type(training).model_fields if isinstance(getattr(training, k), (list, Range))]
    if searched:
        raise ConfigError(f"space {space.name!r}: a bench space fixes every training setting, but training."
                          f"{', training.'.join(searched)} {'is' if len(searched) == 1 else 'are'} searched; give one value each")


def table_settings(space: SearchSpace, opts: BenchBuildOptions, epochs: int) -> dict[str, Any]:
    """What defines a table: a build with other settings must not append to it.

    Neither ``--archs`` nor ``--seeds`` is a setting: more of either continues the table.
    """
    return {"space": space.model_dump(mode="json", exclude={"description"}), "epochs": epochs, "draw_seed": opts.seed}


def today_settings(stored: dict[str, Any]) -> dict[str, Any]:
    """A table's stored settings read through today's space schema, so a key added since it was built is no difference."""
    try:
        space = SearchSpace.model_validate(stored["space"]).model_dump(mode="json", exclude={"description"})
    except Exception:  # a space today's schema cannot read: compared as stored, its differences named
        return stored
    return {**stored, "space": space}


def space_data(space: SearchSpace, data_root: Optional[str], download: bool) -> tuple[TensorData, TensorData, TensorData]:
    """The space's training, validation and test sets; fills in the space's classes, channels and image size.

    Raises:
        RknasError: The data set is missing (and not downloaded).
    """
    if data_root is not None:
        space.data.root = data_root
    ensure_dataset(space.data, download=download)
    full, test = load_dataset(space.data)
    train, val = split(full, space.data.val_fraction, space.data.split_seed, space.data.train_subset)
    space.classes = space.classes or full.classes
    space.in_channels = space.in_channels or full.in_channels
    space.image_size = space.image_size or full.image_size
    return train, val, test


def draw_architectures(space: SearchSpace, n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` distinct architectures of ``space``: its start_from models, then uniform draws.

    Args:
        space: The bench space (data already loaded into it, for image sizes).
        n: How many.
        seed: The draw's seed.

    Returns:
        ``(source, params)`` pairs; ``params`` holds every parameter a search would propose
        (and the constants), so ``space.configs(params)`` builds the network. Fewer than
        ``n`` when the space holds fewer distinct architectures.
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    starts = start_params(space)
    for p in starts:
        study.enqueue_trial(p)
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i in range(n * DRAW_ATTEMPTS):
        if len(out) >= n:
            break
        trial = study.ask()
        fixed = space.sample(trial)
        params = {**fixed, **trial.params}
        network, _ = space.configs(params)
        key = network.model_dump_json()
        study.tell(trial, 0.0)
        if key in seen:
            continue
        limit = space.constraints
        if not limit.unlimited:
            if not limit.admits(*count_network(network)):
                continue
        seen.add(key)
        out.append(("start_from" if i < len(starts) else "sampled", params))
    return out


def arch_rows(space: SearchSpace, drawn: list[tuple[str, dict[str, Any]]]) -> list[tuple]:
    """``BenchTable.add_archs`` rows for drawn architectures: their configs, params and FLOPs."""
    rows = []
    for source, params in drawn:
        network, _ = space.configs(params)
        rows.append((source, params, network.model_dump(mode="json"), *count_network(network)))
    return rows


def _run(space_dict: dict, params: dict, seed: int, epochs: int, data: tuple[TensorData, TensorData, TensorData],
         cpus: float, gpus: float, plugins: Optional[dict]) -> dict[str, Any]:
    """One (architecture, seed) run in a Ray worker: its curve, with test accuracy after every epoch."""
    from rknas.search.objective import error_reason, pick_device, prepare_worker

    space = prepare_worker(space_dict, plugins, cpus)
    train, val, test = data
    device = pick_device(gpus)
    network, training = space.configs(params, seed=seed, epochs=epochs)
    seed_everything(training.seed)
    model = build_network(network)
    mean, std = normalizer(train)
    test_d = test.to(device)
    precision = resolve_precision(training.precision, device)
    channels_last = resolve_channels_last(training.channels_last, device)
    rows: list[dict[str, Any]] = []
    # The clock a replay's simulated time is made of. On a CPU with one thread per run it is the
    # worker's CPU time, which other work on the machine does not inflate (wall time would: a
    # table built beside other jobs would make some architectures look slow); on a GPU, wall time.
    clock = time.process_time if device == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    t0 = clock()
    test_s = 0.0  # the per-epoch test evaluation is the table's, not the trial's: left out of the time

    def on_epoch(epoch: int, metrics: dict) -> None:
        nonlocal test_s
        train_s = clock() - t0 - test_s
        t1 = clock()
        ev = evaluate(model, test_d, mean.to(device), std.to(device), precision=precision, channels_last=channels_last)
        test_s += clock() - t1
        rows.append({"epoch": epoch, "val_accuracy": metrics["val_accuracy"], "test_accuracy": ev["accuracy"],
                     "train_loss": metrics.get("train_loss"), "wall_s": train_s, "val_loss": metrics.get("val_loss")})

    try:
        fit(network, training, train, val, device=device, on_epoch=on_epoch, model=model)
    except FloatingPointError as exc:
        return {"rows": rows, "status": "diverged", "error": str(exc).splitlines()[0][:300]}
    except Exception as exc:
        return {"rows": rows, "status": "failed", "error": error_reason(exc)}
    return {"rows": rows, "status": "ok", "error": None}


def build_table(opts: BenchBuildOptions) -> dict[str, Any]:
    """Build (or continue) a benchmark table.

    Args:
        opts: The build's options.

    Returns:
        A summary: ``path``, ``archs``, ``seeds``, ``epochs``, ``runs``, ``new_runs``,
        ``failed``, ``train_s`` (training time of every run in the table), ``wall_s``.

    Raises:
        RknasError: A bad space (a searched training setting), missing data, a table built with
            other settings, or an unusable Ray cluster; nothing is written then.
    """
    t_start = time.time()
    events = bench_listener(opts.on_event)  # a listener, or a plain (kind, data) callable as the options say
    space = load_space(opts.space)
    check_recipe(space)
    epochs = opts.epochs or space.fidelity.epochs
    train, val, test = space_data(space, opts.data_root, opts.download)
    drawn = draw_architectures(space, opts.archs, opts.seed)
    if len(drawn) < opts.archs:
        raise ConfigError(f"space {space.name!r} holds only {len(drawn)} distinct architectures (within its constraints); "
                          f"ask for --archs {len(drawn)} or widen the space")
    settings = table_settings(space, opts, epochs)
    with BenchTable.create(opts.out, settings, normalize=today_settings) as table:
        table.add_archs(arch_rows(space, drawn))
        archs = table.archs()[: opts.archs]
        done = table.done()
        todo = [(a, s) for a in archs for s in range(opts.seeds) if (a.arch, s) not in done]
        new, failed = _train_all(opts, space, table, todo, (train, val, test), epochs, events,
                                 runs=len(archs) * opts.seeds, archs=len(archs))
        recorded = table.runs()
        train_s = sum(wall for *_, wall in recorded)
        failed += sum(status != "ok" for _, _, status, _ in recorded) - failed
        return {"path": str(opts.out), "archs": len(archs), "seeds": opts.seeds, "epochs": epochs,
                "runs": len(table.done()), "new_runs": new, "failed": failed, "train_s": float(train_s),
                "wall_s": time.time() - t_start}


def _train_all(opts: BenchBuildOptions, space: SearchSpace, table: BenchTable, todo: list, data: tuple, epochs: int,
               events: BenchEvents, runs: int, archs: int) -> tuple[int, int]:
    """Run ``todo`` on Ray, appending each run as it finishes; returns (runs appended, of them not ok)."""
    import ray

    from rknas.plugins import plugin_env
    from rknas.search import ray_env

    ray_env.start_ray(opts.address)
    concurrency = ray_env.check_resources(opts.cpus_per_trial, opts.gpus_per_trial)
    events.start(table=str(opts.out), archs=archs, seeds=opts.seeds, epochs=epochs, runs=runs, done=runs - len(todo),
                 concurrency=concurrency)
    remote = ray.remote(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial, max_retries=2)(_run)
    data_ref = ray.put(data)
    space_dict = space.model_dump(mode="json")
    pending: dict[Any, Any] = {}
    queue = list(todo)
    new = failed = 0
    try:
        while queue or pending:
            while queue and len(pending) < concurrency:
                arch, seed = queue.pop(0)
                ref = remote.remote(space_dict, arch.sampled, seed, epochs, data_ref, opts.cpus_per_trial,
                                    opts.gpus_per_trial, plugin_env())
                pending[ref] = (arch, seed)
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                arch, seed = pending.pop(ref)
                out = ray.get(ref)
                rows = [EpochRow(**r) for r in out["rows"]]
                table.add_run(arch.arch, seed, rows, out["status"], out["error"])
                new += 1
                failed += out["status"] != "ok"
                final = rows[-1].test_accuracy if rows and out["status"] == "ok" else 0.0
                events.run_end(arch=arch.arch, seed=seed, params=arch.params, status=out["status"], test_accuracy=final,
                               train_s=rows[-1].wall_s if rows else 0.0)
    finally:
        for ref in pending:  # interrupted: the runs in flight are dropped, the next build runs them again
            ray.cancel(ref, force=True)
    return new, failed
