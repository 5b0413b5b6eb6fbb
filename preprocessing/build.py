r"""Builds scene-graph records: `python -m preprocessing.build --dataset NAME [options]`.

    python -m preprocessing.build --dataset oscar_demo                  # the embedded demo set
    python -m preprocessing.build --dataset psbattles24k --manual_dir ~/ps-battles --workers 16
    python -m preprocessing.build --dataset distractors --input ~/stock --config_name stock
    python -m preprocessing.build --dataset oscar_demo --detector coco_json \
        --detector_option path=detections.json                          # Mask R-CNN from elsewhere
    python -m preprocessing.build --dataset oscar_demo --beam        # as an Apache Beam pipeline
    python -m preprocessing.build --dataset oscar_demo --beam_runner FlinkRunner \
        --beam_option flink_master=HOST:8081 --beam_option environment_type=DOCKER \
        --beam_option sdk_container_image=IMAGE   # on a cluster that shares --data_dir

Resumable: kill it at any moment and run the same command again; finished work is reused
and the records are the same as those of an uninterrupted run. Every input gets one outcome
(ok, skipped with a reason, error with a reason) in `<data_dir>/_work/.../outcomes.jsonl`,
and the summary printed at the end reconciles with the records written.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging as std_logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import app, flags, logging

from preprocessing.datasets import base
from preprocessing.datasets.distractors import Distractors
from preprocessing.datasets.oscar_demo import OscarDemo
from preprocessing.datasets.psbattles24k import Psbattles24k

DATASETS: dict[str, type[base.SceneGraphBuilder]] = {
    "oscar_demo": OscarDemo,
    "psbattles24k": Psbattles24k,
    "distractors": Distractors,
}
DEFAULT_DATA_DIR = "data"


@dataclasses.dataclass
class BuildResult:
    """What a build produced: where the records are and what happened to every input."""

    builder: base.SceneGraphBuilder
    summary: dict
    outcomes_path: str
    seconds: float

    @property
    def records_per_second(self) -> float:
        return self.summary["totals"]["ok"] / max(self.seconds, 1e-9)


def _coerce(config: base.SceneGraphConfig, field: str, text: str) -> Any:
    """Parses a `--set field=value` string to the type of that config field."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    if field not in fields:
        settable = sorted(set(fields) - {"name", "version", "release_notes", "supported_versions",
                                         "description", "tags"})
        raise ValueError(f"{type(config).__name__} has no field {field!r}; settable: {settable}")
    current = getattr(config, field)
    # Annotations are strings (postponed evaluation); the config fields use plain types.
    hint = str(fields[field].type)
    if text.lower() in ("none", "null") and "None" in hint:
        return None
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--set {field}= takes true or false, not {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(current, tuple):
        return tuple(float(v) for v in text.split(",") if v)
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float) or "float" in hint:
        return float(text)
    return text


def make_config(
    dataset: str,
    config: str = "default",
    *,
    overrides: Mapping[str, str] | None = None,
    detector: str | None = None,
    detector_options: Mapping[str, Any] | None = None,
    input_path: str | None = None,
    config_name: str | None = None,
) -> base.SceneGraphConfig:
    """A builder config by name, with overrides; a changed config gets its own name (and so
    its own folder), so records of different settings never mix."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    configs = {c.name: c for c in DATASETS[dataset].BUILDER_CONFIGS}
    if config not in configs:
        raise ValueError(f"{dataset} has no config {config!r}; choose one of {sorted(configs)}")
    chosen = configs[config]
    changes: dict[str, Any] = {k: _coerce(chosen, k, v) for k, v in (overrides or {}).items()}
    if detector is not None:
        changes["detector"] = detector
    if detector_options:
        changes["detector_options"] = tuple(sorted(detector_options.items()))
    if input_path is not None:
        changes["input"] = os.path.abspath(input_path)
        if config_name is None:
            stem = os.path.splitext(os.path.basename(os.path.normpath(input_path)))[0]
            config_name = "".join(c if c.isalnum() or c in "_-" else "_" for c in stem) or "input"
    changes = {k: v for k, v in changes.items() if getattr(chosen, k) != v}
    if changes and config_name is None:
        config_name = f"{config}-{base.fingerprint(changes)[:8]}"
    if not changes and config_name is None:
        return chosen
    return dataclasses.replace(chosen, name=config_name or config, **changes)


def parse_options(pairs: Sequence[str], *, typed: bool) -> dict[str, Any]:
    """`key=value` strings -> dict; with `typed`, values that read as JSON are decoded."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        options[key] = value
        if typed:
            try:
                options[key] = json.loads(value)
            except json.JSONDecodeError:
                pass
    return options


