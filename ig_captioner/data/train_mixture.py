"""The train pipeline: one or several data sources mixed by weight, read with grain's dataset
API, deterministic, resumable and sharded per process.

`config.data.mixture` (optional) maps a source name to its entry:

    split          the split to read ("train" if absent)
    weight         relative share of the examples (grain's `MapDataset.mix`: an exact,
                   deterministic interleaving in these proportions)
    kind           "caption": the record's `text_key` is the text (one drawn per example where
                   it holds several, as coco_captions' 'captions/text' does); "classification":
                   the label (`label_key`) becomes a text through `templates`, one drawn per
                   example, with the class names of the data set's ClassLabel ('_' read as a
                   space) or of `class_names_file` (one a line, in label order; 'imagenet': the
                   package's human-readable ImageNet names)
    prefix         None, "caption" or "classification": the prefix-conditioning token put after
                   BOS (Saito et al., CVPR 2023); the targets mask never scores it
    data           overrides of `config.data` for this source (another data set, ...)

Without a mixture, the train split alone is one caption source without prefix.

Each entry's records come from its data source (`sources.train_records`). A source read in
order rather than by index (web shards: a grain IterDataset) makes the mixture mix with
`IterDataset.mix`; the loader's `skip_counts` ({entry name: counts}) holds what the sources that
skip corrupt records and unreadable shards skipped.

Each process reads a disjoint slice of each source (`[process_index::process_count]`), shuffled
again every epoch; mixing, batching and the random crops/templates are all deterministic given
the seeds, and the iterator's state (saved in every checkpoint) covers the whole mixture.
Batches: {'image': float32 BxHxWx3, 'tokens': int32 BxT, 'target_mask': bool Bx(T-1)}.

`config.data.text_only_split` (optional) adds a batch of texts read without their images (the
split's `text_key`, shuffled with its own seed, no prefix): `text_only_tokens` (int32 BxT) and
`text_only_target_mask`, for the captioning objective's `text_only_batch='separate'`.
"""

import dataclasses
import functools

import grain
import ml_collections
import numpy as np

from ig_captioner import errors
from ig_captioner import token_ids
from ig_captioner.data import image_ops
from ig_captioner.data import pipeline
from ig_captioner.data import presets
from ig_captioner.data import records
from ig_captioner.data import sources
from ig_captioner.data import tokenizer as tokenizer_lib

TEXT_KINDS = ("caption", "classification")


@dataclasses.dataclass(frozen=True)
class MixtureSource:
  """One entry of `config.data.mixture` (or the train split alone), checked."""
  name: str
  data_config: ml_collections.ConfigDict  # config.data with the entry's overrides.
  split: str
  weight: float
  kind: str
  prefix: str | None
  templates: tuple[str, ...] = ()
  label_key: str = "label"
  class_names_file: str | None = None


def train_sources(data_config: ml_collections.ConfigDict) -> list[MixtureSource]:
  """The sources of `config.data` (its `mixture`, or its train split alone), checked."""
  mixture = data_config.get("mixture")
  if not mixture:
    return [MixtureSource("train", data_config, data_config.get("train_split", "train"), 1.0,
                          "caption", None)]
  out = []
  for name, entry in mixture.items():
    field = f"config.data.mixture.{name}"
    kind, prefix, weight = entry.get("kind", "caption"), entry.get("prefix"), entry.get("weight")
    if kind not in TEXT_KINDS:
      raise errors.ConfigError(f"{field}.kind={kind!r} is unknown; known: {list(TEXT_KINDS)}")
    if prefix is not None and prefix not in token_ids.PREFIX_IDS:
      raise errors.ConfigError(f"{field}.prefix={prefix!r} is unknown; known: None, "
                               f"{sorted(token_ids.PREFIX_IDS)}")
    if not isinstance(weight, (int, float)) or weight <= 0:
      raise errors.ConfigError(f"{field}.weight={weight!r} must be positive")
    templates = tuple(entry.get("templates", ()))
    if kind == "classification" and not (templates and all("{}" in t for t in templates)):
      raise errors.ConfigError(f"{field}.templates={templates!r}: a classification source needs "
                               "templates, each with a '{}' for the class name")
    source_data = presets.with_overrides(data_config, entry.get("data", {}))
    out.append(MixtureSource(name, source_data, entry.get("split", "train"), float(weight), kind,
                             prefix, templates, entry.get("label_key", "label"),
                             entry.get("class_names_file")))
  return out


def class_names(source: MixtureSource) -> list[str]:
  return sources.readable_class_names(source.data_config, source.label_key,
                                      source.class_names_file)


