"""Hyperparameter search (`mlflow run train -e tune`): Optuna trials of the train step's own loop, each a
nested child run of this one.

The data is read and encoded once (train.prepare); each trial trains a fresh model with the train step's
`fit` (its loop, its per-epoch metrics) on a recipe the TPE sampler suggests from the search space
(search_space.py), and reports its validation MCC (at the tuned threshold for two classes, what the step
ships) after every epoch to Optuna's median pruner, which stops a trial whose MCC at that epoch is below
the median of the earlier trials'. Data with several labels per text is searched on its validation
micro-F1 at per-label thresholds tuned on validation instead (tune_objective.py). Trial 0 of a new study
is the train step's own recipe as given (where the space allows it), so the search always has the default
to beat.

The parent run logs the best trial's parameters (tags `best.<name>`), its validation MCC, the trials as a
table and the figures (study_figures.py); with `register_best=true` the best trial's model goes through
the train step's own finish (threshold, export, parity, variants, registration as `challenger`) in the
best trial's run.

The study lives in an SQLite file that is an artifact of the run (`study/study.db`), logged again after
every finished trial: a search cancelled (Ctrl-C, SIGTERM) keeps its finished trials, and a search with
the same study name (`-P study_name=`, default `<registered_model_name>-<data run id>`) in the same
experiment starts from the newest such file and runs only the trials still missing from `trials`.
"""

import argparse
import copy
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
import torch
from optuna.trial import TrialState

from sentclf.cli import parse_bool
from sentclf.contract import INPUT_DATA_RUN_TAG, MODEL_VERSION_TAG, SUMMARY_TAG
from sentclf.tracking import StepCancelled, StepError, StepInputError, download_artifacts, step_run

import train as train_step
from search_space import DEFAULT_SPACE, Dimension, describe, parse_space, suggest
from study_figures import log_study_figures
from tune_objective import Objective, objective

logger = logging.getLogger("tune")

STUDY_TAG = "tune.study_name"
TRIAL_TAG = "tune.trial"
STATE_TAG = "tune.state"  # COMPLETE, PRUNED, FAILED or INTERRUPTED, on each trial's run
STUDY_ARTIFACT = "study/study.db"
RUN_ID_ATTR = "mlflow_run_id"
# The recipe parameters a trial logs: the searched ones and what passes through unchanged.
RECIPE = (
    "learning_rate",
    "layer_lr_decay",
    "epochs",
    "batch_size",
    "warmup_ratio",
    "max_train_samples",
    "max_seq_length",
    "seed",
    "patience",
    "weight_decay",
    "ema_decay",
    "pooling",
    "tune_threshold",
    "base_model",
)
# Pruning starts once this many trials have finished (with 2, the third trial can already be pruned).
PRUNER_STARTUP_TRIALS = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    train_args = train_step.parse_args  # the train step's own parameters, then the search's
    parser.add_argument("--trials", type=int, required=True, help="finished trials the study should have")
    parser.add_argument("--timeout-min", type=float, required=True, help="wall-time budget (0 = none)")
    parser.add_argument("--study-name", default="", help="default: <registered_model_name>-<data run id>")
    parser.add_argument("--register-best", type=parse_bool, required=True)
    parser.add_argument("--space", default="", help="overrides of the search space (search_space.py)")
    parser.add_argument(
        "--prune-warmup-epochs", type=int, required=True, help="no trial is pruned before this epoch"
    )
    parser.add_argument(
        "--force-prune",
        default="",
        help="TEST ONLY: comma-separated trial numbers that report a validation MCC of -1 to the pruner, so "
        "that the median pruner must prune them (the tests use it to make pruning deterministic)",
    )
    own, rest = parser.parse_known_args(argv)
    args = train_args(rest)
    for name, value in vars(own).items():
        setattr(args, name, value)
    return args


def strip_quotes(value: str) -> str:
    """MLflow shell-quotes an empty string parameter as `''`."""
    return "" if value in ("''", '""') else value


def validate_search_args(args: argparse.Namespace) -> dict[str, Dimension]:
    problems = []
    if args.trials < 1:
        problems.append(f"trials must be >= 1, got {args.trials}")
    if args.timeout_min < 0:
        problems.append(f"timeout_min must be >= 0 (0 = no time limit), got {args.timeout_min}")
    if args.prune_warmup_epochs < 1:
        problems.append(f"prune_warmup_epochs must be >= 1, got {args.prune_warmup_epochs}")
    try:
        space = parse_space(strip_quotes(args.space))
    except ValueError as error:
        problems.append(str(error))
        space = {}
    try:
        args.forced_prunes = {int(n) for n in strip_quotes(args.force_prune).split(",") if n.strip()}
    except ValueError:
        problems.append(f"force_prune must be trial numbers, comma-separated, got {args.force_prune!r}")
    if problems:
        raise StepInputError("bad parameter(s): " + "; ".join(problems))
    return space


