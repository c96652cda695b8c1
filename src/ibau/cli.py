"""The ``ibau`` command. Every command only adapts a function of the Python API; the choices in its help
texts come from the registries (datasets, architectures, attacks, defenses, presets, suites)."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from .attacks import ATTACKS
from .bench.suites import PRESETS as BENCH_PRESETS
from .bench.suites import SUITES
from .data.registry import DATASETS
from .defenses import DEFENSES
from .errors import USER_ERRORS
from .models import MODELS
from .unlearn import PRESETS as IBAU_PRESETS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Remove backdoors from image classifiers with I-BAU, and measure it.")


def _names(registry) -> str:
    return ", ".join(registry)


class _EchoHandler(logging.Handler):
    """Library log lines as the command's output: information on stdout, warnings and errors on stderr
    (everything on stderr once ``all_to_stderr`` is set, for a command whose stdout is JSON)."""

    all_to_stderr = False

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=self.all_to_stderr or record.levelno >= logging.WARNING)


@dataclass
class _Session:
    """State of one ``ibau`` invocation that :func:`main` needs after the command: the parsed ``--debug``."""

    debug: bool = False


# Options shared by the commands that read a dataset or a model file (one definition, one help text).
def _dataset_opt():
    return typer.Option(..., help=f"Dataset name: {_names(DATASETS)}.")


def _data_dir_opt():
    return typer.Option(None, help="Dataset folder (npz: the file).")


def _download_opt():
    return typer.Option(False, help="Download cifar10/gtsrb (needs internet).")


def _model_opt():
    return typer.Option(..., help="Model file: .safetensors with its .json card; a BackdoorBench attack_result.pt; or a "
                        "state dict (.pt/.pth, also nested under net/state_dict/model, e.g. the I-BAU authors' checkpoints) "
                        "with --arch. Read with weights_only=True: a file that needs code to unpickle is refused.")


def _attack_from_opt():
    return typer.Option(None, help="Run folder or model whose card names the trigger (default: this model's card).")


def _arch_opt():
    return typer.Option(None, help=f"Architecture of a file without a card: {_names(MODELS)}; torchvision:NAME, timm:NAME "
                        "(when installed), bb:NAME (BackdoorBench's model_name); or module.path:factory, a function or "
                        "class in your own Python code, called with num_classes= (and in_channels=, input_size= when it "
                        "takes them): the only way ibau runs code it does not ship. A card that names module:factory "
                        "needs the same --arch.")


def _trigger_opt():
    return typer.Option(None, "--trigger", help="The trigger for ASR/RA of a model without an ibau card: a registered attack "
                        "with key=value options (e.g. badnets,target=8; blend,alpha=0.1,target=1) or a trigger.json. "
                        "Wins over the card and --attack-from.")


def _num_classes_opt():
    return typer.Option(None, help="Classes of a state dict without a card (default: the dataset's).")


def _normalize_opt():
    return typer.Option(None, help="Input normalisation the model expects, put in front of it as a layer (so triggers and "
                        "δ stay in pixel space) and recorded in the saved card: cifar10, gtsrb, imagenet, MEAN,STD or "
                        "M1,M2,M3/S1,S2,S3 (default: none; a BackdoorBench file brings its own).")


def _quiet_stdout() -> None:
    """Send the library's log lines to stderr: the command prints JSON on stdout."""
    for handler in logging.getLogger("ibau").handlers:
        if isinstance(handler, _EchoHandler):
            handler.all_to_stderr = True


def _recipes() -> str:
    from .training import RECIPES

    return ", ".join(f"{name} ({r['train_limit'] or 'all'} images, {r['epochs']} epochs)" for name, r in RECIPES.items())


def _ibau_preset_opt():
    return typer.Option("default", help=f"I-BAU preset: {_names(IBAU_PRESETS)}.")


