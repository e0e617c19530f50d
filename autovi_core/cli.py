"""The ``autovi`` command line: list, describe, run, fit, predict, export, evaluate, report, new-plugin (docs/cli.md: the contract)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import AutoviError, ConfigError, DataError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="autovi: unsupervised visual anomaly detection on AutoVI, with official-grade metrics.",
    pretty_exceptions_enable=False,
)
# Wide tables when the output is a file or a pipe (rich would otherwise wrap at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
_state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    plugins: str | None = typer.Option(
        None, "--plugins", envvar="AUTOVI_PLUGINS", help="Load only these plugin entry points (comma-separated)."
    ),
    exclude: str | None = typer.Option(
        None, "--exclude", envvar="AUTOVI_DISABLE_PLUGINS", help="Do not load these plugin entry points (comma-separated)."
    ),
) -> None:
    _state["debug"] = debug
    # Through the environment, so that experiment processes load the same plugins.
    import os

    for variable, value in (("AUTOVI_PLUGINS", plugins), ("AUTOVI_DISABLE_PLUGINS", exclude)):
        if value:
            os.environ[variable] = value


# --- list -----------------------------------------------------------------------------------------
@app.command("list")
def list_plugins(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    """List every installed detector, dataset and metric plugin, with broken and incompatible ones and why.

    With ``autovi --debug list``, a broken plugin's full traceback is printed too.
    """
    from .registry import get_registry

    records = sorted(get_registry().records, key=lambda r: (r.kind, r.name))
    debug = _state["debug"]
    if as_json:
        rows = [dict(r.as_json(), **({"traceback": r.traceback} if debug else {})) for r in records]
        print(json.dumps(rows, indent=2))
        return
    colours = {"ok": "green", "incompatible": "yellow"}
    table = Table("kind", "name", "distribution", "version", "status", "error")
    for r in records:
        colour = colours.get(r.status, "red")
        table.add_row(r.kind, r.name, r.distribution, r.version, f"[{colour}]{r.status}[/{colour}]", r.error or "")
    console.print(table)
    if debug:
        for r in records:
            if r.traceback:
                err_console.rule(f"{r.kind} {r.name} ({r.distribution} {r.version}): {r.status}")
                err_console.print(r.traceback, highlight=False, markup=False)


# --- describe -------------------------------------------------------------------------------------
@app.command()
def describe(
    name: str = typer.Argument(..., help="Registered detector name (see autovi list)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    readme: Path | None = typer.Option(None, "--readme", help="Rewrite the generated hyperparameter table in this README."),
) -> None:
    """A detector's hyperparameters (domain, paper and fast values, meaning, source), capabilities and assets."""
    from .describe import describe as describe_detector
    from .describe import sync_readme
    from .registry import get_registry

    cls = get_registry().detector_class(name)
    if readme is not None:
        current = sync_readme(cls, readme)
        console.print(f"{readme}: {'already current' if current else 'table rewritten'}", highlight=False)
        return
    info = describe_detector(cls)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    caps = info["capabilities"]
    console.print(f"[bold]{info['name']}[/bold]: {info['description']}", highlight=False)
    traits = ["supervised" if caps["supervised"] else "unsupervised", "needs a GPU" if caps["needs_gpu"] else "runs on a CPU"]
    console.print(f"{', '.join(traits)}; pretrained assets: {', '.join(info['assets']) or 'none'}", highlight=False)
    if not info["declared"]:
        console.print("[yellow]no params declaration: domains are the profile values' types[/yellow]")
    from rich.markup import escape

    table = Table("hyperparameter", "paper", "fast", "domain", "meaning", "source")
    for p in info["hyperparameters"]:
        cells = (p["name"], json.dumps(p["paper"]), json.dumps(p["fast"]), p["domain"]["text"], p["meaning"], p["source"])
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)


