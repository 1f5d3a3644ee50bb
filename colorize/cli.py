"""The ``colorize`` command (also ``python -m colorize``): thin wrappers over library functions."""
import argparse
import errno
import json
import sys
from pathlib import Path
from typing import List, Optional

from colorize.data.manifest import SPLITS
from colorize.errors import ColorizeError, Stopped
from colorize.io import destination


def _count(text: str) -> int:
    """The argparse type of counts and sizes: a whole number from 1 on."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _png(text: str) -> str:
    """The argparse type of the pictures colorize draws: a path whose name ends in .png."""
    if Path(text).suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"colorize draws PNG pictures: name the file with .png, as "
                                         f"{Path(text).with_suffix('.png')}")
    return text


def _prepare(args) -> int:
    from colorize.data.prepare import PrepareSettings, prepare

    given = {name: getattr(args, name) for name in ("resolution", "val_fraction", "test_fraction", "seed", "dtype")
             if hasattr(args, name)}
    settings = PrepareSettings(**given)  # what is not given keeps PrepareSettings' default
    manifest = prepare(args.data, Path(args.out), settings, cache_dir=args.cache_dir)
    counts = ", ".join(f"{name} {entry['count']:,}" for name, entry in manifest["splits"].items())
    classes = len(manifest["classes"])
    print(f"{args.out}: {counts} images of {classes} class{'es' if classes > 1 else ''}")
    return 0


def _train(args) -> int:
    from colorize.engine.trainer import train_from_cli

    if (args.config is None) == (args.resume is None):
        raise ColorizeError("give either --config FILE (a new run) or --resume RUN_DIR")
    train_from_cli(args.config, args.overrides, args.resume, trust_code=args.trust_code)
    return 0


def _evaluate(args) -> int:
    from colorize.engine.evaluate import evaluate_run

    metrics = evaluate_run(Path(args.checkpoint), args.data, args.split, args.temperature, args.trust_code,
                           args.shift_average)
    if metrics is None:  # not the main process
        return 0
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    per_class = metrics.pop("per_class")
    for name, value in metrics.items():
        print(f"{name:<20}{value:.4f}" if isinstance(value, float) else f"{name:<20}{value}")
    print(f"\n{'class':<20}{'ab L1':>8}{'colourfulness':>15}{'images':>8}")
    for name, figures in per_class.items():
        print(f"{name:<20}{figures['ab_l1']:>8.3f}{figures['colorfulness_ratio']:>15.3f}{figures['images']:>8}")
    return 0


def _colorize(args) -> int:
    from colorize.commands.inference import colorize_files

    report = colorize_files(Path(args.checkpoint), args.inputs, Path(args.out), batch_size=args.batch_size,
                            temperature=args.temperature, trust_code=args.trust_code,
                            shift_average=args.shift_average)
    for line in report.failed:
        print(f"colorize colorize: error: {line}", file=sys.stderr)
    written, passed_over = len(report.written), report.passed_over
    print(f"colourized {written} image{'' if written == 1 else 's'} into {args.out}"
          + (f"; {len(report.failed)} failed" if report.failed else "")
          + (f"; passed over {len(passed_over)} {'file' if len(passed_over) == 1 else 'files'} whose suffix is "
             f"not an image's, such as {passed_over[0]}" if passed_over else ""))
    return 1 if report.failed else 0


def _export(args) -> int:
    from colorize.commands.export import export_run

    print(f"wrote {export_run(Path(args.run_dir), Path(args.out), args.replace, args.trust_code)}")
    return 0


def _report(args) -> int:
    from colorize.commands.report import per_class_table, plot_frontier, report_table

    run_dirs = [Path(d) for d in args.run_dirs]
    print((per_class_table if args.per_class else report_table)(run_dirs, args.trust_code))
    if args.plot:
        plot_frontier(run_dirs, Path(args.plot), args.trust_code)
        print(f"wrote {args.plot}")
    return 0


def _compare(args) -> int:
    from colorize.commands.compare import compare_runs

    out = compare_runs([Path(d) for d in args.run_dirs], Path(args.out), args.per_class, args.data,
                       args.temperatures, args.trust_code)
    print(f"wrote {out}")
    return 0


def _list(args) -> int:
    from colorize.commands.listing import describe_components

    print(describe_components(args.resolution, args.config))
    return 0


def _bench_loader(args) -> int:
    from colorize.bench.loader import format_loader_table, loader_benchmark

    result = loader_benchmark(Path(args.data), batch_size=args.batch_size, epochs=args.epochs)
    print(json.dumps(result, indent=2) if args.json else format_loader_table(result))
    return 0


def _bench_train(args) -> int:
    from colorize.bench.profile import profile_step
    from colorize.bench.train import format_train_table, train_benchmark

    if args.profile:
        print(profile_step(Path(args.data), args.batch_size, top=args.profile, overrides=args.set))
        return 0
    result = train_benchmark(Path(args.data), steps=args.steps, batch_size=args.batch_size, skip=args.skip,
                             overrides=args.set)
    print(json.dumps(result, indent=2) if args.json else format_train_table(result))
    return 0


def _bench_prepare(args) -> int:
    from colorize.bench.prepare import format_prepare_table, prepare_benchmark

    result = prepare_benchmark(args.images, args.size, args.resolutions, args.folder)
    print(json.dumps(result, indent=2) if args.json else format_prepare_table(result))
    return 0


_TRUST_CODE_HELP = ("import the modules a run's imports: or a saved model's config.json name, to register "
                    "networks of their own; this runs their code, so only for runs and models you trust")
_TEMPERATURE_HELP = ("for a network with a bin head: the annealed-mean temperature (1: the mean colour, "
                     "towards 0: the most likely one; default: the recipe's model.temperature)")
_SHIFT_AVERAGE_HELP = ("also average each prediction over the image moved by one pixel up, down, left and right "
                       "(5 times the evaluation time; default: the recipe's model.shift_average)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize", description="Train automatic image colourization networks and colourize images with them.",
        epilog="colorize COMMAND --help describes a command; the guide is docs/usage.md")
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="turn a data source into FFCV files of LAB images")
    prepare.add_argument("--data", required=True,
                         help="'cifar10' (download), cifar-10-python.tar.gz or cifar-10-batches-py/, "
                              "an image folder, or a .tar/.tar.gz of one")
    prepare.add_argument("--out", required=True, help="directory for the .beton files and manifest")
    prepare.add_argument("--val-fraction", type=float, default=argparse.SUPPRESS,
                         help="held out of train, per class (default 0.1)")
    prepare.add_argument("--test-fraction", type=float, default=argparse.SUPPRESS,
                         help="held out when the source has no test split (default 0.1)")
    prepare.add_argument("--seed", type=int, default=argparse.SUPPRESS)
    prepare.add_argument("--resolution", type=int, default=argparse.SUPPRESS,
                         help="images are centre-cropped and resized (default 32)")
    prepare.add_argument("--dtype", default=argparse.SUPPRESS, choices=("float32", "float16"),
                         help="storage type of the LAB values (default float32)")
    prepare.add_argument("--cache-dir", type=Path, default=None,
                         help="where 'cifar10' is downloaded (default: $COLORIZE_CACHE or ~/.cache/colorize)")
    prepare.set_defaults(run=_prepare)

    train = commands.add_parser("train", help="train a model (under accelerate launch for several processes)")
    train.add_argument("--config", help="a YAML recipe, e.g. configs/reference.yaml, or the name of one that "
                                        "colorize ships, e.g. reference")
    train.add_argument("--resume", help="continue the run in this directory from its last checkpoint")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides of config settings, e.g. train.epochs=5 data.dir=data/x")
    train.add_argument("--trust-code", action="store_true",
                       help="with --resume: import the modules the run's imports: name; this runs their "
                            "code, so only for runs you trust")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="metrics of a run's best checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="a run directory")
    evaluate.add_argument("--data", help="a prepared directory (default: the run's data.dir)")
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--temperature", type=float, help=_TEMPERATURE_HELP)
    evaluate.add_argument("--shift-average", action=argparse.BooleanOptionalAction, help=_SHIFT_AVERAGE_HELP)
    evaluate.add_argument("--trust-code", action="store_true", help=_TRUST_CODE_HELP)
    evaluate.set_defaults(run=_evaluate)

    colorize = commands.add_parser("colorize", help="colourize your own images with a trained run")
    colorize.add_argument("--checkpoint", required=True,
                          help="a run directory (its best/ model is used) or a folder from colorize export")
    colorize.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, directories or globs")
    colorize.add_argument("--out", required=True, help="directory for the colourized PNGs")
    colorize.add_argument("--batch-size", type=_count, default=16)
    colorize.add_argument("--temperature", type=float, help=_TEMPERATURE_HELP)
    colorize.add_argument("--shift-average", action=argparse.BooleanOptionalAction, help=_SHIFT_AVERAGE_HELP)
    colorize.add_argument("--trust-code", action="store_true", help=_TRUST_CODE_HELP)
    colorize.set_defaults(run=_colorize)

    export = commands.add_parser("export", help="write a run's best model as a folder that loads anywhere")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("out", metavar="OUT", help="the folder to write (config.json, model.safetensors, README.md)")
    export.add_argument("--replace", action="store_true",
                        help="overwrite the saved model an earlier export wrote to OUT (nothing else is ever "
                             "overwritten)")
    export.add_argument("--trust-code", action="store_true", help=_TRUST_CODE_HELP)
    export.set_defaults(run=_export)

    report = commands.add_parser("report", help="run directories as a Markdown results table")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="runs of one recipe that differ only in train.seed become one row")
    report.add_argument("--per-class", action="store_true",
                        help="instead, each class's test ab L1 and colourfulness ratio per recipe")
    report.add_argument("--plot", metavar="FILE", type=_png,
                        help="also draw test colourfulness ratio against test ab L1 (a PNG)")
    report.add_argument("--trust-code", action="store_true", help=_TRUST_CODE_HELP)
    report.set_defaults(run=_report)

    compare = commands.add_parser("compare", help="the same validation images colourized by several runs, "
                                                  "in one picture")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", required=True, type=_png, help="the PNG to write")
    compare.add_argument("--per-class", type=_count, default=1, help="validation images per class")
    compare.add_argument("--data", help="a prepared directory (default: the first run's data.dir)")
    compare.add_argument("--temperatures", type=float, nargs="+", default=(), metavar="T",
                         help="a row per temperature for runs whose network has a bin head")
    compare.add_argument("--trust-code", action="store_true", help=_TRUST_CODE_HELP)
    compare.set_defaults(run=_compare)

    listing = commands.add_parser("list", help="the registered models, losses, optimizers and schedules")
    listing.add_argument("--resolution", type=int, default=32, help="for the models' GFLOP per image")
    listing.add_argument("--config", help="a recipe whose imports: register components of your own")
    listing.set_defaults(run=_list)

    bench = commands.add_parser("bench", help="measure throughput")
    benches = bench.add_subparsers(dest="bench", required=True)
    loader = benches.add_parser("loader", help="images/s of FFCV, the memory loader and per-item decoding")
    loader.add_argument("--data", required=True, help="a prepared directory")
    loader.add_argument("--batch-size", type=_count, default=512)
    loader.add_argument("--epochs", type=_count, default=3, help="timed epochs per loader, after a warm-up one")
    loader.add_argument("--json", action="store_true", help="print the figures as JSON")
    loader.set_defaults(run=_bench_loader)
    training = benches.add_parser("train", help="training images/s against the report's pipeline and "
                                               "the machine's matmul peak")
    training.add_argument("--data", required=True, help="a prepared directory")
    training.add_argument("--steps", type=_count, help="timed batches per entry, after as many warm-up ones "
                          "(default: more on a GPU than on a CPU; the table says how many)")
    training.add_argument("--batch-size", type=_count, default=512)
    training.add_argument("--skip", nargs="+", default=[],
                          choices=("fp32", "bf16", "eager", "captured", "make_train", "cpu_ddp"),
                          help="entries to leave out (the report's pipeline is the baseline of the others)")
    training.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                          help="settings for the colorize train entries, e.g. train.compile=true")
    training.add_argument("--profile", type=int, metavar="TOP", default=0,
                          help="instead, profile a training step and print its TOP operators by time")
    training.add_argument("--json", action="store_true", help="print the figures as JSON")
    training.set_defaults(run=_bench_train)
    preparing = benches.add_parser("prepare", help="images/s and peak memory of colorize prepare on "
                                                   "generated JPEG photos")
    preparing.add_argument("--images", type=_count, default=20_000, help="photos to generate and prepare")
    preparing.add_argument("--size", type=_count, default=256, help="the photos' side in pixels")
    preparing.add_argument("--resolutions", type=_count, nargs="+", default=[32, 64], metavar="R",
                           help="a colorize prepare --resolution per entry")
    preparing.add_argument("--folder", type=Path, default=None,
                           help="where the photos are generated, or were (default: under $COLORIZE_CACHE)")
    preparing.add_argument("--json", action="store_true", help="print the figures as JSON")
    preparing.set_defaults(run=_bench_prepare)
    return parser


# what the file system's "Not a directory" and "File exists" mean when a folder is to be made
_NOT_A_FOLDER = {errno.ENOTDIR: "a part of this path is a file, not a folder",
                 errno.EEXIST: "this is a file, not a folder"}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Stopped as stop:
        print(f"colorize {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except ColorizeError as error:
        print(f"colorize {args.command}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # what the file system refused (a folder that cannot be made, a full disk),
        # named by the path asked for rather than the temporary name it was being written under
        names = dict.fromkeys(destination(name) for name in (error.filename, error.filename2) if name is not None)
        where = "".join(f"{name}: " for name in names)
        reason = _NOT_A_FOLDER.get(error.errno) or error.strerror or error
        print(f"colorize {args.command}: error: {where}{reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"colorize {args.command}: interrupted", file=sys.stderr)
        return 130
