"""Hyper-parameter search: trials of the one training loop on Ray Tune, drawn by Optuna, stopped early by ASHA.

`search(cfg, settings)` runs a `ray.tune.Tuner` over `run_trial`, which trains `cfg.updated(**drawn values)` with
`mtbert.fit` and reports every epoch's dev metrics; Optuna's sampler (Ray's OptunaSearch) draws each
trial's values from the search space, and asynchronous HyperBand (ASHAScheduler) stops the trials whose mean dev
score trails at an epoch. Ray places the trials on a Ray instance of this machine, or on the machines of a running
cluster (--ray_address); mtbert runs no scheduler of its own. Everything lives in --hpo_dir:

    search.json          what the search is (its trainings' settings, the space, the trials); reruns must match
    ray/                 Ray Tune's experiment state: a rerun of the command resumes from it (Tuner.restore)
    trials/ID/           a trial: params.json, train.log, history.jsonl (an epoch a line), model/, runs/, predictions/
                         (and state/, its training state while it runs: a restarted trial resumes from it)
    trials.csv           the table of trials, best first
    best.yaml            the best trial's settings: `mtbert train --config best.yaml` trains it again
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from mtbert.config import TASK_NAMES, Config, Search, changed_settings
from mtbert.data.task_files import split_file, split_files
from mtbert.errors import Interrupted, MtbertError
from mtbert.lab.runs import append_history, read_history, run_config, saved_settings
from mtbert.lab.space import Space, check_space, default_space, describe, read_space, to_tune
from mtbert.model.hub import is_hub_name
from mtbert.outputs import lock_all, readable_file, writable_dir
from mtbert.train.setup import SMOKE, run_name

log = logging.getLogger(__name__)
METRIC = "mean"  # the mean dev score of the tasks, as `train` reports it every epoch
# Path settings, made absolute for the trials (which Ray runs in other folders, and on other machines); a --model
# hub name stays a name
PATHS = (
    "model",
    "checkpoint",
    "data_dir",
    "tag_cache",
    "tasks",
    *(f"{t}_{s}" for t in TASK_NAMES for s in ("train", "dev", "test")),
)


@dataclass
class Trial:
    """A trial of a finished search: its drawn values, the dev metrics of each epoch it ran, its error if any."""

    trial_id: str
    params: dict
    history: list[dict]
    error: str | None
    folder: Path

    @property
    def best(self) -> dict:
        """The metrics of its best epoch (by the mean dev score); empty if it ran none."""
        return max(self.history, key=lambda h: h[METRIC]) if self.history else {}


@dataclass
class SearchResult:
    trials: list[Trial]  # best first
    header: list[str]  # the table of trials (table_rows), as trials.csv holds it
    rows: list[list]
    best: Trial
    table: Path  # trials.csv
    best_config: Path  # best.yaml
    best_model: Path  # the best trial's saved model folder


def search(cfg: Config, settings: Search) -> SearchResult:
    """Runs (or resumes) the search of `settings` over trainings of `cfg`; see the module's docstring."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MtbertError("--hpo places its trials with Ray: start the search with mtbert or python, not torchrun")
    tune, ray, OptunaSearch, ASHAScheduler = import_ray(settings.ray_address)
    epochs = SMOKE["epochs"] if cfg.smoketest else cfg.epochs
    space = read_space(settings.hpo_space, cfg) if settings.hpo_space else default_space(cfg)
    if not settings.hpo_space:
        check_space(space, cfg, where="the default search space")
    base = trial_base(cfg)
    root = writable_dir("--hpo_dir", Path(settings.hpo_dir).resolve())
    with lock_all([("--hpo_dir", root / "search")]):  # one driver per search
        check_same_search(root, base, space, settings.hpo_trials)
        start_ray(ray, settings.ray_address)
        try:
            resources = {"cpu": settings.hpo_cpus_per_trial, "gpu": settings.gpus_per_trial(cfg.use_gpu)}
            trainable = tune.with_resources(tune.with_parameters(run_trial, base=base, root=str(root)), resources)
            experiment = root / "ray"
            if tune.Tuner.can_restore(str(experiment)):
                log.info("resuming the search in %s", root)
                tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True)
            else:
                log.info("searching %d trials of %d epochs over %s", settings.hpo_trials, epochs, describe(space))
                scheduler = ASHAScheduler(
                    time_attr="training_iteration", max_t=epochs, grace_period=1, reduction_factor=2
                )
                tuner = tune.Tuner(
                    trainable,
                    param_space=to_tune(space),
                    tune_config=tune.TuneConfig(
                        metric=METRIC,
                        mode="max",
                        num_samples=settings.hpo_trials,
                        search_alg=OptunaSearch(seed=cfg.seed),
                        scheduler=scheduler,
                        reuse_actors=False,
                        trial_dirname_creator=trial_dirname,
                    ),
                    run_config=tune.RunConfig(
                        storage_path=str(root),
                        name=experiment.name,
                        verbose=0,
                        callbacks=[progress(settings.hpo_trials, epochs, root)],
                    ),
                )
            results = tuner.fit()
        finally:
            ray.shutdown()
    unfinished = len(results) - results.num_terminated - results.num_errors
    if unfinished or len(results) < settings.hpo_trials:
        raise Interrupted(
            f"search interrupted before its {settings.hpo_trials} trials finished; the same command resumes "
            f"it from {root}"
        )
    return finish(root, base, space, epochs, [trial_of(r, root, space) for r in results])


