"""A run on CLIP_benchmark's data sets, as CLIP_benchmark reports them: one result file per data
set and scoring in its JSON format, so that `clip_benchmark build` (or `--build` here) makes
the table.

    python -m ig_captioner.benchmark --workdir=RUN --datasets=cifar10,imagenet1k,mscoco_captions \\
        [--data_dir=TFDS_DIR] [--manual_dir=DIR] [--output=DIR] [--alphas=0,1] [--step=N] \\
        [--skip_existing] [--max_templates=N] [--weightings=equal,logmeanexp,zpe] \\
        [--descriptions=cupl_prompts.json [--descriptions_key=imagenet1k]] [--zpe_images=N]
    python -m ig_captioner.benchmark --prepare --datasets=... --data_dir=...  # build the data
    python -m ig_captioner.benchmark --build --output=DIR                     # the table

`--datasets` takes CLIP_benchmark's names and collections (`evaluators/benchmark_sets.py`:
`imagenet_robustness`, `vtab`, `retrieval`). Each is evaluated by its TFDS name with
CLIP_benchmark's class names and templates and its metrics (`evaluators/protocol_metrics.py`),
for every scoring the run supports: `embedding` (two towers) and `ig_alpha<a>` (caption
likelihoods, s = log P(t|I) - a log P(t); a = 0 is the standard captioner), each with the
prompt ensembles asked for (`--weightings`; `--descriptions`: CuPL-style per-class sentences
instead of templates; see evaluators/prompt_ensembles.py). Nothing is
downloaded: data sets not prepared under `--data_dir` are listed first, with the `--prepare`
command that builds each. It runs on this host's devices.

Result files, in `--output` (default RUN/clip_benchmark): CLIP_benchmark's name template
`{dataset}_{pretrained}_{model}_{language}_{task}.json` with `model` the family and scoring
(`captioner-ig_alpha1.0`, `clip-embedding+zpe`, `captioner-ig_alpha1.0+descriptions`) and
`pretrained` the run and step (`RUN-step6`), holding its keys
(`dataset`, `model`, `pretrained`, `task`, `metrics`, `language`) and ours (`scoring`, `step`,
`workdir`, `templates`).
"""

import collections
import csv
import io
import json
import time

from absl import flags
import ml_collections

from ig_captioner import cli
from ig_captioner import errors
from ig_captioner import evaluators
from ig_captioner import inference
from ig_captioner import paths
from ig_captioner.data import presets
from ig_captioner.data import sources
from ig_captioner.evaluators import benchmark_sets
from ig_captioner.evaluators import prompt_ensembles

LANGUAGE = "en"
_ZEROSHOT_METRICS = ("acc1", "acc5", "mean_per_class_recall")
_STREAM_PROMPTS = 10_000  # Prompt sets this large are streamed with progress and an ETA.


def _eval_name(name: str) -> str:
  return "cb_" + benchmark_sets.slug(name).replace("-", "_")


def eval_entries(names, data_dir: str | None, manual_dir: str | None, alphas,
                 batch_size: int, max_templates: int = 0, prompting: dict | None = None
                 ) -> dict:
  """{data set name: its `config.evals` entry}; `prompting`: zero-shot fields (weightings,
  descriptions, descriptions_key, zpe_images, ...)."""
  out = {}
  for name in benchmark_sets.expand(names):
    entry = benchmark_sets.eval_config(name, data_dir, manual_dir, alphas=tuple(alphas),
                                       batch_size=batch_size)
    if "templates" in entry:
      if max_templates:
        entry.templates = tuple(entry.templates)[:max_templates]
      entry.update({k: v for k, v in (prompting or {}).items() if v is not None})
    out[name] = entry
  return out