def within(dimension: Dimension, value) -> bool:
    if dimension.kind == "choice":
        return value in dimension.choices
    return dimension.low <= value <= dimension.high


def default_recipe(args: argparse.Namespace, prepared, space: dict[str, Dimension]) -> dict:
    """The train step's recipe as given, for the dimensions whose range holds it (trial 0)."""
    given = {name: getattr(args, name) for name in DEFAULT_SPACE if name != "dropout"}
    given["dropout"] = prepared.config.hidden_dropout_prob
    return {name: value for name, value in given.items() if name in space and within(space[name], value)}


@dataclass
class Kept:
    """The best model this process trained, to register without training it again."""

    number: int
    value: float
    model: torch.nn.Module
    args: argparse.Namespace
    dropout: float


class Search:
    """The objective: one trial = one nested run of the train step's loop."""

    def __init__(self, args, prepared, space, study_name: str, data_run_id: str) -> None:
        self.args, self.prepared, self.space = args, prepared, space
        self.study_name, self.data_run_id = study_name, data_run_id
        self.kept: Kept | None = None
        self.objective = objective(prepared.multi_label, prepared.calibrate)

    def trial_args(self, params: dict) -> argparse.Namespace:
        trial_args = copy.copy(self.args)
        for name, value in params.items():
            if name != "dropout":
                setattr(trial_args, name, value)
        return trial_args

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        trial_args = self.trial_args(params)
        dropout = params["dropout"]
        forced = trial.number in self.args.forced_prunes
        aim = self.objective

        def report(epoch: int, metrics: dict) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            score = metrics[aim.epoch_metric]
            trial.report(-1.0 if forced else score, epoch)
            if epoch >= self.args.prune_warmup_epochs and trial.should_prune():
                raise optuna.TrialPruned(
                    f"epoch {epoch}: {aim.words} {score:.4f}{' (forced, test only)' if forced else ''} "
                    "below the median of the earlier trials at this epoch"
                )

        state, status = "FAILED", "FAILED"
        child = mlflow.start_run(run_name=f"trial {trial.number}", nested=True)
        try:
            trial.set_user_attr(RUN_ID_ATTR, child.info.run_id)
            mlflow.set_tags(
                {
                    STUDY_TAG: self.study_name,
                    TRIAL_TAG: str(trial.number),
                    INPUT_DATA_RUN_TAG: self.data_run_id,
                    train_step.PRECISION_TAG: self.prepared.precision,
                    train_step.LABEL_NAMES_TAG: self.prepared.label_set.names_json(),
                }
            )
            recipe = {name: getattr(trial_args, name) for name in RECIPE} | {"dropout": dropout}
            mlflow.log_params(recipe)
            logger.info("trial %d: %s", trial.number, json.dumps(params))
            model, summary = train_step.fit(self.prepared, trial_args, report, dropout)
            value = float(summary[aim.best_metric])
            state, status = "COMPLETE", "FINISHED"
        except optuna.TrialPruned:
            state, status = "PRUNED", "KILLED"
            raise
        except (StepCancelled, KeyboardInterrupt) as cancel:
            state, status = "INTERRUPTED", "KILLED"
            # Optuna marks the trial FAIL on a KeyboardInterrupt and raises it again (StepCancelled: neither).
            raise KeyboardInterrupt(str(cancel)) from None
        finally:
            mlflow.set_tag(STATE_TAG, state)
            mlflow.end_run(status)
        if self.kept is None or value > self.kept.value:
            self.kept = Kept(trial.number, value, model, trial_args, dropout)
        return value


def restore_study(study_name: str, experiment_id: str, own_run_id: str, db: Path) -> str | None:
    """Copy the newest stored file of the study into `db`; the run it came from, or None (a new study)."""
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    for run in runs:
        if run.info.run_id == own_run_id or TRIAL_TAG in run.data.tags:
            continue
        with tempfile.TemporaryDirectory(prefix="sentclf-study-") as tmp:
            try:
                stored = download_artifacts(run.info.run_id, STUDY_ARTIFACT, tmp)
            except StepInputError:
                continue  # that search ended before its first trial finished
            shutil.copyfile(stored, db)
        return run.info.run_id
    return None


def save_study(db: Path) -> None:
    mlflow.log_artifact(str(db), "study")