# --- run ------------------------------------------------------------------------------------------
def _parse_sets(pairs: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs as text: each detector parses them to its own domains."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = raw
    return overrides


def _build_tasks(
    registry: Any,
    detectors: list[str],
    dataset: str,
    root: Path | None,
    categories: list[str],
    seeds: list[int],
    profile: str,
    overrides: dict[str, str],
    backbone: str | None,
    weights: Path | None,
    common: dict[str, Any],
) -> list[Any]:
    from .experiment import Task
    from .run_options import check_category_options

    provider = registry.dataset(dataset)
    resolved_root = provider.resolve_root(root)
    for category in categories:
        provider.check_category(resolved_root, category)
    chosen = categories or provider.categories(resolved_root)
    if not chosen:
        raise DataError(f"{resolved_root}: no category of dataset {dataset!r} found there")
    for category in chosen:  # indexes the files (no decoding): layout, masks and defects_config.json errors surface here
        check_category_options(provider.load_category(resolved_root, category), common)
    for option, value, key in (("--backbone", backbone, "backbone"), ("--weights", weights, "weights")):
        if value is not None and not any(key in registry.detector_class(name).domains() for name in detectors):
            raise ConfigError(f"{option} {value}: none of the detectors {', '.join(detectors)} has a {key!r} hyperparameter")
    tasks = []
    for name in detectors:
        detector_cls = registry.detector_class(name)
        texts = dict(overrides)
        known = detector_cls.domains()
        if backbone is not None and "backbone" in known:
            texts["backbone"] = backbone
        if weights is not None and "weights" in known:
            texts["weights"] = str(weights)
        own = detector_cls.parse_overrides(texts)
        detector_cls.resolve_hparams(profile, own)  # every value and combination checked before anything runs
        for category in chosen:
            for seed in seeds:
                tasks.append(
                    Task(
                        detector=name,
                        category=category,
                        seed=seed,
                        profile=profile,
                        dataset=dataset,
                        root=str(resolved_root),
                        overrides=own,
                        **common,
                    )
                )
    return tasks


def _summary_table(records: list[dict[str, Any]]) -> Table:
    table = Table(
        "detector", "category", "seed", "status", "image AUROC", "AUsPRO@0.05", "pixel AUROC", "fit s", "img/s", "ms/img (batch 1)"
    )

    def fmt(value: Any, scale: float = 100.0) -> str:
        return "-" if value is None else f"{value * scale:.1f}"

    for r in records:
        m, t = r.get("metrics") or {}, r.get("timing") or {}
        spro = (m.get("auc_spro") or {}).get("0.05")
        status = "[green]ok[/green]" if r["status"] == "ok" else f"[red]failed[/red] {r.get('error') or ''}"
        table.add_row(
            r["detector"],
            r["category"],
            str(r["seed"]),
            status,
            fmt(m.get("image_auroc")),
            fmt(spro),
            fmt(m.get("pixel_auroc")),
            fmt(t.get("fit_s"), 1.0),
            fmt(t.get("predict_images_per_s"), 1.0),
            fmt(t.get("batch1_latency_ms"), 1.0),
        )
    return table


@app.command()
def run(
    detector: list[str] = typer.Option([], "--detector", "-d", help="Detector to run (repeatable)."),
    all_plugins: bool = typer.Option(False, "--all-plugins", help="Run every installed detector."),
    dataset: str = typer.Option("synthetic", "--dataset", help="Dataset plugin name."),
    root: Path | None = typer.Option(None, "--root", help="Dataset root (default: the dataset's own)."),
    category: list[str] = typer.Option([], "--category", "-c", help="Category (repeatable; default: all)."),
    seed: list[int] = typer.Option([], "--seed", "-s", help="Seed (repeatable; default 0)."),
    profile: str = typer.Option("fast", "--profile", help="Hyperparameter profile: paper or fast."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Run directory (default runs/<timestamp>)."),
    executor: str = typer.Option(
        "local", "--executor", help="Where experiments run: local (one at a time) or ray (concurrently, here or on a cluster)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output, skipping experiments already ok."),
    save_maps: bool = typer.Option(False, "--save-maps", help="Also write anomaly maps (8-bit PNG + float TIFF)."),
    save_models: bool = typer.Option(
        False, "--save-models", help="Also write each fitted detector with its calibration to DIR/models/ (for autovi predict)."
    ),
    backbone: str | None = typer.Option(None, "--backbone", help="Pretrained backbone for detectors that use one."),
    weights: Path | None = typer.Option(None, "--weights", help="Weights file for that backbone."),
    set_: list[str] = typer.Option([], "--set", help="Override a hyperparameter: KEY=VALUE (repeatable)."),
    spro_mode: str = typer.Option("exact", "--spro-mode", help="exact or official sPRO curve."),
    timeout: float | None = typer.Option(None, "--timeout", help="Per-experiment time limit in seconds."),
    in_process: bool = typer.Option(False, "--in-process", help="Run experiments in this process (no isolation)."),
    memory_limit: float | None = typer.Option(None, "--memory-limit", help="Per-experiment memory cap in MiB."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to use (default: $RAY_ADDRESS, else a local instance)."
    ),
    ray_cpus: float = typer.Option(1.0, "--ray-cpus-per-task", help="CPUs Ray reserves per experiment."),
    ray_gpus: float | None = typer.Option(
        None, "--ray-gpus-per-task", help="GPUs Ray reserves per experiment (default 1 if the cluster has GPUs, else 0)."
    ),
    augment: str | None = typer.Option(None, "--augment", help="Training augmentation: autovi-paper (rotation, noise; paper 6.1)."),
    train_images: int | None = typer.Option(None, "--train-images", help="Few-shot: train on N images drawn with the seed."),
    crop: str | None = typer.Option(None, "--crop", help="Cut a centred WxH window from train, test and ground truth, e.g. 200x200."),
) -> None:
    """Run every (detector, category, seed) experiment and append results to DIR/results.jsonl."""
    from .experiment import record_key
    from .options import RUN, check_options
    from .registry import get_registry
    from .results import RESULTS_FILE, load_results

    options = {"--seed": seed, "--profile": profile, "--device": device, "--executor": executor, "--spro-mode": spro_mode}
    options |= {"--timeout": timeout, "--memory-limit": memory_limit, "--ray-cpus-per-task": ray_cpus, "--ray-gpus-per-task": ray_gpus}
    options |= {"--augment": augment, "--train-images": train_images, "--crop": crop}
    check_options(RUN, options)

    registry = get_registry()
    names = list(dict.fromkeys(detector))
    if all_plugins:
        for record in registry.records:
            if record.status != "ok":
                err_console.print(f"[yellow]warning:[/yellow] skipping {record.status} plugin {record.name!r}: {record.error}")
        names = list(dict.fromkeys(names + sorted(registry.detectors)))
    if not names:
        valid = ", ".join(sorted(registry.detectors)) or "none installed"
        raise ConfigError(f"choose detectors with --detector NAME or --all-plugins; installed: {valid}")
    if resume and output is None:
        raise ConfigError("--resume needs --output DIR of the run to continue")
    if in_process and executor != "local":
        raise ConfigError("--in-process works with --executor local only")
    out_dir = output or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {out_dir}: exists and is not a folder")
    if executor == "local":  # a Ray cluster's workers have their own devices and files
        from .device import resolve_device

        resolve_device(device)
        if weights is not None and not weights.is_file():
            raise ConfigError(f"--weights {weights}: no such file")
    common = {"device": device, "save_maps": save_maps, "output_dir": str(out_dir), "spro_mode": spro_mode}
    if save_models:
        common["save_models"] = True
    common |= {k: v for k, v in {"augment": augment, "train_images": train_images, "crop": crop}.items() if v is not None}
    seeds, categories = list(dict.fromkeys(seed or [0])), list(dict.fromkeys(category))  # each experiment once
    tasks = _build_tasks(registry, names, dataset, root, categories, seeds, profile, _parse_sets(set_), backbone, weights, common)
    results_path = out_dir / RESULTS_FILE
    if resume:
        previous = load_results(results_path)[0] if results_path.exists() else []
        done = {record_key(r) for r in previous if r.get("status") == "ok"}
        skipped = [t for t in tasks if t.key in done]
        tasks = [t for t in tasks if t.key not in done]
        err_console.print(f"resuming {results_path}: {len(skipped)} experiment(s) already ok, {len(tasks)} to run")
    out_dir.mkdir(parents=True, exist_ok=True)
    from .shared_fits import SHARED_FITS_FOLDER, plan_shared_fits

    shared_folder = out_dir / SHARED_FITS_FOLDER
    tasks = plan_shared_fits(tasks, registry, shared_folder)

    ray_options = {"address": ray_address, "cpus_per_task": ray_cpus, "gpus_per_task": ray_gpus}
    executor_options = {"isolate": not in_process, "timeout": timeout, "memory_limit_mb": memory_limit, "ray_options": ray_options}
    finished = _execute(tasks, results_path, executor, executor_options)
    shutil.rmtree(shared_folder, ignore_errors=True)  # they serve this run only (an interrupted run keeps them for --resume)
    if finished:
        console.print(_summary_table(finished))
    console.print(f"results: {results_path}")
    _exit_on_failures(finished)


def _execute(tasks: list[Any], results_path: Path, executor: str, options: dict[str, Any], *, eta: bool = False) -> list[dict[str, Any]]:
    """Run ``tasks`` on ``executor``, appending each record to ``results_path`` as it arrives and
    printing one line per experiment (with the estimated time left when ``eta``)."""
    from .executors import make_executor
    from .reproduce.plan import format_seconds
    from .results import append_record

    finished: list[dict[str, Any]] = []
    started = time.monotonic()

    def on_result(task: Any, record: dict[str, Any]) -> None:
        append_record(results_path, record)
        finished.append(record)
        state = "ok" if record["status"] == "ok" else f"FAILED: {record['error']}"
        left = ""
        if eta and len(finished) < len(tasks):
            per_task = (time.monotonic() - started) / len(finished)
            left = f" (about {format_seconds(per_task * (len(tasks) - len(finished)))} left)"
        where = f"{task.detector} {task.category} seed {task.seed}"
        err_console.print(f"[{len(finished)}/{len(tasks)}] {where}: {state}{left}", highlight=False)

    make_executor(executor, debug=_state["debug"], **options).run(tasks, on_result)
    return finished


def _exit_on_failures(finished: list[dict[str, Any]]) -> None:
    failed = sum(1 for r in finished if r["status"] != "ok")
    if failed:
        err_console.print(f"[red]{failed} of {len(finished)} experiment(s) failed[/red]")
        raise typer.Exit(min(failed, 125))


# --- reproduce ------------------------------------------------------------------------------------
def _csv_list(text: str | None, option: str, cast: Any = str) -> list[Any] | None:
    if text is None:
        return None
    try:
        return list(dict.fromkeys(cast(item.strip()) for item in text.split(",") if item.strip()))
    except ValueError:
        raise ConfigError(f"{option} {text!r} refused: expected a comma-separated list") from None


@app.command()
def reproduce(
    recipe_name: str = typer.Argument(..., metavar="RECIPE", help="A reproduction recipe (autovi list shows them), e.g. autovi-paper."),
    root: Path | None = typer.Option(None, "--root", help="The dataset's folder (default: the dataset's own)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset plugin (default: the recipe's; e.g. synthetic_autovi)."),
    tables: str | None = typer.Option(None, "--tables", help="Tables to reproduce, e.g. 6,7,8,9 (default: all)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds, e.g. 0,1,2 (default: the recipe's)."),
    methods: str | None = typer.Option(None, "--methods", help="Detectors, e.g. patchcore,padim (default: the recipe's)."),
    categories: str | None = typer.Option(None, "--categories", help="Categories (default: the recipe's)."),
    profile: str | None = typer.Option(None, "--profile", help="Hyperparameter profile (default: the recipe's, paper)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Run folder (default runs/reproduce-RECIPE); re-running resumes it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the experiments, weights needed and expected time; run nothing."),
    timeout: float | None = typer.Option(None, "--timeout", help="Per-experiment time limit in seconds."),
    in_process: bool = typer.Option(False, "--in-process", help="Run experiments in this process (no isolation)."),
) -> None:
    """Re-run a paper's grid (resumable) and print each table beside the paper's numbers."""
    from .experiment import record_key
    from .options import RUN, check_options
    from .registry import get_registry
    from .reproduce.report import write_comparison
    from .results import RESULTS_FILE, load_results

    registry = get_registry()
    recipe = registry.recipe(recipe_name)
    profile = profile or recipe.profile
    check_options(RUN, {"--profile": profile, "--device": device, "--executor": executor, "--timeout": timeout})
    chosen_tables = _csv_list(tables, "--tables") or list(recipe.tables_spec)
    chosen_seeds = _csv_list(seeds, "--seeds", int) or list(recipe.seeds)
    check_options(RUN, {"--seed": chosen_seeds})
    out_dir = output or Path("runs") / f"reproduce-{recipe.name}"
    results_path = out_dir / RESULTS_FILE
    dataset = dataset or recipe.dataset
    common = {"device": device, "output_dir": str(out_dir)}
    plan = build_reproduction_plan(recipe, registry, chosen_tables, methods, categories, chosen_seeds, profile, dataset, root, common)
    for skipped in plan.skipped:
        experiment = skipped.experiment
        err_console.print(f"[yellow]skipped:[/yellow] {experiment.method} {experiment.category} ({experiment.variant}): {skipped.reason}")
    previous = load_results(results_path)[0] if results_path.exists() else []
    done = {record_key(r) for r in previous if r.get("status") == "ok"}
    todo = [t for t in plan.tasks if t.key not in done]
    if dry_run:
        console.print(_dry_run_table(recipe, registry, plan.tasks, done, previous, profile))
        return
    err_console.print(f"{recipe.name}: {len(plan.tasks)} experiment(s), {len(plan.tasks) - len(todo)} already done in {results_path}")
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = _execute(todo, results_path, executor, {"isolate": not in_process, "timeout": timeout}, eta=True) if todo else []
    records = load_results(results_path)[0] if results_path.exists() else []
    markdown, written = write_comparison(recipe, chosen_tables, records, out_dir, profile=profile, dataset=dataset, seeds=chosen_seeds)
    typer.echo(markdown)  # as written: no wrapping, no rich markup
    console.print(f"tables: {', '.join(str(p) for p in written)}")
    _exit_on_failures(finished)


def build_reproduction_plan(
    recipe: Any,
    registry: Any,
    tables: list[str],
    methods: str | None,
    categories: str | None,
    seeds: list[int],
    profile: str,
    dataset: str,
    root: Path | None,
    common: dict[str, Any],
) -> Any:
    from .reproduce.plan import build_plan

    for table in tables:
        recipe.table(table)
    return build_plan(
        recipe,
        registry,
        tables=tables,
        methods=_csv_list(methods, "--methods"),
        categories=_csv_list(categories, "--categories"),
        seeds=seeds,
        profile=profile,
        dataset=dataset,
        root=root,
        common=common,
    )


def _dry_run_table(recipe: Any, registry: Any, tasks: list[Any], done: set[Any], previous: list[dict], profile: str) -> Table:
    """One row per (method, category, variant): seeds to run, weights needed, expected time."""
    from .reproduce.plan import expected_seconds, format_seconds, weights_needed
    from .run_options import options_label, options_of

    table = Table("method", "category", "variant", "to run", "weights", "expected", title=f"autovi reproduce {recipe.name} --dry-run")
    groups: dict[tuple[str, str, str, str], list[Any]] = {}
    for task in tasks:
        variant = (options_label(options_of(task)), json.dumps(task.overrides, sort_keys=True))
        groups.setdefault((task.detector, task.category, *variant), []).append(task)
    total = 0.0
    for (method, category, options, overrides), group in groups.items():
        left = [t for t in group if t.key not in done]
        seconds, source = expected_seconds(recipe, previous, method, profile)
        total += (seconds or 0.0) * len(left)
        needs = weights_needed(registry, method, profile, group[0].overrides)
        weights = "; ".join(f"{'✓' if found else '✗'} {what}: {where}" for what, found, where in needs) or "none"
        variant = ", ".join(v for v in (options, overrides if overrides != "{}" else "") if v) or "base"
        table.add_row(method, category, variant, f"{len(left)} of {len(group)}", weights, f"{format_seconds(seconds)} each ({source})")
    table.caption = f"{sum(1 for t in tasks if t.key not in done)} experiment(s) to run, about {format_seconds(total)} in all"
    return table


# --- evaluate -------------------------------------------------------------------------------------
@app.command()
def evaluate(
    dataset_root: Path = typer.Option(..., "--dataset-root", help="Folder holding <category>/ in AutoVI layout."),
    category: str = typer.Option(..., "--category", help="Category folder name."),
    maps: Path = typer.Option(..., "--maps", help="Maps folder: <defect_dir>/<stem>.(png|tif|tiff|npy)."),
    spro_mode: str = typer.Option("exact", "--spro-mode", help="exact (true curve) or official (evaluator-compatible)."),
    output: Path | None = typer.Option(None, "--output", help="Write the JSON here too."),
) -> None:
    """Evaluate anomaly maps made by any tool against AutoVI-layout ground truth."""
    from .evaluation import evaluate_maps_folder
    from .options import EVALUATE, check_options

    check_options(EVALUATE, {"--spro-mode": spro_mode})

    result = evaluate_maps_folder(dataset_root, category, maps, spro_mode=spro_mode, log=err_console.print)
    text = json.dumps(result, indent=2)
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")


# --- report ---------------------------------------------------------------------------------------
@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run directory (or its results.jsonl)."),
    fmt: str = typer.Option("md", "--format", help="md, csv or html."),
    metric: str = typer.Option("image_auroc", "--metric", help="Metric path, e.g. auc_spro.0.05 or timing.fit_s."),
    output: Path | None = typer.Option(
        None, "--output", help="md/csv: write the table to this file too. html: the report folder (default DIR/report)."
    ),
) -> None:
    """Tables over a results file: categories x methods, mean +- std over seeds, best marked (Welch, 5%).

    With --format html: a folder with index.html (tables, ROC/PR/sPRO curves, score histograms, anomaly
    maps, failure galleries, timing) viewable offline; prints the index.html path. Needs the report extra.
    """
    from .options import REPORT, check_options
    from .report import metric_paths, render
    from .results import load_results

    check_options(REPORT, {"--format": fmt})
    if fmt == "html":
        from .html_report import require_matplotlib

        require_matplotlib()

    records, unreadable = load_results(run_dir)
    if unreadable:
        err_console.print(f"[yellow]warning:[/yellow] skipped {unreadable} unreadable line(s)")
    known = metric_paths(records)
    if known and metric not in known:
        raise ConfigError(f"--metric {metric!r}: no such metric in {run_dir}; available: {', '.join(known)}")
    if fmt == "html":
        from .html_report import DEFAULT_METRICS, write_html_report

        metrics = DEFAULT_METRICS if metric in DEFAULT_METRICS else (*DEFAULT_METRICS, metric)
        print(write_html_report(run_dir, output, metrics))
        return
    text = render(records, metric, fmt, unreadable=unreadable)
    print(text)
    if output is not None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
        except OSError as exc:
            raise ConfigError(f"--output {output}: cannot write there ({exc.strerror or exc})") from None


# --- new-plugin -----------------------------------------------------------------------------------
@app.command("new-plugin")
def new_plugin(
    name: str = typer.Argument(..., help="Detector and entry-point name: a lowercase Python identifier, e.g. my_method."),
    output: Path = typer.Option(Path("."), "--output", "-o", help="Folder to write autovi-plugin-<name>/ into."),
) -> None:
    """Write a complete, pip-installable detector plugin to start from (see docs/plugins.md)."""
    from .scaffold import new_plugin as write_plugin

    target = write_plugin(name, output)
    console.print(f"wrote {target}/", highlight=False)
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        console.print(f"  {path.relative_to(target).as_posix()}", highlight=False)
    console.print(
        f"next: pip install -e {target} && pytest {target / 'tests'} && autovi run -d {name} --category clip_assembly",
        highlight=False,
        soft_wrap=True,
    )


# --- fit and predict (docs/deploy.md) --------------------------------------------------------------
@app.command()
def fit(
    detector: str = typer.Option(..., "--detector", "-d", help="Detector to fit (see autovi list)."),
    root: Path = typer.Option(..., "--root", help="A folder of good images, or a folder-layout dataset (<cat>/train/good)."),
    category: str | None = typer.Option(None, "--category", "-c", help="The category, when --root is a folder-layout dataset."),
    output: Path = typer.Option(..., "--output", "-o", help="Model folder to write (replaced if it is one already)."),
    profile: str = typer.Option("fast", "--profile", help="Hyperparameter profile: paper or fast."),
    set_: list[str] = typer.Option([], "--set", help="Override a hyperparameter: KEY=VALUE (repeatable)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the fit and of the calibration hold-out."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    holdout: float = typer.Option(0.1, "--holdout", help="Share of the good images held out to calibrate thresholds (at least 1)."),
) -> None:
    """Fit one detector on a folder of good images and write a model folder for autovi predict."""
    from .deploy import fit_model
    from .model_folder import CALIBRATION_FILE, LEVELS, level_key

    def log(message: str) -> None:
        err_console.print(message, highlight=False, soft_wrap=True)

    path = fit_model(
        detector=detector,
        root=root,
        category=category,
        output=output,
        profile=profile,
        overrides=_parse_sets(set_),
        seed=seed,
        device=device,
        holdout=holdout,
        log=log,
    )
    thresholds = json.loads((path / CALIBRATION_FILE).read_text(encoding="utf-8"))["calibration"].get("thresholds")
    if thresholds:
        shown = ", ".join(f"{level:.0%}: {thresholds[level_key(level)]:.6g}" for level in LEVELS)
        console.print(f"calibrated image-score thresholds: {shown}", highlight=False)
    console.print(f"model: {path}", highlight=False)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model folder (autovi fit, or DIR/models/... of autovi run --save-models)."),
    images: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) and glob patterns."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for predictions.jsonl, predictions.csv and the maps."),
    threshold: str = typer.Option("0.99", "--threshold", help="Calibrated level 0.99, 0.95 or 0.9, or an image-score threshold."),
    maps: str = typer.Option("none", "--maps", help="Maps to write: none, tiff, png, overlay or all."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images decoded and predicted at once."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    fail_on_defect: bool = typer.Option(
        False, "--fail-on-defect", help="Exit 1 when an image is flagged defective (or could not be predicted)."
    ),
) -> None:
    """Score images with a model folder: a verdict per image (defective when its score > the threshold), optional maps."""
    from .deploy import PREDICT_OPTIONS, expand_inputs, map_kinds, predict_folder
    from .device import resolve_device
    from .export import is_exported, load_exported
    from .model_folder import load_model_folder
    from .options import check_options

    check_options(PREDICT_OPTIONS, {"--maps": maps, "--batch-size": batch_size, "--device": device})
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a folder")
    # an exported folder (autovi export) runs through onnxruntime on the CPU
    loaded = load_exported(model) if is_exported(model) else load_model_folder(model, device=resolve_device(device))
    for note in loaded.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    value, described = loaded.threshold(threshold)
    found = expand_inputs(images, exclude=output)
    if not found.items:
        raise DataError(f"nothing to predict: {'; '.join(found.warnings)}")
    for warning in found.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)

    def log(message: str) -> None:
        err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)

    summary = predict_folder(loaded, found.items, output, threshold=value, maps=map_kinds(maps), batch_size=batch_size, log=log)
    console.print(
        f"{summary.images} image(s): {summary.defective} defective, {summary.good} good, {summary.errors} not predicted; "
        f"threshold {value:.6g} ({described})",
        highlight=False,
    )
    console.print(f"predictions: {output / 'predictions.jsonl'}", highlight=False)
    if summary.errors == summary.images:
        raise DataError(f"none of the {summary.images} image(s) could be predicted; first: {summary.first_error}")
    if fail_on_defect and (summary.defective or summary.errors):
        raise typer.Exit(1)