def missing_data(run_config, entries: dict, data_dir: str | None,
                 manual_dir: str | None) -> list[str]:
  """'NAME (TFDS tfds_name at DIR): COMMAND' for each data set not prepared."""
  out = []
  for name, entry in entries.items():
    data = presets.with_overrides(run_config.data, entry.data)
    source = sources.get(data)
    if not source.is_prepared(False):
      command = f"python -m ig_captioner.benchmark --prepare --datasets={name}" + (
          f" --data_dir={data_dir}" if data_dir else "") + (
          f" --manual_dir={manual_dir or '<dir of its source files>'}"
          if benchmark_sets.DATA_SETS[name].manual else "")
      out.append(f"{name} (TFDS {data.name} at {source.location()}): {command}")
  return out


def scoring_results(name: str, metrics: dict, has_embeddings: bool) -> dict[str, dict]:
  """{scoring: CLIP_benchmark's metrics} of one data set's evaluator metrics (the merged
  retrieval variant left out). Caption scoring's image retrieval carries no alpha (the query
  caption's prior shifts every image alike): it joins each alpha's results, unless the family
  has embeddings, which then rank images."""
  stem = ("zeroshot/" if benchmark_sets.DATA_SETS[name].task == benchmark_sets.CLASSIFICATION
          else "retrieval/") + _eval_name(name) + "/"
  by_scoring, shared = collections.defaultdict(dict), {}
  for key, value in metrics.items():
    *prompting, metric = key.removeprefix(stem).split("/")
    base, _, alpha = metric.partition("_alpha")
    if base not in _ZEROSHOT_METRICS and "_retrieval_recall@" not in base:
      continue
    tag = "".join(f"+{p}" for p in prompting)  # 'descriptions', a weighting
    if alpha:
      by_scoring[f"ig_alpha{alpha}{tag}"][base] = value
    elif base.startswith("image_retrieval") and not has_embeddings:
      shared[base] = value
    else:
      by_scoring[f"embedding{tag}"][base] = value
  for scoring in by_scoring:
    if scoring.startswith("ig_"):
      by_scoring[scoring].update(shared)
  return dict(by_scoring)


def result_record(name: str, scoring: str, values: dict, run: inference.Run,
                  templates: int | None) -> dict:
  """One result file's content."""
  return dict(dataset=name, model=f"{run.family}-{scoring}", pretrained=_pretrained(run),
              task=benchmark_sets.DATA_SETS[name].task, metrics=values, language=LANGUAGE,
              scoring=scoring, step=run.step, workdir=run.workdir, templates=templates)


def result_path(output: str, record: dict) -> str:
  return paths.join(output, f"{benchmark_sets.slug(record['dataset'])}_{record['pretrained']}_"
                    f"{record['model']}_{record['language']}_{record['task']}.json")


def _pretrained(run: inference.Run) -> str:
  return f"{paths.path(run.workdir).name}-step{run.step}"


def _scorings(run: inference.Run, alphas, tags=("",)) -> list[str]:
  return [s + t for s in (["embedding"] if run.has_embeddings else []) + (
      [f"ig_alpha{float(a)}" for a in alphas] if run.has_captions else []) for t in tags]


def _tags(entry) -> list[str]:
  """The scoring suffixes the entry's prompt ensembles report under."""
  if "templates" not in entry:
    return [""]
  lead = "+descriptions" if entry.get("descriptions") else ""
  return [lead + ("" if w == "equal" else f"+{w}") for w in entry.get("weightings", ("equal",))]