def import_ray(address: str | None = None) -> tuple:
    """Ray Tune and Optuna (the [hpo] extra), imported quietly: no usage-stats prompt, no banners. To join a cluster
    at `address`, Ray's token authentication (the default of `ray start` since Ray 2.59) is on where this machine
    has a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token) and RAY_AUTH_MODE does not say otherwise."""
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if address is not None and (token or Path.home().joinpath(".ray", "auth_token").is_file()):
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # read by Ray when imported
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: nothing printed per trial by Ray
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # the experiment state at most 1 s old when killed
    try:
        import optuna
        import ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as e:
        raise MtbertError(f"--hpo needs Ray Tune and Optuna ({e.name} is missing): pip install 'mtbert[hpo]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray", "ray.tune"):  # a failed trial is one line of ours (Progress), its traceback in train.log
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="The reported value is ignored")  # a restarted trial's epochs
    return tune, ray, OptunaSearch, ASHAScheduler


def start_ray(ray, address: str | None) -> None:
    """Joins the cluster at `address`, or starts a Ray instance on this machine for this search."""
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )
    except ConnectionError as e:
        raise MtbertError(
            f"--ray_address {address}: no Ray cluster answers there ({e}); start one with "
            "`ray start --head`, which prints its address"
        ) from None


def trial_base(cfg: Config) -> Config:
    """The settings every trial shares: `cfg` with absolute paths; its data files are checked now, not in every
    trial."""
    settings = cfg.settings()
    paths = {
        name: ",".join(str(Path(p).resolve()) for p in settings[name].split(","))  # (--sst_train a,b)
        for name in PATHS
        if settings[name] is not None and not (name == "model" and is_hub_name(settings[name]))
    }
    base = cfg.updated(**paths)
    for task in base.active_tasks:
        for path in split_files(base, task, "train"):
            readable_file(f"--{task}_train", path)
        readable_file(f"--{task}_dev", split_file(base, task, "dev"))
    return base