def beam_pipeline(runner: str | None = None, options: Sequence[str] = (), workers: int = 0):
    """(runner, PipelineOptions) for TFDS's `DownloadConfig(beam_runner=, beam_options=)`.

    Args:
      runner: a Beam runner name (DirectRunner, FlinkRunner, SparkRunner, DataflowRunner, ...)
        or the dotted path of a runner class; None: the DirectRunner.
      options: pipeline options as `key=value` (or `key` for a switch), e.g.
        `flink_master=host:8081`; Beam warns about, and ignores, names it does not know.
      workers: DirectRunner worker processes (multi-processing mode); 0: in-process.
    """
    root = std_logging.getLogger()
    level = root.level
    root.setLevel(std_logging.ERROR)
    try:  # Beam warns on the root logger that Google Cloud clients, unused here, are absent
        from apache_beam.options.pipeline_options import PipelineOptions
        from apache_beam.runners import create_runner
    finally:
        root.setLevel(level)

    try:  # a wrong name, or a runner whose extra is not installed, fails before any work
        beam_runner = create_runner(runner or "DirectRunner")
    except ImportError as e:
        raise ValueError(f"Beam runner {runner}: {e}") from e
    args = [f"--{option.lstrip('-')}" for option in options]
    if workers:
        if not type(beam_runner).__name__.endswith("DirectRunner"):
            raise ValueError(f"--beam_workers is a DirectRunner setting; {runner} takes its "
                             "parallelism from its own options (--beam_option ...)")
        args = ["--direct_num_workers", str(workers),
                "--direct_running_mode", "multi_processing", *args]
    return beam_runner, PipelineOptions(args)