def benchmark(workdir: str, datasets, *, data_dir: str | None = None,
              manual_dir: str | None = None, output: str | None = None, alphas=(0.0, 1.0),
              step: int | None = None, skip_existing: bool = False, batch_size: int = 64,
              max_templates: int = 0, prompting: dict | None = None,
              log=print) -> dict[str, list[str]]:
  """Evaluates the run in `workdir` on `datasets`; returns {data set: result files written}.
  `prompting`: zero-shot fields for every classification set (see `eval_entries`)."""
  run = inference.load_run(workdir, step)
  output = paths.resolve(output or paths.join(run.workdir, "clip_benchmark"))
  entries = eval_entries(datasets, data_dir, manual_dir, alphas, batch_size, max_templates,
                         prompting)
  missing = missing_data(run.config, entries, data_dir, manual_dir)
  if missing:
    raise errors.ConfigError(f"{len(missing)} of {len(entries)} data sets are not prepared "
                             f"(nothing is downloaded at run time): {'; '.join(missing)}")
  paths.path(output).mkdir(parents=True, exist_ok=True)
  written, start, done = {}, time.monotonic(), 0
  for i, (name, entry) in enumerate(entries.items()):
    expected = [result_path(output, result_record(name, s, {}, run, None))
                for s in _scorings(run, alphas, _tags(entry))]
    if skip_existing and all(paths.path(p).exists() for p in expected):
      log(f"[{i + 1}/{len(entries)}] {name}: done before (--skip_existing)")
      continue
    config = run.config.copy_and_resolve_references()
    if ("templates" in entry and not prompt_ensembles.wanted(entry)
        and _num_prompts(config, entry) >= _STREAM_PROMPTS):
      entry.stream_blocks = 16  # Progress with an ETA within the data set.
    with config.unlocked():
      config.evals = ml_collections.ConfigDict({_eval_name(name): entry})
    (evaluator,) = evaluators.build(config, run.model.predict_fns, run.mesh, run.tokenizer)
    results = scoring_results(name, evaluator.run(run.params), run.has_embeddings)
    templates = len(entry.templates) if "templates" in entry else None
    written[name] = []
    for scoring, values in results.items():
      record = result_record(name, scoring, values, run, templates)
      path = result_path(output, record)
      paths.write_atomic(path, json.dumps(record, indent=1) + "\n")
      written[name].append(path)
    done += 1
    elapsed = time.monotonic() - start
    remaining = elapsed / done * (len(entries) - i - 1)
    log(f"[{i + 1}/{len(entries)}] {name}: " + "; ".join(
        f"{s} " + " ".join(f"{m}={v:.4f}" for m, v in values.items())
        for s, values in results.items()) +
        f" ({elapsed:.0f}s so far, ETA {remaining:.0f}s)")
  return written


def _num_prompts(config, entry) -> int:
  data = presets.with_overrides(config.data, entry.data)
  return len(entry.templates) * len(sources.readable_class_names(
      data, entry.label_key, entry.get("class_names")))


def build_table(directories) -> tuple[str, str]:
  """(CSV, markdown) of the result files in `directories`: CLIP_benchmark's `build` rows (each
  file's keys, its metrics flattened, `model_fullname`), and a table of acc1 (retrieval:
  recall@5 both ways) per model and data set."""
  rows = []
  for directory in directories:
    for path in sorted(paths.path(directory).glob("*.json")):
      record = json.loads(path.read_text())
      if not {"dataset", "model", "pretrained", "metrics"} <= set(record):
        continue
      row = {**record["metrics"], **{k: v for k, v in record.items() if k != "metrics"}}
      row["model_fullname"] = f"{record['model']} {record['pretrained']}"
      rows.append(row)
  if not rows:
    raise errors.ConfigError(f"no result file in {list(directories)}: run the benchmark first")
  columns = sorted({k for row in rows for k in row})
  text = io.StringIO()
  writer = csv.DictWriter(text, columns)
  writer.writeheader()
  writer.writerows(rows)
  data_sets = sorted({r["dataset"] for r in rows})
  cells = collections.defaultdict(dict)
  for row in rows:
    value = row.get("acc1")
    if value is None and "image_retrieval_recall@5" in row:
      value = f"{100 * row['image_retrieval_recall@5']:.1f} / " + (
          f"{100 * row['text_retrieval_recall@5']:.1f}" if "text_retrieval_recall@5" in row
          else "-")
    elif value is not None:
      value = f"{100 * value:.1f}"
    cells[row["model_fullname"]][row["dataset"]] = value or "-"
  lines = ["| model | " + " | ".join(data_sets) + " |", "|---|" + "---|" * len(data_sets)]
  for model in sorted(cells):
    lines.append(f"| {model} | " + " | ".join(cells[model].get(d, "") for d in data_sets) +
                 " |")
  return text.getvalue(), "\n".join(lines)