def fail_interrupted_trials(study: optuna.Study) -> None:
    """A trial left RUNNING by a search that was killed outright is over: FAIL, so it is not counted."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def summarize(
    study: optuna.Study, space: dict[str, Dimension], aim: Objective | None = None
) -> optuna.trial.FrozenTrial | None:
    """Best parameters as tags, the trials as a table, the figures: on the parent run. `aim`: the
    search's objective (default: validation MCC)."""
    aim = aim or objective(multi_label=False, calibrate=False)
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    mlflow.log_metrics(
        {f"trials_{name.lower()}": count for name, count in counts.items() if name != "WAITING"}
    )
    frame = study.trials_dataframe()
    if len(frame):
        with tempfile.TemporaryDirectory(prefix="sentclf-tune-") as tmp:
            path = Path(tmp) / "trials.csv"
            frame.to_csv(path, index=False)
            mlflow.log_artifact(str(path), "study")
    log_study_figures(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        logger.warning("no trial finished: no best parameters")
        return None
    best = study.best_trial
    mlflow.set_tags(
        {f"best.{name}": str(value) for name, value in best.params.items()}
        | {"best.trial": str(best.number), "best.run_id": best.user_attrs.get(RUN_ID_ATTR, "")}
    )
    mlflow.log_metric(aim.best_metric, best.value)
    mlflow.log_dict({"trial": best.number, aim.short: best.value, "params": best.params}, "study/best.json")
    logger.info(
        "best: trial %d, %s %.4f, %s (%d complete, %d pruned of %d)",
        best.number,
        aim.words,
        best.value,
        json.dumps(best.params),
        counts["COMPLETE"],
        counts["PRUNED"],
        len(trials),
    )
    return best


def register_best(search: Search, best: optuna.trial.FrozenTrial) -> str:
    """The best trial's model through the train step's finish, in the best trial's own run when this
    process trained it, else in a child run that trains it again with its parameters."""
    kept = search.kept if search.kept is not None and search.kept.number == best.number else None
    if kept is not None:
        run = mlflow.start_run(run_id=best.user_attrs[RUN_ID_ATTR], nested=True)
        model, trial_args = kept.model, kept.args
    else:
        logger.info("trial %d ran in an earlier search: training it again to register it", best.number)
        run = mlflow.start_run(run_name=f"trial {best.number} (trained again)", nested=True)
        mlflow.set_tags(
            {
                STUDY_TAG: search.study_name,
                TRIAL_TAG: f"{best.number} (again)",
                INPUT_DATA_RUN_TAG: search.data_run_id,
            }
        )
        trial_args = search.trial_args(best.params)
        model, _ = train_step.fit(
            search.prepared, trial_args, train_step.log_epoch_metrics, best.params["dropout"]
        )
    try:
        version = train_step.finish(model, search.prepared, trial_args)
        mlflow.end_run("FINISHED")
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.set_tags({MODEL_VERSION_TAG: version, "best.registered_run_id": run.info.run_id})
    return version


def run(args: argparse.Namespace) -> None:
    space = validate_search_args(args)
    prepared = train_step.prepare(args)
    # A teacher (train/distill.py) is trained or reused once; every trial distills from it.
    prepared = train_step.attach_teacher(prepared, args, train_step.fit, train_step.fit_few_shot_teacher)
    parent = mlflow.active_run()
    data_run_id = mlflow.get_run(parent.info.run_id).data.tags[INPUT_DATA_RUN_TAG]
    study_name = strip_quotes(args.study_name) or f"{args.registered_model_name}-{data_run_id}"
    mlflow.set_tags({STUDY_TAG: study_name, "tune.space": describe(space)})
    with tempfile.TemporaryDirectory(prefix="sentclf-tune-") as tmp:
        db = Path(tmp) / "study.db"
        resumed_from = restore_study(study_name, parent.info.experiment_id, parent.info.run_id, db)
        if resumed_from:
            mlflow.set_tag("tune.resumed_from", resumed_from)
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0),
        )
        fail_interrupted_trials(study)
        existing = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in existing)
        # Seeded by the trials so far: a resumed search does not draw the first search's values again.
        study.sampler = optuna.samplers.TPESampler(
            seed=args.seed + len(existing), n_startup_trials=max(2, min(10, args.trials // 3))
        )
        if not existing:
            study.enqueue_trial(default_recipe(args, prepared, space))
        remaining = args.trials - finished
        logger.info(
            "study %s: %s; %d trial(s) finished before, %d to run%s; search space: %s",
            study_name,
            f"resumed from run {resumed_from}" if resumed_from else "new",
            finished,
            max(remaining, 0),
            f", at most {args.timeout_min:g} min" if args.timeout_min else "",
            describe(space),
        )
        search = Search(args, prepared, space, study_name, data_run_id)
        try:
            if remaining > 0:
                study.optimize(
                    search,
                    n_trials=remaining,
                    timeout=args.timeout_min * 60 if args.timeout_min else None,
                    callbacks=[lambda study, trial: save_study(db)],
                    gc_after_trial=True,
                )
        finally:
            save_study(db)  # the interrupted trial is FAIL in it now
        best = summarize(study, space, search.objective)
        if args.register_best:
            if best is None:
                raise StepError("register_best: no trial finished, nothing to register")
            version = register_best(search, best)
            logger.info("registered the best trial's model as version %s (challenger)", version)
        storage.engine.dispose()
    if best is not None and math.isfinite(best.value):
        mlflow.set_tag(SUMMARY_TAG, f"best {search.objective.words} {best.value:.4f} (trial {best.number})")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", os.cpu_count() or 1)))
    optuna.logging.set_verbosity(optuna.logging.INFO)
    with step_run("tune"):
        run(args)


if __name__ == "__main__":
    main()
