"""The `mtbert` command line: train, tune, ablate, evaluate, predict, synth, serve, export, report, encode, data
fetch (COMMANDS: each subcommand with its flags and its handler)."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from mtbert.config import (
    TASK_FLAGS,
    TASK_NAMES,
    TASK_TITLES,
    Config,
    Search,
    add_config_argument,
    add_config_arguments,
    add_config_file_argument,
    config_from_args,
    file_settings,
)
from mtbert.errors import MtbertError
from mtbert.model.tasks import TASKS
from mtbert.outputs import readable_file, writable_file

log = logging.getLogger("mtbert")
TRAIN_HELP = "Fine-tune one BERT encoder on SST-5 sentiment, Quora paraphrase and STS similarity at once."
TUNE_HELP = (
    "Search hyper-parameters: --hpo_trials trainings with the flags given and values drawn by Optuna from the search "
    "space (the default one, or --hpo_space), the poor ones stopped early by ASHA, on Ray Tune; the same as `mtbert "
    "train --hpo`. Prints and saves the table of trials and the best settings as a --config file (docs/search.md)."
)


CHECKPOINT_HELP = (
    "model folder saved by `mtbert train`; several, comma-separated: their ensemble (the mean of their head outputs)"
)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one short usage line and the error, not the whole usage of the flags."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"usage: {self.prog} [options]; see {self.prog} --help\n{self.prog}: error: {message}\n")
        raise SystemExit(2)


def train_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The training flags (also those of the original project's multitask_classifier.py)."""
    parser = Parser(prog=prog, description=TRAIN_HELP)
    add_train(parser)
    parser.set_defaults(command_parser=parser, run=run_train)
    return parser


def add_train(parser: argparse.ArgumentParser) -> None:
    add_config_file_argument(parser)
    add_config_arguments(parser)
    add_config_arguments(parser, Search)


def add_evaluate(ev: argparse.ArgumentParser) -> None:
    ev.add_argument(
        "--checkpoint",
        required=True,
        help=CHECKPOINT_HELP,
    )
    ev.add_argument(
        "--split",
        choices=("dev", "test"),
        default="dev",
        help="which files to score: the dev files, or test files with labels given with --sst_test, --para_test, "
        "--sts_test (the course's test files have none)",
    )
    add_task_files(ev)
    add_model_use(ev)


def add_task_files(parser: argparse.ArgumentParser, outputs: bool = False) -> None:
    """--data_dir and training's flags of each task's dev and test file (each in place of the --data_dir one);
    `outputs`: also those of the files their predictions are written to."""
    parser.add_argument("--data_dir", default="data", help="folder with the CS224N CSV files")
    for task in TASK_NAMES:
        for split in ("dev", "test"):
            add_config_argument(parser, f"{task}_{split}", with_default=True)
            if outputs:
                add_config_argument(parser, f"{task}_{split}_out", with_default=True)


def task_files(args: argparse.Namespace) -> Config:
    """A Config of the task file flags given (add_task_files), for split_file to find each task's files."""
    return Config.from_settings({k: v for k, v in vars(args).items() if k in TASK_FLAGS or k == "data_dir"})


def add_score(sc: argparse.ArgumentParser) -> None:
    sc.add_argument(
        "predictions",
        metavar="DIR",
        help="a folder of prediction files in the original project's layout, {task}-{split}-output.csv (what "
        "training writes to predictions/)",
    )
    sc.add_argument("--split", choices=("dev", "test"), default="dev", help="which labelled files to score against")
    add_task_files(sc)