def run_trial(params: dict, base: Config, root: str) -> None:
    """One trial, in a Ray worker: trains its configuration, reporting every epoch's dev metrics to Tune. A trial
    that restarts (a resumed search) continues its training state, and first reports the epochs it had run."""
    from ray import tune

    from mtbert.fitting import fit

    folder = Path(root, "trials", tune.get_context().get_trial_id())
    cfg = run_config(base, params, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    history = read_history(folder)
    for metrics in history:
        tune.report(metrics)

    def report(metrics: dict[str, float]) -> None:
        if metrics["epoch"] <= len(history):  # an epoch reported before the restart
            return
        history.append(metrics)
        append_history(folder, metrics)
        tune.report(metrics)

    handler = logging.FileHandler(folder / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    package = logging.getLogger("mtbert")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        fit(cfg, report=report)
    except Exception:
        package.exception("the trial failed")
        raise
    finally:
        package.removeHandler(handler)
        handler.close()


def progress(trials: int, epochs: int, root: Path):
    """The callback that logs a line per finished trial (imported here: it is a ray.tune.Callback)."""
    from mtbert.lab.progress import Progress

    return Progress(trials, epochs, str(root / "trials"), METRIC)


def trial_dirname(trial) -> str:
    """Ray's folder of a trial is named by its id, as ours is (trials/ID)."""
    return trial.trial_id


def check_same_search(root: Path, base: Config, space: Space, trials: int) -> None:
    """The first run of a search writes what it is to search.json; a rerun (resuming it) must be the same search."""
    described = {"config": base.settings(), "space": {k: list(v) for k, v in space.items()}, "trials": trials}
    saved = saved_settings(root / "search.json", described)
    if saved is None:
        return
    changed = changed_settings(saved["config"], base)
    changed += ["the search space"] if saved["space"] != described["space"] else []
    changed += [f"--hpo_trials {saved['trials']} -> {trials}"] if saved["trials"] != trials else []
    if changed:
        raise MtbertError(
            f"--hpo_dir {root} holds a search with other settings ({'; '.join(changed)}); use the same "
            "flags to resume it, or another --hpo_dir for a new search"
        )


def trial_of(result, root: Path, space: Space) -> Trial:
    """A finished Ray trial, with the history its trial folder keeps."""
    trial_id = Path(result.path).name  # trial_dirname
    folder = root / "trials" / trial_id
    error = str(result.error).strip().splitlines()[-1] if result.error is not None else None
    params = {name: result.config.get(name) for name in space}
    return Trial(trial_id, params, read_history(folder), error, folder)


def finish(root: Path, base: Config, space: Space, epochs: int, trials: list[Trial]) -> SearchResult:
    """Writes the table and the best configuration, keeps the best trial's model and deletes the other models and
    every training state."""
    trials.sort(key=lambda t: -t.best[METRIC] if t.best else float("inf"))
    best = trials[0]
    if not best.history:
        raise MtbertError(
            f"no trial of the search finished an epoch; the first failure: {best.error} (see "
            f"{best.folder / 'train.log'})"
        )
    table = root / "trials.csv"
    header, rows = table_rows(trials, epochs)
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    best_config = root / "best.yaml"
    write_settings(best_config, base.updated(**best.params))
    for trial in trials:
        shutil.rmtree(trial.folder / "state", ignore_errors=True)
        if trial is not best:
            shutil.rmtree(trial.folder / "model", ignore_errors=True)
    trained = run_config(base, best.params, best.folder)
    best_model = Path(trained.save_dir) / run_name(trained)
    return SearchResult(trials, header, rows, best, table, best_config, best_model)


def table_rows(trials: list[Trial], epochs: int) -> tuple[list[str], list[list]]:
    """The table of trials: id, drawn values, the best epoch's mean and task metrics, epochs run, stopped early."""
    params = list(trials[0].params)
    metrics = list(dict.fromkeys(k for t in trials for k in t.best if "/" in k))  # in the order of the tasks
    errors = ["error"] if any(t.error for t in trials) else []
    header = ["trial", *params, METRIC, *metrics, "best_epoch", "epochs", "stopped_early", *errors]
    rows = []
    for t in trials:
        best = t.best
        rows.append(
            [
                t.trial_id,
                *(t.params[p] for p in params),
                best.get(METRIC),
                *(best.get(m) for m in metrics),
                best.get("epoch"),
                len(t.history),
                t.error is None and len(t.history) < epochs,
                *([t.error or ""] if errors else []),
            ]
        )
    return header, rows


def write_settings(path: Path, cfg: Config) -> None:
    """`cfg` as a --config file: the settings that differ from the defaults."""
    import yaml

    defaults = Config().settings()
    settings = {name: value for name, value in cfg.settings().items() if value != defaults[name]}
    path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
