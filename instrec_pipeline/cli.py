"""``instrec``: the command-line door. ``instrec demo`` materialises the whole graph on the embedded demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dagster import AssetSelection, DagsterInstance, MultiPartitionKey, materialize

from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS
from instrec_pipeline.defs.resources import StoreResource
from instrec_pipeline.models import AUDIO_MODELS
from instrec_pipeline.settings import InstanceSettings

TRAINING = [*(f"audio_model_{m}" for m in AUDIO_MODELS), "video_model", "fusion_model", "evaluation_report"]


def _instance() -> DagsterInstance:
    """The persistent instance of ``$DAGSTER_HOME`` (so ``dagster dev`` shows these runs), else ephemeral."""
    return DagsterInstance.get() if InstanceSettings.read().dagster_home else DagsterInstance.ephemeral()


def materialize_dataset(
    dataset: str, root: Path | None = None, instance: DagsterInstance | None = None
) -> None:
    """Every asset of every partition of ``dataset``: extraction per split, then the per-dataset models."""
    from instrec_pipeline.definitions import defs

    loaded = defs()
    assets = [*loaded.assets, *loaded.asset_checks]
    resources = dict(loaded.resources)
    if root is not None:
        resources["store"] = StoreResource(root=str(root))
    instance = instance or _instance()
    for split in SPLITS:
        key = MultiPartitionKey({"dataset": dataset, "split": split})
        _run(assets, resources, instance, EXTRACTION_ASSETS, key, f"{dataset}|{split}")
    _run(assets, resources, instance, TRAINING, dataset, dataset)


def _run(
    assets: list, resources: dict, instance: DagsterInstance, names: list[str], key: object, label: str
) -> None:
    start = time.perf_counter()
    result = materialize(
        assets,
        selection=AssetSelection.assets(*names),
        partition_key=key,
        resources=resources,
        instance=instance,
    )
    if not result.success:
        raise SystemExit(f"materialising {label} failed")
    print(f"  {label}: {', '.join(names)} materialised in {time.perf_counter() - start:.0f} s", flush=True)


def _demo(args: argparse.Namespace) -> None:
    from instrec_pipeline.store.layout import default_root

    root = Path(args.root).resolve() if args.root else default_root()
    start = time.perf_counter()
    print(f"Materialising every asset of the demo dataset into {root} …", flush=True)
    materialize_dataset("demo", root)
    report = root / "reports" / "demo" / "report.md"
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Report: {report}")
    print((root / "reports" / "demo" / "summary.csv").read_text())
    print("Web UI: `make ui` (dg dev on http://127.0.0.1:3000) → Assets → evaluation_report.")


def _predict(args: argparse.Namespace) -> None:
    """Each video's prediction; a video or model that cannot be used is one line on stderr, and exit 1."""
    import pickle

    from instrec_pipeline.media.errors import MediaError
    from instrec_pipeline.predict import format_prediction, predict_video
    from instrec_pipeline.store.layout import Layout, default_root

    layout = Layout(Path(args.root).resolve() if args.root else default_root())
    failed = 0
    for video in args.videos:
        try:
            if not Path(video).is_file():
                raise FileNotFoundError("no such file")
            pred = predict_video(Path(video), layout, args.dataset, args.device)
        except MediaError as exc:
            why = exc.reason
        except FileNotFoundError as exc:
            why = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        except (pickle.UnpicklingError, RuntimeError, KeyError, ValueError, EOFError) as exc:
            why = f"cannot use the trained models of {args.dataset!r} ({type(exc).__name__}: {exc})"
        else:
            print(f"{video} (models of {args.dataset}):\n{format_prediction(pred, args.top)}")
            continue
        failed += 1
        print(f"instrec predict: {video}: {str(why).splitlines()[0] if why else 'failed'}", file=sys.stderr)
    if failed:
        raise SystemExit(1)


def _datasets(_: argparse.Namespace) -> None:
    """The datasets the code location sees, and what is wrong with the datasets file (exit 1 if anything)."""
    from instrec_pipeline.datasets.registry import config_problems, datasets

    for name, spec in datasets().items():
        print(f"{name}: {len(spec.classes)} classes{', multi-label' if spec.multilabel else ''}")
    problems = config_problems()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="instrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="materialise the whole graph on the embedded demo dataset")
    demo.add_argument("--root", help="store root (default $INSTREC_HOME or ./data)")
    demo.set_defaults(func=_demo)
    predict = sub.add_parser("predict", help="instrument probabilities of new videos, per modality and fused")
    predict.add_argument("videos", nargs="+", help="video file(s)")
    predict.add_argument("--dataset", default="demo", help="whose trained models to use (default demo)")
    predict.add_argument("--root", help="store root (default $INSTREC_HOME or ./data)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--top", type=int, default=3)
    predict.set_defaults(func=_predict)
    listing = sub.add_parser("datasets", help="list the datasets and check the datasets file")
    listing.set_defaults(func=_datasets)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