def run_score(args: argparse.Namespace) -> None:
    """The metrics of saved prediction files against the labelled files, as JSON."""
    import numpy as np

    from mtbert.data.files import read_examples, read_predictions
    from mtbert.data.task_files import split_file
    from mtbert.inference.evaluate import mean_score

    files = task_files(args)
    metrics = {}
    for task in TASK_NAMES:
        spec = TASKS[task]
        found = Path(args.predictions) / f"{task}-{args.split}-output.csv"
        if not found.is_file():
            log.warning("%s: no such file, so no %s metric", found, task)
            continue
        path = split_file(files, task, args.split)
        examples = read_examples(path, spec.text_columns, spec.label_column, spec.parse_label, True)
        predicted = read_predictions(found)
        missing = [i for i in examples.ids if i not in predicted]
        if missing:
            raise MtbertError(f"{found}: no prediction for {len(missing)} rows of {path} (the first: id {missing[0]})")
        values = np.array([predicted[i] for i in examples.ids])
        metrics[f"{task}/{spec.metric_name}"] = spec.metric(values, np.asarray(examples.labels))
    if not metrics:
        raise MtbertError(f"{args.predictions}: no prediction files ({{task}}-{args.split}-output.csv) to score")
    if len(metrics) == len(TASK_NAMES):
        metrics["mean"] = mean_score(metrics)
    print(json.dumps(metrics, indent=2))


def add_ensemble(en: argparse.ArgumentParser) -> None:
    en.add_argument("models", nargs="+", metavar="MODEL", help="model folders saved by `mtbert train`")
    add_task_files(en, outputs=True)
    add_model_use(en)


def add_model_use(parser: argparse.ArgumentParser) -> None:
    """The flags of a command that runs a saved model: where, at what precision, with which tag cache."""
    parser.add_argument("--use_gpu", action="store_true", help="run on CUDA")
    add_config_argument(parser, "precision", with_default=True)
    add_config_argument(parser, "tag_cache", with_default=True)


def add_predict(pr: argparse.ArgumentParser) -> None:
    pr.add_argument(
        "--checkpoint",
        required=True,
        help=CHECKPOINT_HELP,
    )
    pr.add_argument(
        "--task", required=True, help="which head to use: sst, para, sts, or a task the model declared (--tasks)"
    )
    pr.add_argument(
        "--input",
        required=True,
        help='a CS224N CSV file, JSON lines (objects with the task\'s text columns: "sentence" or "text"; '
        '"sentence1" and "sentence2"; optionally "id"), or plain text with one example per line (pairs: two '
        "sentences separated by a tab); - reads stdin",
    )
    pr.add_argument(
        "--column",
        help="read a table with a header (tab- or comma-separated): the text column(s) to predict "
        "on, comma-separated for a pair task (sentence1,sentence2); its `id` column (if any) gives the ids",
    )
    pr.add_argument("--output", default="-", help="where to write the predictions (default: stdout)")
    pr.add_argument(
        "--format",
        choices=("original", "jsonl", "csv"),
        default="original",
        help="original: the original project's `id , prediction` lines; jsonl: a JSON object per example with its "
        "texts, label and probabilities (SST: all five; Quora: of a paraphrase) or similarity; csv: the same as CSV",
    )
    add_model_use(pr)


