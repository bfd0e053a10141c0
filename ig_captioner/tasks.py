"""An evaluator's data as the evaluator reads it, for notebooks and scripts: its split of its
data set, and for zero-shot its class names and prompt templates (`Task`), and the records of
any split (`read_examples`).

    task = tasks.task(config, "digits")      # or run.task("digits") from `inference.load_run`
    examples = task.examples(num=16)         # images as stored, labels, texts
"""

import dataclasses

import ml_collections
import numpy as np

from ig_captioner import errors
from ig_captioner.data import presets
from ig_captioner.data import records
from ig_captioner.data import sources


@dataclasses.dataclass(frozen=True)
class Examples:
  """Records of a split in record order: images as stored (uint8), and where asked for, each
  record's label and texts."""
  images_BxHxWx3: np.ndarray
  labels_B: np.ndarray | None
  texts_B: list[list[str]] | None


def read_examples(data_config: ml_collections.ConfigDict, split: str, num: int | None = None,
                  label_key: str | None = "label", text_key: str | None = None) -> Examples:
  """The first `num` records (default: all) of `split` of the prepared data set `data_config`.
  `text_key` may name one text or a sequence of texts (each record gets a list)."""
  source = sources.open_split(data_config, split)
  count = len(source) if num is None else min(int(num), len(source))
  rows = [source[i] for i in range(count)]
  images = np.stack([np.asarray(records.field(r, data_config.image_key)) for r in rows])
  labels = (None if label_key is None else
            np.asarray([int(records.field(r, label_key)) for r in rows], np.int32))
  texts = (None if text_key is None else
           [records.texts(records.field(r, text_key)) for r in rows])
  return Examples(images, labels, texts)


@dataclasses.dataclass(frozen=True)
class Task:
  """One of a config's evaluators: its split of its data, and for zero-shot its class names and
  prompt templates, as the evaluator reads them."""
  name: str
  kind: str  # The evaluator's type: 'zeroshot', 'retrieval', 'caption_generation', ...
  split: str
  data_config: ml_collections.ConfigDict
  alphas: tuple[float, ...]
  class_names: list[str] | None  # Zero-shot: in label order, as they enter the prompts.
  templates: tuple[str, ...] | None
  label_key: str | None  # Zero-shot: the field holding each image's class.
  text_key: str | None  # Retrieval, captioning: the field holding each image's captions.

  def examples(self, num: int | None = None) -> Examples:
    """The first `num` records of the task's split (default: all)."""
    return read_examples(self.data_config, self.split, num, self.label_key, self.text_key)


def task(config: ml_collections.ConfigDict, name: str | None = None,
         kind: str = "zeroshot") -> Task:
  """The evaluator `name` of `config.evals` (default: its first of type `kind`)."""
  evals = config.get("evals", {})
  if name is None:
    name = next((n for n, e in evals.items() if e.type == kind), None)
    if name is None:
      raise errors.ConfigError(f"the run's config has no {kind} evaluator (config.evals: "
                               f"{sorted(evals)}); name one, or pass your own class names")
  if name not in evals:
    raise errors.ConfigError(f"config.evals has no evaluator {name!r}; it has {sorted(evals)}")
  eval_config = evals[name]
  data = presets.with_overrides(config.data, eval_config.get("data", {}))
  zeroshot = eval_config.type == "zeroshot"
  class_names = (sources.readable_class_names(data, eval_config.label_key,
                                              eval_config.get("class_names"))
                 if zeroshot else None)
  return Task(name, eval_config.type, eval_config.split, data,
              tuple(float(a) for a in eval_config.get("alphas", (0.0,))), class_names,
              tuple(eval_config.templates) if zeroshot else None,
              eval_config.label_key if zeroshot else None, eval_config.get("captions_key"))