class _ToExample:
  """Record -> {'image': uint8 HxWx3, 'tokens': int32 T}, with the source's text and prefix."""

  def __init__(self, source: MixtureSource, image_size: int, max_text_len: int,
               tokenizer: tokenizer_lib.Tokenizer, max_shift: int):
    self._source = source
    self._image_key, self._text_key = sources.get(source.data_config).record_keys()
    self._image_size = image_size
    self._max_text_len = max_text_len
    self._tokenizer = tokenizer
    self._max_shift = max_shift
    self._class_names = class_names(source) if source.kind == "classification" else None

  def __call__(self, record, rng: np.random.Generator) -> dict:
    if self._class_names is None:
      # Records with several captions (COCO: 5 per image) give one at random: the rng is
      # grain's, derived from the seed and the example's index, so another epoch draws anew.
      texts = records.texts(records.field(record, self._text_key))
      text = texts[rng.integers(len(texts))] if len(texts) > 1 else texts[0]
    else:
      template = self._source.templates[rng.integers(len(self._source.templates))]
      text = template.format(self._class_names[int(record[self._source.label_key])])
    image = image_ops.resize_image(record[self._image_key], self._image_size)
    return {"image": image_ops.random_shift(image, self._max_shift, rng),
            "tokens": self._tokenizer.encode(text, self._max_text_len,
                                             prefix=self._source.prefix)}


def _finish_batch(batch: dict, unscored_ids: tuple[int, ...]) -> dict:
  batch = dict(batch, image=image_ops.normalize_images(batch["image"]),
               target_mask=token_ids.scored_targets(batch["tokens"], unscored_ids))
  if "text_only_tokens" in batch:
    batch["text_only_target_mask"] = token_ids.scored_targets(batch["text_only_tokens"],
                                                              unscored_ids)
  return batch


class _ToText:
  """Record -> int32 T tokens of its text, the first of several (a text-only example)."""

  def __init__(self, data_config, max_text_len: int, tokenizer: tokenizer_lib.Tokenizer):
    self._key, self._max_text_len, self._tokenizer = data_config.text_key, max_text_len, tokenizer

  def __call__(self, record):
    return self._tokenizer.encode(records.texts(records.field(record, self._key))[0],
                                  self._max_text_len)


def with_text_only(examples: grain.MapDataset, config: ml_collections.ConfigDict,
                   tokenizer: tokenizer_lib.Tokenizer) -> grain.MapDataset:
  """Adds `text_only_tokens` from `config.data.text_only_split` to every example (by index,
  so that the iterator state still resumes it)."""
  split = config.data.get("text_only_split")
  if not split:
    return examples
  texts = records.shuffled_shard(sources.open_split(config.data, split),
                                 int(config.data.shuffle_seed) + 7919).map(
                                     _ToText(config.data, config.model.max_text_len, tokenizer))
  return examples.map_with_index(lambda i, example: dict(example, text_only_tokens=texts[i]))


def train_loader(config: ml_collections.ConfigDict,
                 tokenizer: tokenizer_lib.Tokenizer) -> grain.IterDataset:
  """Infinite train batches (this process's slice of each global batch); `iter()` of it has the
  checkpointable state."""
  mixture = train_sources(config.data)
  if any(s.prefix for s in mixture):
    tokenizer.require_reserved_ids("prefix conditioning (config.data.mixture.*.prefix)")
  seed = int(config.data.shuffle_seed)
  datasets, skip_counts = [], {}
  for i, source in enumerate(mixture):
    examples, skipped = sources.train_records(source.data_config, source.split, seed + 1000 * i,
                                              config.model.image_size)
    if skipped is not None:
      skip_counts[source.name] = skipped
      if source.kind != "caption":
        raise errors.ConfigError(f"config.data.mixture.{source.name}.kind={source.kind!r}: "
                                 f"{source.data_config.name} holds captions, not labels; use "
                                 "kind='caption'")
    to_example = _ToExample(source, config.model.image_size, config.model.max_text_len,
                            tokenizer, int(config.data.augment_shift))
    datasets.append(examples.random_map(to_example, seed=seed + 1000 * i + 1))
  # Reader threads pay off for remote storage; on local disk their bookkeeping costs more than
  # the reads (measured: 2x slower per batch on a 2-core machine), hence `read_threads=0` there.
  threads = int(config.data.read_threads)
  read_options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(1, 64 * threads))
  in_order = any(isinstance(d, grain.IterDataset) for d in datasets)
  if in_order:  # A source read in order: every source mixes as an IterDataset.
    datasets = [d if isinstance(d, grain.IterDataset) else d.to_iter_dataset(read_options)
                for d in datasets]
    mixed = datasets[0] if len(datasets) == 1 else grain.IterDataset.mix(
        datasets, [s.weight for s in mixture])
  else:
    mixed = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(
        datasets, [s.weight for s in mixture])
  mixed = with_text_only(mixed, config, tokenizer)
  batches = mixed.batch(pipeline.local_batch_size(config.batch_size),
                        drop_remainder=True).map(
                            functools.partial(_finish_batch, unscored_ids=tokenizer.unscored_ids))
  loader = batches if in_order else batches.to_iter_dataset(read_options)
  workers = int(config.data.get("num_workers", 0))
  if workers:  # Batches prepared in worker processes (each a slice); the state still resumes.
    loader = loader.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  # {source name: skip_counts.SkipCounts}: what the sources read in order skipped, for the log.
  loader.skip_counts = skip_counts
  return loader