@app.callback()
def _root(ctx: typer.Context, debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """Remove backdoors from image classifiers with I-BAU, and measure it."""
    if isinstance(ctx.obj, _Session):
        ctx.obj.debug = debug


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for metrics.json, report.md, delta.png, curve.png."),
    seed: int = typer.Option(0, help="Seed for the split, poisoning, training and I-BAU."),
    epochs: int = typer.Option(12, help="Training epochs of the poisoned model."),
    rounds: int | None = typer.Option(None, help="I-BAU rounds (default 5)."),
    preset: str = _ibau_preset_opt(),
    defense_option: list[str] = typer.Option([], help="KEY=VALUE setting of I-BAU's config, repeatable (e.g. patch_steps=10)."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA if available)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Poison the embedded digits with BadNets, train a small VGG, remove the backdoor with I-BAU.

    Example: ibau demo --seed 1 --out runs/demo1
    """
    from .attacks import parse_options
    from .demo import demo_config, run_demo

    options = parse_options(defense_option) | ({} if rounds is None else {"rounds": rounds})
    cfg = demo_config(preset, **options)
    run_demo(out, seed=seed, epochs=epochs, config=cfg, device=device, progress=progress)


@app.command()
def attack(
    dataset: str = _dataset_opt(),
    attack_name: str = typer.Option(..., "--attack", help=f"{_names(ATTACKS)}; name:target pairs joined by commas "
                                    "(multi-trigger); multi7 (the paper's 7 triggers); none (clean model)."),
    data_dir: str | None = _data_dir_opt(),
    download: bool = _download_opt(),
    target: int | None = typer.Option(None, help="Target class (default: the attack's paper target)."),
    all_to_all: bool = typer.Option(False, "--all-to-all", help="Relabel y to (y+1) mod C instead of one target."),
    reference_model: Path | None = typer.Option(
        None, help="Model that optimised triggers (l0_inv, l2_inv, trojan_*) excite, e.g. a clean model."),
    trigger_file: Path | None = typer.Option(None, "--trigger", help="Reuse a saved trigger.json instead of generating one."),
    trigger_steps: int | None = typer.Option(None, help="Optimisation steps of generated triggers (default 200)."),
    trigger_option: list[str] = typer.Option([], help="KEY=VALUE for the trigger, repeatable: e.g. image=cat.png alpha=0.1 (blend), "
                                             "size=3 (badnets), pixels=8 region=last_row (l0_inv)."),
    poison_ratio: float = typer.Option(0.2, help="Fraction of the training set stamped and relabelled "
                                       "(split between the triggers of a multi-trigger attack)."),
    preset: str = typer.Option("paper", help=f"Training recipe: {_recipes()}."),
    epochs: int | None = typer.Option(None, help="Training epochs (default: the preset's)."),
    arch: str = typer.Option("small_vgg", help=f"Architecture: {_names(MODELS)}."),
    train_limit: int | None = typer.Option(None, help="Use only this many training images (default: the preset's)."),
    batch_size: int = typer.Option(128, help="Training batch size."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    lr_schedule: str = typer.Option("constant", help="constant, or cosine (anneal to 0 over the epochs: a short budget fits better)."),
    augment: str = typer.Option("none", help="none, or flip_crop (random 4-pixel shift and left-right flip of each clean image; "
                                "the trigger is stamped after, in place)."),
    out: Path = typer.Option(Path("runs/attack"), help="Folder for model.safetensors, trigger.json, trigger.png, train.log, metrics.json."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last finished epoch in --out (with its saved trigger)."),
    seed: int = typer.Option(0, help="Seed for trigger generation, poisoning and training."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA if available)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train a backdoored model: poison a fraction of the training set with a trigger and train on it.

    Examples:
      ibau attack --dataset cifar10 --data-dir data --attack none --out runs/clean
      ibau attack --dataset cifar10 --data-dir data --attack trojan_wm --reference-model runs/clean/model.safetensors --out runs/wm
      ibau attack --dataset npz --data-dir cifar10.npz --attack badnets --all-to-all --preset cpu --out runs/a2a
    """
    from .attacks import parse_options
    from .pipeline.train import recipe, train_poisoned

    r = recipe(preset, epochs=epochs, train_limit=train_limit)
    train_poisoned(dataset, attack_name, out, data_dir=data_dir, download=download, poison_ratio=poison_ratio,
                   epochs=r["epochs"], arch=arch, train_limit=r["train_limit"], batch_size=batch_size, lr=lr,
                   seed=seed, device=device, resume=resume, progress=progress, target=target,
                   all_to_all=all_to_all, reference_model=reference_model, trigger_file=trigger_file,
                   trigger_steps=trigger_steps, trigger_options=parse_options(trigger_option),
                   lr_schedule=lr_schedule, augment=augment)
    typer.echo(f"wrote {out}/model.safetensors (+ card), trigger.json, trigger.png, train.log, metrics.json")


@app.command()
def defend(
    model: Path = _model_opt(),
    dataset: str = _dataset_opt(),
    data_dir: str | None = _data_dir_opt(),
    download: bool = _download_opt(),
    clean_size: int = typer.Option(5000, help="Clean test images given to the defense; the rest are held out."),
    method: str = typer.Option("ibau", help=f"Defense: {_names(DEFENSES)}."),
    preset: str = _ibau_preset_opt(),
    rounds: int | None = typer.Option(None, help="I-BAU rounds (default: the preset's)."),
    batch_size: int | None = typer.Option(None, help="Batch size of the defense (default: its config's; I-BAU: 100)."),
    defense_option: list[str] = typer.Option([], help="KEY=VALUE setting of the defense's config, repeatable (e.g. epochs=5)."),
    attack_from: Path | None = _attack_from_opt(),
    trigger_text: str | None = _trigger_opt(),
    arch: str | None = _arch_opt(),
    num_classes: int | None = _num_classes_opt(),
    normalize: str | None = _normalize_opt(),
    out: Path = typer.Option(Path("runs/defend"), help="Folder for model.safetensors, metrics.json, report.md, delta.png, curve.png."),
    seed: int = typer.Option(0, help="Seed for the clean/held-out split and I-BAU."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA if available)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Remove a backdoor from a model file (I-BAU or a baseline) and report ACC/ASR/RA on held-out images.

    Examples:
      ibau defend --model runs/demo/poisoned.safetensors --dataset digits --clean-size 400
      ibau defend --model runs/wm/model.safetensors --dataset cifar10 --data-dir data --method neural_cleanse
      ibau defend --model runs/wm/model.safetensors --dataset cifar10 --data-dir data --method finetune --defense-option epochs=5
      ibau defend --model badnets_8_02_ckpt.pth --arch small_vgg --trigger badnets,target=8 --dataset npz --data-dir cifar10.npz
      ibau defend --model record/badnet/attack_result.pt --dataset cifar10 --data-dir data
      torchrun --nproc-per-node 4 -m ibau defend --model runs/wm/model.safetensors --dataset cifar10 --data-dir data

    Under torchrun (I-BAU only) every rank runs the same defense on its share of each clean batch
    (docs/scale.md); rank 0 alone logs, shows progress and writes the files.
    """
    from .attacks import parse_options
    from .models import save_model
    from .models.backdoorbench import PoisonedTestTrigger
    from .pipeline.defend import build_defense, load_external, run_defense, trigger_for, write_report

    main_rank, device = _torchrun_role(method, device)
    progress = progress and main_rank
    loaded = load_external(model, dataset, data_dir, download, clean_size, seed, arch, num_classes, normalize)
    net, card, clean, held = loaded.model, loaded.card, loaded.clean, loaded.held
    defense = build_defense(method, card, preset=preset, seed=seed, device=device, rounds=rounds,
                            batch_size=batch_size, options=parse_options(defense_option), data_dir=data_dir,
                            download=download)
    trigger = trigger_for(card, attack_from, trigger_text, loaded)
    result, before, after = run_defense(defense, net, clean, held, trigger, card.num_classes, progress=progress)
    if not main_rank:
        return  # the other ranks hold the same model; rank 0 writes it and the report
    if trigger is not None and "attack" not in card.metadata and not isinstance(trigger, PoisonedTestTrigger):
        card.metadata["attack"] = trigger.spec()  # --trigger: so `ibau evaluate` on the defended model knows it
    card.metadata = {**card.metadata, "defense": method, "defended_from": str(model), "after": after}
    if defense.arch_prefix and not card.arch.startswith(defense.arch_prefix):
        card.arch = defense.arch_prefix + card.arch  # e.g. DP-SGD's model has GroupNorm in place of BatchNorm
    save_model(result.model, out / "model.safetensors", card)
    write_report(out, f"ibau defend --method {method}: {Path(model).name} on {dataset}", defense, result, before,
                 after, trigger, tuple(held.shape), {},
                 f"{len(clean)} clean images from the {dataset} test split for the defense (seed {seed}); "
                 f"{len(held)} other test images for every metric.",
                 {"model": str(model), "dataset": dataset, "seed": seed, "device": str(defense._device),
                  "sizes": {"clean": len(clean), "held_out": len(held)}})
    typer.echo(f"wrote {out}/model.safetensors, metrics.json, report.md, delta.png" + (", curve.png" if trigger else ""))


def _torchrun_role(method: str, device: str | None) -> tuple[bool, str | None]:
    """Under torchrun: whether this process is rank 0, the one that logs and writes, and its device (a bare
    ``cuda`` becomes ``cuda:LOCAL_RANK``); ``(True, device)`` in a single process. Only I-BAU shards its
    work across ranks: another defense would run whole on every rank, so it is refused."""
    from .unlearn import distributed
    from .utils import resolve_device

    if not distributed.launched_by_torchrun():
        return True, device
    if method != "ibau":
        raise ValueError(f"under torchrun only --method ibau runs data-parallel; run {method} in a single process")
    main_rank = distributed.is_main_process()
    if not main_rank:
        logging.getLogger("ibau").setLevel(logging.ERROR)  # rank 0 alone logs; main() restores the level
    return main_rank, str(distributed.local_device(resolve_device(device)))


@app.command("evaluate")
def evaluate_cmd(
    model: Path = _model_opt(),
    dataset: str = _dataset_opt(),
    data_dir: str | None = _data_dir_opt(),
    download: bool = _download_opt(),
    clean_size: int = typer.Option(5000, help="Test images reserved for the defender; metrics use the rest."),
    attack_from: Path | None = _attack_from_opt(),
    trigger_text: str | None = _trigger_opt(),
    arch: str | None = _arch_opt(),
    num_classes: int | None = _num_classes_opt(),
    normalize: str | None = _normalize_opt(),
    seed: int = typer.Option(0, help="Seed of the clean/held-out split (use the defense's)."),
) -> None:
    """Print ACC (and ASR/RA when the trigger is known) of a model on held-out test images as JSON on
    stdout (log lines go to stderr).

    Examples:
      ibau evaluate --model runs/defend/model.safetensors --dataset digits --clean-size 400
      ibau evaluate --model badnets_8_02_ckpt.pth --arch small_vgg --trigger badnets,target=8 --dataset npz --data-dir cifar10.npz
      ibau evaluate --model resnet.pt --arch torchvision:resnet18 --normalize imagenet --dataset npz --data-dir cifar10.npz
    """
    from .metrics import evaluate
    from .pipeline.defend import load_external, trigger_for
    from .records import new_record

    _quiet_stdout()
    loaded = load_external(model, dataset, data_dir, download, clean_size, seed, arch, num_classes, normalize)
    net, card, held = loaded.model, loaded.card, loaded.held
    trigger = trigger_for(card, attack_from, trigger_text, loaded)
    metrics = evaluate(net, held.images, held.labels, trigger, card.num_classes)
    record = new_record("evaluate", model=str(model), dataset=dataset, seed=seed, held_out=len(held), **metrics)
    typer.echo(json.dumps(record, indent=2))


@app.command()
def presets(name: str | None = typer.Argument(None, help="Show one preset (default: list them all).")) -> None:
    """Print the I-BAU presets as JSON: default, reference (authors' code), paper (Algorithm 1).

    Example: ibau presets reference
    """
    table = {k: f().to_dict() for k, f in IBAU_PRESETS.items()}
    if name is not None:
        if name not in table:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(table)}")
        table = table[name]
    typer.echo(json.dumps(table, indent=2))


@app.command()
def bench(
    suite: str = typer.Option(..., help=f"{_names(SUITES)}, or a .json suite file."),
    preset: str = typer.Option("smoke", help=f"Scale of the grid: {_names(BENCH_PRESETS)} (smoke: digits, minutes; "
                               "cpu: CIFAR-10 npz, hours on 2 cores; cpu_gtsrb: the same on gtsrb.npz; paper: GPU)."),
    data_dir: str | None = _data_dir_opt(),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for models/, records/, artifacts/, suites/ "
                             "(with --executor ray, a path every worker can reach)."),
    executor: str = typer.Option("local", help="local: this machine (--jobs); ray: every job a Ray task "
                                 "(needs Ray: the 'ray' extra of ibau)."),
    jobs: int = typer.Option(1, help="Independent jobs run at once in separate processes (--executor local)."),
    address: str | None = typer.Option(None, help="Ray cluster to join, e.g. auto (default: Ray's: RAY_ADDRESS, "
                                       "a `ray start` cluster on this machine, else a new local instance)."),
    cpus_per_job: float | None = typer.Option(None, help="CPUs a Ray job reserves, and its torch threads (default 1)."),
    gpus_per_job: float | None = typer.Option(None, help="GPUs a Ray job reserves (default 1 with --device cuda, else 0)."),
    device: str | None = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA if available)."),
    retry_errors: bool = typer.Option(False, help="Run again the jobs whose record is an error."),
    defenses: str | None = typer.Option(None, help="Comma-separated subset of the suite's defenses (default: all); "
                                    "columns run before into the same --out stay in its report."),
    attacks: str | None = typer.Option(None, help="Comma-separated subset of the suite's rows, by label, e.g. "
                                       "BadNets (default: all; a label with commas is named whole, e.g. \"BadNets, model seed 1\"); "
                                       "rows run before into the same --out stay in its report."),
    report: bool = typer.Option(True, help="Build the report (out/report) when the grid is done."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run nothing: list the jobs left to run in --out, with "
                                 "the hours they would take at the pace of the folder's finished jobs."),
) -> None:
    """Run a suite of the paper's experiments as a resumable grid: finished jobs are skipped on a re-run.

    Example: ibau bench --suite one_trigger --preset cpu --data-dir ../shared/data/cifar10.npz --out runs/bench

    On a Ray cluster (after `ray start --head`): ibau bench --suite one_trigger --executor ray --address auto
    """
    from .bench import bench_plan, build_report, plan_status, run_bench, status_lines
    from .bench.grid import make_executor

    subset = [d.strip() for d in defenses.split(",") if d.strip()] if defenses else None
    rows = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else None
    if dry_run:
        for line in status_lines(plan_status(bench_plan(suite, preset, subset, rows), out, retry_errors)):
            typer.echo(line)
        return
    runner = make_executor(executor, jobs=jobs, address=address, cpus_per_job=cpus_per_job, gpus_per_job=gpus_per_job,
                           device=device)
    counts = run_bench(suite, preset, out, data_dir=data_dir, device=device, retry_errors=retry_errors,
                       defenses=subset, executor=runner, attacks=rows)
    typer.echo(f"{counts['ran']} jobs run now, {counts['done']} already done, {counts['errors']} errors")
    if report:
        written = build_report(out)
        typer.echo(f"report: {written['report.html']}")


@app.command("report")
def report_cmd(
    folders: list[Path] = typer.Argument(..., help="Folder(s) written by `ibau bench`; several only with --pages."),
    dest: Path | None = typer.Option(None, help="Where to write (default FOLDER/report, with --pages FOLDER/paper)."),
    pages: bool = typer.Option(False, "--pages", help="Write one page per table and figure of the paper from every "
                               "FOLDER's runs (e.g. a CIFAR-10 and a GTSRB bench folder), with the paper's claims."),
) -> None:
    """Build markdown/CSV tables, plots and report.html from bench folders' stored records only.

    Examples:
      ibau report runs/bench
      ibau report runs/bench_cpu runs/bench_cpu_gtsrb --pages --dest docs/paper
    """
    from .bench import build_paper_pages, build_report

    if pages:
        written = build_paper_pages(folders, dest if dest is not None else folders[0] / "paper")
    elif len(folders) > 1:
        raise ValueError(f"{len(folders)} folders given; a bench report is built from one, or add --pages to "
                         "combine several into the paper's pages")
    else:
        written = build_report(folders[0], dest)
    for name in sorted(written):
        typer.echo(str(written[name]))


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors the user can fix (:data:`ibau.errors.USER_ERRORS`) are one line with exit code 2
    unless ``--debug``; anything else is a bug and keeps its traceback."""
    args = sys.argv[1:] if argv is None else list(argv)
    session = _Session()
    package_logger = logging.getLogger("ibau")
    handler, level = _EchoHandler(), package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        app(args=args, prog_name="ibau", obj=session)
    except USER_ERRORS as exc:
        if session.debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(level)