def add_export(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("--checkpoint", required=True, help="model folder saved by `mtbert train`")
    ex.add_argument("--out", required=True, help="the folder to write (new, or empty)")


def add_report(rp: argparse.ArgumentParser) -> None:
    rp.add_argument("runs", nargs="+", metavar="RUN", help="a run's TensorBoard folder, or a folder of them (--logdir)")
    rp.add_argument("--out", default="report", help="the folder to write report.md and dev-metrics.png to")


def add_encode(en: argparse.ArgumentParser) -> None:
    en.add_argument("sentences", nargs="*", help="sentences to embed")
    en.add_argument("--input", help="a text file of sentences to embed, one per line (- reads stdin)")
    en.add_argument("--column", help="read --input as a table with a header (.csv, .tsv): the column to embed")
    en.add_argument(
        "--model",
        default=None,
        help="BERT checkpoint folder or hub name, org/name[@rev] (default: packaged MiniLM)",
    )


def add_data(data: argparse.ArgumentParser) -> None:
    fetch = data.add_subparsers(dest="data_command", required=True).add_parser(
        "fetch", help="download the CS224N CSV files (or copy a local mirror) and validate them"
    )
    fetch.add_argument(
        "--source",
        default=None,
        help="URL or folder to fetch from (default: the original project's data/ folder on GitHub; "
        "the CS224N release: https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data)",
    )
    fetch.add_argument("--dest", default="data", help="folder to write to")
    fetch.set_defaults(command_parser=fetch)


def add_synth(sy: argparse.ArgumentParser) -> None:
    from mtbert.lab.synth_config import SynthConfig

    add_config_arguments(sy, SynthConfig)


def add_serve(se: argparse.ArgumentParser) -> None:
    from mtbert.serve.http import Limits

    se.add_argument(
        "--checkpoint",
        required=True,
        help=CHECKPOINT_HELP,
    )
    se.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    se.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    add_model_use(se)
    add_config_arguments(se, Limits)


def add_pretrain(pt: argparse.ArgumentParser) -> None:
    from mtbert.train.mlm import Pretraining

    add_config_arguments(pt, Pretraining)


def run_pretrain(args: argparse.Namespace) -> None:
    from mtbert.train.mlm import Pretraining, pretrain

    out = pretrain(config_from_args(args.command_parser, args, Pretraining))
    print(f"wrote {out}: train on it with --model {out}")


def add_ablate(ab: argparse.ArgumentParser) -> None:
    from mtbert.lab.ablate import Ablation

    add_config_file_argument(ab)
    add_config_arguments(ab)
    add_config_arguments(ab, Ablation)


def run_serve(args: argparse.Namespace) -> None:
    from mtbert.serve.http import Limits, serve

    limits = config_from_args(args.command_parser, args, Limits)
    predictor = load_predictor(args)
    print(
        f"serving {args.checkpoint} ({', '.join(predictor.tasks)}) on http://{args.host}:{args.port} (API docs: "
        f"/docs); Ctrl-C stops",
        flush=True,
    )
    serve(predictor, args.host, args.port, limits, "+".join(Path(f).name for f in args.checkpoint.split(",") if f))


def run_ablate(args: argparse.Namespace) -> None:
    from mtbert.lab.ablate import Ablation, ablate

    parser = args.command_parser
    file = file_settings(args)  # read once for both
    result = ablate(config_from_args(parser, args, file=file), config_from_args(parser, args, Ablation, file))
    print(result.table.read_text(encoding="utf-8"), end="")
    print(f"wrote {result.table} and {result.plot} ({result.trained} runs trained now)")


def run_synth(args: argparse.Namespace) -> None:
    from mtbert.data.synthetic import LABEL_WORDS
    from mtbert.lab.synth import synthesize
    from mtbert.lab.synth_config import SynthConfig

    cfg = config_from_args(args.command_parser, args, SynthConfig)
    report = synthesize(cfg)
    removed = ", ".join(f"{name} {n}" for name, n in report.filtered.removed.items())
    per_label = [sum(label == y for _, label in report.filtered.kept) for y in range(len(LABEL_WORDS))]
    print(
        f"generated {report.generated} sentences (fitting {report.fit_seconds:.0f} s, generating "
        f"{report.sample_seconds:.0f} s); removed: {removed}"
    )
    print(f"wrote {len(report.filtered.kept)} to {report.written} (per label 0-4: {' / '.join(map(str, per_label))})")
    print(f"train on them: mtbert train --sst_train {cfg.train_file},{report.written}")


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, the function that adds its flags, the function that runs it."""

    help: str
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    description: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mtbert", description=__doc__.split(":")[0] + ".")
    parser.add_argument("--version", action="version", version=f"mtbert {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command_parser = sub.add_parser(name, help=command.help, description=command.description)
        command_parser.set_defaults(command_parser=command_parser, run=command.run)
        command.add(command_parser)
    return parser


def package_version() -> str:
    """The installed package's version; a source tree run with PYTHONPATH=src has none."""
    try:
        return version("mtbert")
    except PackageNotFoundError:
        return "(not installed: run from a source tree)"


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> None:
    """Runs a subcommand; bad input (MtbertError) prints one line naming its cause and exits with code 2.

    `parser` replaces the subcommand parser with a train-only one (the original multitask_classifier.py).
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = parser or build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else list(argv))
    try:
        args.run(args)
    except MtbertError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except BrokenPipeError:  # stdout closed early (`mtbert encode ... | head -1`): a quiet end, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        raise SystemExit(0) from None
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO):
            raise
        print(f"error: {e.filename or 'writing'}: {e.strerror}", file=sys.stderr)
        raise SystemExit(2) from None


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parses argv; an unknown flag is reported by the subcommand's parser, with its usage."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def run_train(args: argparse.Namespace, search: bool = False) -> None:
    """Trains once, or (--hpo, `mtbert tune`) runs a search of trainings."""
    if search:  # `mtbert tune`: --hpo without saying so
        args.hpo = True
    file = file_settings(args)  # read once for both
    cfg = config_from_args(args.command_parser, args, file=file)
    settings = config_from_args(args.command_parser, args, Search, file)
    if settings.hpo:
        return run_search(cfg, settings)
    from mtbert.fitting import fit

    history: list[dict[str, float]] = []
    best = fit(cfg, report=history.append)
    if not history:  # a torchrun rank other than 0, or a resumed run that had finished
        return
    print(format_table(history))
    print(f"best: epoch {best['epoch']}, " + ", ".join(f"{k} {v:.3f}" for k, v in best.items() if "/" in k))


def format_table(history: list[dict[str, float]]) -> str:
    """The dev metrics of every epoch as a plain-text table (with a mixture's share of sentences per expert)."""
    shares = [k for k in history[0] if k.endswith("_share")]
    keys = ["train_loss"] + [k for k in history[0] if "/" in k] + ["mean", *shares, "train_seconds", "seconds"]
    rows = [
        [str(int(h["epoch"]))] + [f"{h[k]:.1f}" if k.endswith("seconds") else f"{h[k]:.3f}" for k in keys]
        for h in history
    ]
    return "\n".join(["dev metrics per epoch:", columns(["epoch", *keys], rows)])


def columns(head: list[str], rows: list[list[str]]) -> str:
    """Rows of strings as right-aligned columns under their head."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows])


def run_search(cfg: Config, settings: Search) -> None:
    from mtbert.lab.hpo import search

    if cfg.resume is not None:
        raise MtbertError(
            "--hpo with --resume: every trial keeps its own training state in --hpo_dir, and the same "
            "command resumes an interrupted search; leave out --resume"
        )
    result = search(cfg, settings)
    shown = [
        [
            cell
            if isinstance(cell, str)
            else "-"
            if cell is None
            else f"{cell:.3g}"
            if isinstance(cell, float)
            else str(cell)
            for cell in row
        ]
        for row in result.rows
    ]
    best = result.best.best
    print(f"trials, best first ({result.table}):")
    print(columns(result.header, shown))
    print(
        f"best: trial {result.best.trial_id}, mean dev score {best['mean']:.3f} at epoch {int(best['epoch'])}; its "
        f"model: {result.best_model}"
    )
    print(f"train it again: mtbert train --config {result.best_config}")


def run_evaluate(args: argparse.Namespace) -> None:
    predictor = load_predictor(args)
    print(json.dumps(predictor.evaluate(labelled_files(args, predictor, args.split), progress=True), indent=2))


def labelled_files(args: argparse.Namespace, predictor, split: str) -> dict:  # -> {task: TaskData}
    """The labelled `split` files of the predictor's tasks, read for its model: those given by their flags
    (--{task}_{split}) where any is, else every task's in --data_dir."""
    from mtbert.data.task_files import split_file

    files = task_files(args)
    named = [t for t in predictor.tasks if t in TASK_NAMES and getattr(args, f"{t}_{split}", None)]
    data = {}
    for task in named or predictor.tasks:
        path = split_file(files, task, split)
        # the course has no Quora test file, say; a declared task's file may not be where it was when it trained
        if (split == "test" or task not in TASK_NAMES) and (path is None or not path.exists()):
            log.warning("%s: no such file, so no %s %s metrics", path or "(none declared)", task, split)
            continue
        d = predictor.read(task, path, require_labels=False)
        if d.labels is None:
            log.warning("%s has no labels: use `mtbert predict` for its predictions", d.examples.path)
        else:
            data[task] = d
    if not data:
        raise MtbertError(
            f"no labelled {split} files to score (test files of the course have no labels: give labelled ones "
            "with --sst_test, --para_test, --sts_test)"
            if split == "test"
            else f"no labelled dev files to score (--data_dir {args.data_dir})"
        )
    return data


def run_ensemble(args: argparse.Namespace) -> None:
    """Each model's dev metrics and the ensemble's, as a table; the ensemble's dev and test predictions written."""
    from mtbert.data.files import write_predictions
    from mtbert.data.task_files import split_file
    from mtbert.inference.evaluate import predictions_of, scores
    from mtbert.serve.predictor import Predictor

    ensemble = load_predictor(argparse.Namespace(**{**vars(args), "checkpoint": ",".join(args.models)}))
    members = ensemble.model.members if len(args.models) > 1 else [ensemble.model]
    dev = labelled_files(args, ensemble, "dev")
    files = task_files(args)
    test = {}
    for task in ensemble.tasks:
        path = split_file(files, task, "test")
        if path is not None and path.is_file():
            test[task] = ensemble.read(task, path, require_labels=False)
        else:
            log.warning("%s: no such file, so no %s test predictions", path, task)
    rows, mean = [], {}
    for name, member in zip(args.models, members, strict=True):
        raw = Predictor(member, ensemble.tokenizer, ensemble.tagger, ensemble.precision).outputs(dev, progress=True)
        mean = {t: mean.get(t, 0) + out / len(members) for t, out in raw.items()}
        rows.append((name, predictions_of(raw)))
    rows.append(("ensemble", predictions_of(mean)))
    tasks = TASK_NAMES + tuple(t for t in ensemble.tasks if t not in TASK_NAMES)
    table = [[name, *metric_cells(scores(found, dev), tasks)] for name, found in rows]
    print(columns(["model", *(TASK_TITLES.get(t, t) for t in tasks), "mean"], table))
    written = {"dev": (dev, rows[-1][1]), "test": (test, predictions_of(ensemble.outputs(test, progress=True)))}
    for split, (data, found) in written.items():
        for task, values in found.items():
            out = prediction_path(args, task, split)
            write_predictions(out, TASKS[task].prediction_header, data[task].examples.ids, TASKS[task].written(values))
            log.info("wrote %s", out)


def prediction_path(args: argparse.Namespace, task: str, split: str) -> str:
    """Where a task's predictions go: its --{task}_{split}_out flag, a declared task's file beside SST's."""
    if task in TASK_NAMES:
        return getattr(args, f"{task}_{split}_out")
    return str(Path(args.sst_dev_out).parent / f"{task}-{split}-output.csv")


def metric_cells(metrics: dict[str, float], tasks: tuple[str, ...] = TASK_NAMES) -> list[str]:
    """A table row's cells: each task's main metric (blank where it has none), then the mean."""
    cells = []
    for task in tasks:
        key = f"{task}/{TASKS[task].metric_name}"
        cells.append(f"{metrics[key]:.3f}" if key in metrics else "")
    return [*cells, f"{metrics['mean']:.3f}" if "mean" in metrics else ""]


def run_predict(args: argparse.Namespace) -> None:
    from mtbert.outputs import atomic_write_bytes
    from mtbert.serve.predictor import results
    from mtbert.serve.rows import format_rows, read_rows, read_table, refuse_table

    if args.output != "-":
        writable_file("--output", args.output)  # before the model is loaded and the sentences encoded
    predictor = load_predictor(args)
    if args.task not in predictor.tasks:
        raise MtbertError(
            f"--task {args.task}: {args.checkpoint} was not trained on it (it has {', '.join(predictor.tasks)})"
        )
    spec = TASKS[args.task]
    text, source = read_input(args.input), "stdin" if args.input == "-" else args.input
    header = [h.strip() for h in text.split("\n", 1)[0].split("\t")]
    if args.column:
        names = [c.strip() for c in args.column.split(",")]
        if len(names) != len(spec.text_columns):
            raise MtbertError(f"--column {args.column}: {args.task} reads {len(spec.text_columns)} text column(s)")
        ids, columns = read_table(text, names, source)
        data = predictor.data(args.task, columns, ids)
    elif args.input != "-" and all(c in header for c in ("id", *spec.text_columns)):  # a CS224N file
        data = predictor.read(args.task, Path(args.input), require_labels=False)
        ids, columns = data.examples.ids, data.examples.texts
    else:
        refuse_table(source, text, "--column")
        ids, columns = read_rows(text, args.task, source)
        data = predictor.data(args.task, columns, ids)
    found = results(args.task, predictor.outputs({args.task: data}, progress=True)[args.task])
    lines = format_rows(args.task, ids, columns, found, args.format)
    if args.output == "-":
        for line in lines:
            print(line)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(args.output), "".join(f"{line}\n" for line in lines).encode("utf-8"))


def load_predictor(args: argparse.Namespace):  # -> mtbert.serve.predictor.Predictor
    """The model of --checkpoint on its device (--use_gpu), with its tokenizer and, for a model trained with tags,
    the tagger that tags new input as its training data was."""
    from mtbert.serve.predictor import load
    from mtbert.train.distributed import pick_device

    folders = [f for f in args.checkpoint.split(",") if f]
    return load(folders, pick_device(args.use_gpu), args.precision, args.tag_cache)


def read_input(source: str) -> str:
    """The text of --input: a file, or standard input for `-`."""
    return sys.stdin.read().removeprefix("\ufeff") if source == "-" else _read_text(Path(source))


def _read_text(path: Path) -> str:
    path = readable_file("--input", path)
    try:
        return path.read_text(encoding="utf-8-sig")  # (a byte-order mark, as some editors write, is dropped)
    except UnicodeDecodeError as e:
        raise MtbertError(f"{path}: not UTF-8 text ({e})") from None


def run_encode(args: argparse.Namespace) -> None:
    from mtbert.serve.embedding import encode
    from mtbert.serve.rows import read_table, refuse_table, text_lines

    if bool(args.sentences) == (args.input is not None):
        raise MtbertError("give the sentences to embed as arguments or with --input FILE (one of the two)")
    sentences = args.sentences
    if args.input is not None:
        text, source = read_input(args.input), "stdin" if args.input == "-" else args.input
        if args.column:
            sentences = read_table(text, [args.column], source)[1][0]
        else:
            refuse_table(source, text, "--column", tabs=True)
            sentences = [line.strip() for _, line in text_lines(text, source)]
        if not sentences:
            raise MtbertError(f"{args.input}: no sentences to embed")
    for vector in encode(sentences, model=args.model, progress=True):
        print(json.dumps([round(x, 6) for x in vector.tolist()]))


def run_export(args: argparse.Namespace) -> None:
    from mtbert.serve.export import export

    print(f"wrote {export(args.checkpoint, args.out)}: transformers.AutoModel.from_pretrained loads it")


def run_report(args: argparse.Namespace) -> None:
    from mtbert.lab.report import report

    table, picture = report(args.runs, Path(args.out))
    print(table.read_text(encoding="utf-8"), end="")
    print(f"wrote {table} and {picture}")


def run_fetch(args: argparse.Namespace) -> None:
    from mtbert.data.task_data import fetch_data

    for path in fetch_data(args.source, Path(args.dest)):
        print(f"ok {path}")


COMMANDS = {
    "train": Command("train the multitask model (the original project's flags)", add_train, run_train, TRAIN_HELP),
    "tune": Command(
        "search hyper-parameters: `mtbert train --hpo` (Ray Tune, Optuna, ASHA)",
        add_train,
        lambda args: run_train(args, search=True),
        TUNE_HELP,
    ),
    "ablate": Command(
        "the ablation table: each feature's row over several seeds, mean ± std",
        add_ablate,
        run_ablate,
        "Train the ablation rows (baseline: the flags given; then each with one feature added: tag embeddings, "
        "synthetic SST data, SophiaH, gradual unfreezing, a mixture of experts, layer-wise lr decay, an average of "
        "the weights, SMART, PCGrad, square-root task sampling, cross-encoded pairs) over --seeds seeds each, "
        "all other flags shared (--epochs, --samples_per_epoch, ...), and write"
        " ABLATE_DIR/ablation.md (mean ± std per task and row, differences from the baseline larger than the seeds' "
        "spread marked) and the plots. Rerunning continues it (docs/lab.md).",
    ),
    "pretrain": Command(
        "continue the encoder's masked-language-model training on the tasks' sentences",
        add_pretrain,
        run_pretrain,
        "Continue the masked-language-model training of a BERT checkpoint (default: the packaged MiniLM) on the "
        "training sentences of the tasks and any --text files (Gururangan et al., 2020, 'Don't Stop Pretraining'): "
        "15% of word pieces chosen, 80/10/10 masked, random, kept; the checkpoint's MLM head, or a new one tied to "
        "the word embeddings. Writes a Hugging Face checkpoint folder (--out) to train on with --model; a stopped "
        "run continues from OUT.state when the same command is run again (docs/training.md).",
    ),
    "evaluate": Command(
        "print a saved model's metrics as JSON",
        add_evaluate,
        run_evaluate,
        "Score a model saved by `mtbert train` on labelled files: the tasks whose files are named (--sst_dev my.csv "
        "scores SST only), else every task of the model on its file in --data_dir (a declared task: the file it "
        "declared).",
    ),
    "score": Command(
        "print the metrics of saved prediction files (the original project's layout) as JSON",
        add_score,
        run_score,
        "Score prediction files, `id , prediction` lines as training and the original project write them "
        "(DIR/sst-dev-output.csv, para-dev-output.csv, sts-dev-output.csv), against the labelled dev files (or "
        "--split test with labelled --{task}_test files): another system's results on exactly these rows.",
    ),
    "ensemble": Command(
        "evaluate several trained models as one, the mean of their head outputs",
        add_ensemble,
        run_ensemble,
        "Score each MODEL and their ensemble (each head's output the mean of the models': SST's logits, Quora's "
        "logit, STS's score) on the dev files, print the table, and write the ensemble's dev and test predictions "
        "where training writes them (--sst_dev_out, ...). `--checkpoint A,B,C` uses such an ensemble in `mtbert "
        "evaluate`, `predict` and `serve`; mtbert.load([A, B, C]) in Python.",
    ),
    "predict": Command("predict one task for sentences in a file or on stdin", add_predict, run_predict),
    "synth": Command(
        "generate extra SST training sentences with a label-conditioned language model",
        add_synth,
        run_synth,
        "Fit a causal language model on the SST training sentences, the label as a control prefix, sample "
        "--per_class new sentences per label, filter them (length, exact and near duplicates, sentences of the dev "
        "and test files, optionally a trained model's confidence) and write them in the ids-sst-train layout, marked "
        "synthetic; train on them with --sst_train ORIGINAL,GENERATED (docs/synthetic.md).",
    ),
    "serve": Command(
        "serve a trained model over HTTP (JSON; FastAPI on uvicorn)",
        add_serve,
        run_serve,
        'Serve a model saved by `mtbert train`: POST /sentiment {"texts": [...]}, /paraphrase and /similarity '
        '{"pairs": [[a, b], ...]}, GET /health; OpenAPI docs at /docs. Concurrent requests are batched together.',
    ),
    "export": Command(
        "write a trained model's encoder as a Hugging Face folder",
        add_export,
        run_export,
        "Write the encoder of a model saved by `mtbert train` as a Hugging Face folder (config.json, "
        "model.safetensors, tokenizer files) that transformers.AutoModel loads (BertModel for a BERT encoder), with "
        "the pooling and heads beside it and a README of how to use them.",
    ),
    "report": Command(
        "compare runs: a Markdown table per task and plots of their dev metrics",
        add_report,
        run_report,
        "Read the TensorBoard logs of training runs and write OUT/report.md (a table per task: a row per run with the "
        "flags that set it apart and its best epoch's dev metric) and OUT/dev-metrics.png (the dev metrics per epoch "
        "of all runs; docs/lab.md).",
    ),
    "encode": Command("print L2-normalised sentence embeddings, one JSON list per line", add_encode, run_encode),
    "data": Command("data set commands: fetch", add_data, run_fetch),
}