@app.command("export")
def export(
    model: Path = typer.Argument(..., help="Model folder (autovi fit, or DIR/models/... of autovi run --save-models)."),
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx, or openvino (OpenVINO IR, needs the openvino package)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Folder to write (default MODEL_DIR-FORMAT; replaced if an export)."),
) -> None:
    """Export a model folder's inference path to ONNX, for autovi predict through onnxruntime (docs/deploy.md)."""
    from .export import export_model

    def log(message: str) -> None:
        err_console.print(message, highlight=False, soft_wrap=True)

    path = export_model(model, fmt=fmt, output=output, log=log)
    console.print(f"exported: {path}", highlight=False)


def _global_options(argv: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """Split ``[--debug] [--plugins P] [--exclude E]`` off the front of ``argv``: (``_main``'s
    keyword arguments, the rest from the command on), or None when anything else comes first."""
    options: dict[str, Any] = {"debug": False, "plugins": None, "exclude": None}
    args = list(argv)
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        name, sep, value = flag.partition("=")
        if flag == "--debug":
            options["debug"] = True
        elif name in ("--plugins", "--exclude") and (sep or args):
            options[name[2:]] = value if sep else args.pop(0)
        else:
            return None
    return options, args


def _fast_list(argv: list[str]) -> bool:
    """Run ``autovi [--debug] [--plugins P] [--exclude E] list [--json]`` without typer's parsing.

    Typer coerces every option through pydantic, which costs more than the rest of ``autovi list``
    (benchmarks/bench_cli_startup.py); anything else (``--help`` included) returns False and goes
    through typer as usual.
    """
    split = _global_options(argv)
    if split is None or split[1][:1] != ["list"] or split[1][1:] not in ([], ["--json"]):
        return False
    _main(**split[0])
    list_plugins(as_json=split[1][1:] == ["--json"])
    return True


_EVALUATE_OPTIONS = ("--dataset-root", "--category", "--maps", "--spro-mode", "--output")


def _fast_evaluate(argv: list[str]) -> bool:
    """Run ``autovi [global options] evaluate --dataset-root D --category C --maps M [--spro-mode S]
    [--output F]`` (options in any order, ``--name value`` or ``--name=value``) without typer's
    parsing, as :func:`_fast_list` does (typer's parsing and pydantic's import are a tenth of the
    whole evaluation, benchmarks/bench_evaluate.py). Anything else (``--help``, a missing or
    repeated option, a value starting with ``-``) returns False and goes through typer.
    """
    split = _global_options(argv)
    if split is None or split[1][:1] != ["evaluate"]:
        return False
    args, values = split[1][1:], {}
    while args:
        name, sep, value = args.pop(0).partition("=")
        if not sep and args:
            value = args.pop(0)
        elif not sep:
            return False
        if name not in _EVALUATE_OPTIONS or name in values or value.startswith("-"):
            return False
        values[name] = value
    if not {"--dataset-root", "--category", "--maps"} <= values.keys():
        return False
    _main(**split[0])
    output = values.get("--output")
    evaluate(
        dataset_root=Path(values["--dataset-root"]),
        category=values["--category"],
        maps=Path(values["--maps"]),
        spro_mode=values.get("--spro-mode", "exact"),
        output=None if output is None else Path(output),
    )
    return True


def main() -> None:
    """Console-script entry point: one-line errors unless --debug."""
    try:
        if _fast_list(sys.argv[1:]) or _fast_evaluate(sys.argv[1:]):
            sys.exit(0)
        code = app(standalone_mode=False)  # click returns the code of a typer.Exit here
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except AutoviError as exc:
        if _state["debug"]:
            raise
        from rich.markup import escape  # a message may hold brackets, e.g. autovi-core[report]

        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # usage errors and anything unexpected
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click/typer usage errors
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        if _state["debug"]:
            raise
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc} (run with --debug for the traceback)", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
