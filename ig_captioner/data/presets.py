"""Ready `config.data` entries by data set, and the overrides evaluators and mixture sources put
on top of `config.data`. Facts about data sets only: evaluator entries built from them are in
`evaluators/catalog.py`.

    config.data = presets.digits(prior_exponent=2.0)      # the embedded data set
    config.data = presets.coco_captions(data_dir="~/tfds")  # COCO 2014, Karpathy train split
"""

import ml_collections


def tfds(name: str, **overrides) -> ml_collections.ConfigDict:
  """`config.data` for a TFDS data set by `name`: where it lies, its fields, its tokenizer and
  how it is read."""
  data = ml_collections.ConfigDict(dict(
      name=name,
      # None: $TFDS_DATA_DIR, or ~/tensorflow_datasets without it.
      data_dir=ml_collections.FieldReference(None, field_type=str),
      # Source files put there by hand, for builders that read them (imagenet2012; fashion_mnist
      # from a local copy): see evaluators/catalog.py. None: none.
      manual_dir=ml_collections.FieldReference(None, field_type=str),
      train_split="train",
      image_key="image",
      text_key="caption",
      tokenizer=ml_collections.FieldReference(None, field_type=str),  # None: the data set's own
      tokenizer_vocab_size=128,  # Size asked of SentencePiece when the data set is prepared.
      # Pipeline.
      shuffle_seed=0,
      # A split read as texts alone, batched beside the image-text batches (`text_only_tokens`):
      # for objective.text_only_batch='separate'. None: no such batch.
      text_only_split=ml_collections.FieldReference(None, field_type=str),
      augment_shift=2,
      num_workers=0,  # grain worker processes; 0 = in the main process.
      read_threads=0,  # grain reader threads; >0 helps on remote storage.
  ))
  data.update(overrides)
  return data


def digits(**overrides) -> ml_collections.ConfigDict:
  """`config.data` for the embedded `digits_captions` data set (`data/digits_captions.py`),
  with its builder's parameters (part of the data set's name on disk)."""
  data = tfds("digits_captions")
  data.update(dict(
      prior_exponent=1.0,  # Zipf exponent of class frequency in captions; 0 = balanced.
      caption_noise=0.0,  # Fraction of captions naming a popular class instead of the image's.
      seed=0,
      num_train_examples=20_000,
      holdout_per_class=50,  # Images per class in the held-out `zeroshot` split.
      validation_per_class=20,  # Images per class in the `validation` split.
      retrieval_per_class=10,  # Images per class in the `retrieval` split (6 captions each).
  ))
  data.update(overrides)
  return data


def coco_captions(data_dir: str | None = None, **overrides) -> ml_collections.ConfigDict:
  """`config.data` to train on COCO 2014 captions, Karpathy's `train` split (82,783 images): each
  example takes one of its image's ~5 captions at random, drawn anew every epoch and fixed by
  `shuffle_seed`. The tokenizer is trained on every train caption when the data is prepared."""
  data = tfds("coco_captions", text_key="captions/text", tokenizer_vocab_size=8192)
  if data_dir is not None:
    data.data_dir = data_dir
  data.update(overrides)
  return data


def eval_data(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> dict:
  """An evaluator's `data` overrides of `config.data` for TFDS data set `name`."""
  data = dict(name=name, image_key="image")
  if data_dir is not None:
    data["data_dir"] = data_dir
  if manual_dir is not None:
    data["manual_dir"] = manual_dir
  return data


def with_overrides(data_config: ml_collections.ConfigDict,
                   overrides) -> ml_collections.ConfigDict:
  """A copy of `config.data` with `overrides` (an evaluator's or a mixture source's `data`),
  which may add fields (`manual_dir`)."""
  data = data_config.copy_and_resolve_references()
  with data.unlocked():
    data.update(overrides or {})
  return data