def prepare_data(datasets, data_dir: str | None, manual_dir: str | None, log=print) -> None:
  """Builds the TFDS data of `datasets` that is missing (TFDS may download its sources)."""
  for name in benchmark_sets.expand(datasets):
    entry = benchmark_sets.eval_config(name, data_dir, manual_dir)
    source = sources.get(ml_collections.ConfigDict(entry.data.to_dict()))
    if source.is_prepared(False):
      log(f"{name}: prepared at {source.location()}")
    else:
      log(f"{name}: preparing at {source.location()} ...")
      source.prepare(with_tokenizer=False)


def main():
  """Command-line entry point (flags are defined here so that importing defines none)."""
  workdir = flags.DEFINE_string("workdir", None, "A trained or converted run.")
  datasets = flags.DEFINE_list("datasets", None, "CLIP_benchmark data set names or collections.")
  data_dir = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the run's).")
  manual_dir = flags.DEFINE_string("manual_dir", None, "Source files put there by hand "
                                   "(imagenet1k: ILSVRC2012_img_{train,val}.tar).")
  output = flags.DEFINE_string("output", None, "Result directory (default RUN/clip_benchmark).")
  alphas = flags.DEFINE_list("alphas", ["0", "1"], "IG alphas of caption scoring.")
  step = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  skip = flags.DEFINE_bool("skip_existing", False, "Skip data sets whose files exist.")
  batch_size = flags.DEFINE_integer("batch_size", 64, "Images per batch.")
  max_templates = flags.DEFINE_integer("max_templates", 0, "Use only the first N templates of "
                                       "each data set (0: all; a quick look, not comparable).")
  weightings = flags.DEFINE_list("weightings", ["equal"], "Prompt ensembles of zero-shot "
                                 "classification: equal, logmeanexp, zpe.")
  descriptions = flags.DEFINE_string("descriptions", None, "Per-class sentences instead of "
                                     "templates (CLIP_benchmark's cupl_prompts.json layout).")
  descriptions_key = flags.DEFINE_string("descriptions_key", None, "Its key (default: its "
                                         "only one).")
  zpe_images = flags.DEFINE_integer("zpe_images", 1024, "ZPE's pretraining sample size (the "
                                    "run's train data).")
  prepare = flags.DEFINE_bool("prepare", False, "Build the data sets' TFDS data, then exit.")
  build = flags.DEFINE_bool("build", False, "Write the table of --output's results, then exit.")

  def run(argv):
    del argv
    if build.value:
      if not output.value:
        raise errors.ConfigError("--build needs --output=DIR (the result files' directory)")
      table_csv, table_md = build_table([output.value])
      paths.write_atomic(paths.join(output.value, "benchmark.csv"), table_csv)
      print(table_md)
      return
    if not datasets.value:
      raise errors.ConfigError("--datasets is required, e.g. --datasets=cifar10,imagenet1k")
    if prepare.value:
      prepare_data(datasets.value, data_dir.value, manual_dir.value)
      return
    if not workdir.value:
      raise errors.ConfigError("--workdir is required: the run to evaluate")
    benchmark(workdir.value, datasets.value, data_dir=data_dir.value,
              manual_dir=manual_dir.value, output=output.value,
              alphas=[float(a) for a in alphas.value], step=step.value,
              skip_existing=skip.value, batch_size=batch_size.value,
              max_templates=max_templates.value, prompting=dict(
                  weightings=tuple(weightings.value), descriptions=descriptions.value,
                  descriptions_key=descriptions_key.value, zpe_images=zpe_images.value))
  cli.run(run)


if __name__ == "__main__":
  main()