def build(
    dataset: str,
    *,
    data_dir: str = DEFAULT_DATA_DIR,
    config: str | base.SceneGraphConfig = "default",
    workers: int = 0,
    manual_dir: str | None = None,
    beam: bool = False,
    beam_workers: int = 0,
    beam_runner: str | None = None,
    beam_options: Sequence[str] = (),
    overwrite: bool = False,
    verbose: bool = True,
) -> BuildResult:
    """Builds (or finishes building) one data set; returns its outcome summary.

    Args:
      dataset: a name in DATASETS.
      data_dir: root of the TFDS data folder; records go to `data_dir/NAME/CONFIG/VERSION`.
      config: a config name of that builder, or a config object (see `make_config`).
      workers: worker processes (0: everything in this process).
      manual_dir: folder of manually downloaded inputs (PS-Battles).
      beam: run the builders as an Apache Beam pipeline (on the DirectRunner by default).
      beam_workers: DirectRunner worker processes (0: in-process).
      beam_runner: Beam runner name (implies `beam`); see `beam_pipeline`.
      beam_options: Beam pipeline options as `key=value` (implies `beam`).
      overwrite: rewrite the records even if they exist (finished chunks are still reused).
      verbose: print the summary table.
    """
    if isinstance(config, str):
        config = make_config(dataset, config)
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    builder = DATASETS[dataset](data_dir=data_dir, config=config, workers=workers, use_beam=beam)
    dataset_dir = os.path.dirname(builder.data_dir)
    for leftover in glob.glob(os.path.join(dataset_dir, f"incomplete.*{builder.version}")):
        shutil.rmtree(leftover, ignore_errors=True)  # from a run that was killed mid-write

    download_config = tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        download_mode=(tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
                       else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS),
    )
    if beam or beam_runner or beam_options:
        runner, options = beam_pipeline(beam_runner, beam_options, beam_workers)
        download_config = dataclasses.replace(download_config, beam_runner=runner,
                                              beam_options=options)

    start = time.perf_counter()
    already_built = os.path.isdir(builder.data_dir) and not overwrite
    tfds.disable_progress_bar()  # our own bar shows records, rate and ETA
    builder.download_and_prepare(download_config=download_config)
    seconds = time.perf_counter() - start

    outcomes = builder.outcomes()
    summary = base.summarize(outcomes)
    summary["records"] = {name: info.num_examples for name, info in builder.info.splits.items()}
    for split, count in summary["records"].items():
        logged = summary["splits"].get(split, {}).get("ok", 0)
        if logged != count:
            raise RuntimeError(
                f"{split}: the outcome log has {logged} ok items but {count} records were "
                f"written; delete {builder.work_dir} and rebuild"
            )
    summary.update(dataset=dataset, config=config.name, path=builder.data_dir,
                   seconds=round(seconds, 2), reused=already_built)
    outcomes_path = os.path.join(builder.work_dir, "outcomes.jsonl")
    base.write_outcomes(outcomes_path, outcomes)
    with open(os.path.join(builder.work_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    result = BuildResult(builder, summary, outcomes_path, seconds)
    if verbose:
        print(format_summary(result))
    return result


def export_views(
    dataset: str,
    out_dir: str,
    *,
    data_dir: str = DEFAULT_DATA_DIR,
    config: str | base.SceneGraphConfig = "default",
    manual_dir: str | None = None,
) -> dict:
    """Writes every view of a data set as `out_dir/<key>.png`, for detection elsewhere.

    Returns the outcome summary of the export (one outcome per view or dropped input).
    """
    if isinstance(config, str):
        config = make_config(dataset, config)
    builder = DATASETS[dataset](data_dir=os.path.abspath(data_dir), config=config)
    if dataset == "psbattles24k" and manual_dir is None:
        manual_dir = os.path.join(os.path.abspath(data_dir), "downloads", "manual")
    return base.summarize(builder.export_views(os.path.abspath(out_dir), manual_dir))


def format_summary(result: BuildResult) -> str:
    """The outcome table printed at the end of a build."""
    summary = result.summary
    lines = [f"{summary['dataset']}/{summary['config']} -> {summary['path']}"
             + ("  (already built: outcomes of the earlier build)" if summary["reused"] else "")]
    lines.append(f"  {'split':<14}{'ok':>8}{'skipped':>9}{'error':>7}")
    for split, counts in sorted(summary["splits"].items()):
        lines.append(f"  {split:<14}{counts['ok']:>8}{counts['skipped']:>9}{counts['error']:>7}")
    totals = summary["totals"]
    lines.append(f"  {'total':<14}{totals['ok']:>8}{totals['skipped']:>9}{totals['error']:>7}"
                 f"   = {totals['inputs']} outcomes")
    if not summary["reused"]:
        lines.append(f"  {totals['ok']} records in {result.seconds:.1f} s "
                     f"({result.records_per_second:.2f} records/s)")
    for reason, count in summary["reasons"].items():
        lines.append(f"  {count:>6} x {reason}")
    lines.append(f"  outcome log: {result.outcomes_path}")
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags, defined only when run as a program so that importing this module
    never claims flag names (the trainer has its own --config)."""
    flags.DEFINE_enum("dataset", None, sorted(DATASETS), "Which data set to build.")
    flags.DEFINE_string("config", "default", "Builder config name (e.g. default, tiny).")
    flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "TFDS data folder for the records.")
    flags.DEFINE_integer("workers", max(1, (os.cpu_count() or 1)), "Worker processes (0: none).")
    flags.DEFINE_string("manual_dir", None, "Folder of manually downloaded inputs (psbattles24k).")
    flags.DEFINE_string("input", None, "Folder or list file of images (distractors).")
    flags.DEFINE_string("config_name", None, "Name for a config changed by the flags below.")
    flags.DEFINE_string("detector", None,
                        "Detector backend: classical, coco_json, detectron2, oracle.")
    flags.DEFINE_multi_string("detector_option", [], "key=value option of the detector backend.")
    flags.DEFINE_multi_string("set", [], "field=value override of the builder config.")
    flags.DEFINE_bool("beam", False, "Run as an Apache Beam pipeline (DirectRunner).")
    flags.DEFINE_integer("beam_workers", 0, "DirectRunner worker processes.")
    flags.DEFINE_string("beam_runner", None, "Beam runner (implies --beam): DirectRunner, "
                        "FlinkRunner, SparkRunner, DataflowRunner, ...")
    flags.DEFINE_multi_string("beam_option", [], "key=value Beam pipeline option (implies "
                              "--beam), e.g. flink_master=HOST:8081.")
    flags.DEFINE_bool("overwrite", False, "Rewrite the records even if they exist.")
    flags.DEFINE_string("export_views", None, "Write every view as DIR/<key>.png instead of "
                        "building, to run a detector elsewhere and come back with coco_json.")


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # TFDS and Beam report every file at INFO
        logging.set_verbosity(logging.WARNING)
        std_logging.getLogger("tensorflow_datasets").setLevel(std_logging.WARNING)
        std_logging.getLogger("apache_beam").setLevel(std_logging.WARNING)
    try:
        config = make_config(
            FLAGS.dataset, FLAGS.config, overrides=parse_options(FLAGS.set, typed=False),
            detector=FLAGS.detector,
            detector_options=parse_options(FLAGS.detector_option, typed=True),
            input_path=FLAGS.input, config_name=FLAGS.config_name,
        )
        if FLAGS.export_views:
            summary = export_views(FLAGS.dataset, FLAGS.export_views, data_dir=FLAGS.data_dir,
                                   config=config, manual_dir=FLAGS.manual_dir)
            print(f"exported {summary['totals']['ok']} views to {FLAGS.export_views}; "
                  f"{summary['totals']['error']} errors {summary['reasons']}")
            return 1 if summary["totals"]["error"] else 0
        result = build(FLAGS.dataset, data_dir=FLAGS.data_dir, config=config,
                       workers=FLAGS.workers, manual_dir=FLAGS.manual_dir, beam=FLAGS.beam,
                       beam_workers=FLAGS.beam_workers, beam_runner=FLAGS.beam_runner,
                       beam_options=FLAGS.beam_option, overwrite=FLAGS.overwrite)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if result.summary["totals"]["error"] else 0


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("dataset")
    app.run(main)
