"""The API for notebooks and scripts: load a trained run and score, classify or caption images.

    run = inference.load_run("/tmp/ig")                     # latest checkpoint; step=N for one
    out = run.classify(images, ["zero", "one"], ["a handwritten {}"], alphas=(0, 1))
    out["ig"][1.0]["scores_BxC"], out["ig"][1.0]["topk_BxK"]
    run.prior(["a handwritten seven"])                      # log P(t), captioners
    run.classify(..., prefix="caption")                     # after a prefix-conditioning token
    run.retrieval_scores(images, texts, alpha=1.0)          # images x texts
    run.caption(images, beam_size=4)                        # families with a cached decoder
    task = run.task("digits")                  # an evaluator's data and prompts (`tasks.py`)
    examples = task.examples(num=16)           # its records: images, labels, texts

Every method is a thin layer over the scoring code the evaluators use (`ig_captioner.scoring`):
caption likelihoods come from `prompt_scoring.PromptScorer` (cached), class scores from
`class_scores` (the IG score; CLIP's prompt ensemble), captions from `generation`. Params are
restored onto a mesh of this process's devices (batch axis over all of them).

Images: uint8 HxWx3 (or HxW) arrays of any size, one by one in a list or stacked (resized with
`image_ops.resize_image` and normalised), or a float batch BxSxSx3 already in [-1, 1].

Shape letters: B images, C classes, K templates, P prompts (C x K, class-major), E embedding
width, T text length.
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ig_captioner import checkpointing
from ig_captioner import errors
from ig_captioner import experiment
from ig_captioner import models
from ig_captioner import paths
from ig_captioner import sharding
from ig_captioner import tasks
from ig_captioner import token_ids
from ig_captioner import train_state
from ig_captioner.data import image_ops
from ig_captioner.data import sources
from ig_captioner.scoring import class_scores
from ig_captioner.scoring import embeddings
from ig_captioner.scoring import generation
from ig_captioner.scoring import prompt_scoring

EMBEDDING_NOTE = "two-tower cosine similarity of embeddings: alpha does not apply"


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
  """Every template filled with every class name, class-major (as the zero-shot evaluator)."""
  if not len(templates) or not all("{}" in t for t in templates):
    raise errors.ConfigError(f"templates={list(templates)!r}: give at least one, each with a "
                             "'{}' for the class name")
  return class_scores.class_prompts(class_names, templates)


def _top_k(scores_BxC: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k best classes per row, best first."""
  return np.argsort(-scores_BxC, axis=-1, kind="stable")[:, :k]


@dataclasses.dataclass
class Run:
  """A restored run: its config, model, params (on `mesh`), tokenizer and checkpoint step."""
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model: models.Model
  params: object
  tokenizer: object
  mesh: jax.sharding.Mesh
  images_per_device: int = 8  # Image batch per device and call; larger batches run in slices.

  def __post_init__(self):
    self._fns = self.model.predict_fns
    self._replicated = NamedSharding(self.mesh, P())
    self._batch_sharding = sharding.batch_sharding(self.mesh)
    self._scorers = {}  # Prompt texts -> (PromptScorer, its inputs on the devices).
    self._jitted = {}

  # ------------------------------------------------------------------------------ Families ---
  @property
  def family(self) -> str:
    return self.model.name

  @property
  def has_captions(self) -> bool:
    """Caption likelihoods log P(t|I), log P(t) (captioners, CoCa, CapPa)."""
    return models.supplies(self._fns, models.CAPTION_FNS + models.CACHE_FNS)

  @property
  def has_embeddings(self) -> bool:
    """Joint image/text embeddings (CLIP, SigLIP, CoCa)."""
    return models.supplies(self._fns, models.EMBED_FNS)

  def _require_captions(self, what: str) -> None:
    if not self.has_captions:
      raise errors.ConfigError(
          f"{what} needs caption likelihoods (a decoder: models.CAPTION_FNS and CACHE_FNS), "
          f"which family {self.family!r} does not supply; it has embeddings: use classify or "
          "retrieval_scores.")

  # -------------------------------------------------------------------------------- Inputs ---
  def images(self, images) -> np.ndarray:
    """float32 BxSxSx3 in [-1, 1] (S: the model's image size) from uint8 or normalised input."""
    size = int(self.config.model.image_size)
    if isinstance(images, np.ndarray) and images.dtype != np.uint8:
      if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise errors.ConfigError(
            f"float images of shape {images.shape}: give a normalised batch Bx{size}x{size}x3 "
            "in [-1, 1], or uint8 images of any size (resized here)")
      return images.astype(np.float32)
    if isinstance(images, np.ndarray) and images.ndim in (2, 3):
      images = [images]  # One image.
    uint8 = []
    for image in images:
      image = np.asarray(image)
      if image.dtype != np.uint8:
        raise errors.ConfigError(f"image of dtype {image.dtype} in a list: give uint8 images, "
                                 "or one normalised float batch")
      uint8.append(image_ops.resize_image(image, size))
    if not uint8:
      raise errors.ConfigError("no images given")
    return image_ops.normalize_images(np.stack(uint8))

  def _image_batches(self, images):
    """(device batch, valid rows) for consecutive slices of the images, padded to whole
    batches sharded over the mesh's batch axes."""
    images_BxSxSx3 = self.images(images)
    size = self.images_per_device * sharding.batch_axis_size(self.mesh)
    for start in range(0, len(images_BxSxSx3), size):
      chunk = images_BxSxSx3[start:start + size]
      padded = np.zeros((size,) + chunk.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      yield jax.device_put(padded, self._batch_sharding), len(chunk)

  def encode_texts(self, texts: Sequence[str], prefix: str | None = None) -> np.ndarray:
    """Tokens_PxT of `texts`, after the prefix-conditioning token `prefix` ('caption',
    'classification'; None: none) if given. Too long a text is an error naming max_text_len."""
    return self.tokenizer.encode_batch(list(texts), self.config.model.max_text_len, strict=True,
                                       prefix=prefix)

  def _scorer(self, texts: Sequence[str], groups_P=None, prefix: str | None = None,
              prior: str = "no_image"):
    key = (tuple(texts), None if groups_P is None else tuple(groups_P), prefix, prior)
    if key not in self._scorers:
      scorer = prompt_scoring.PromptScorer(self._fns, self.encode_texts(texts, prefix), groups_P,
                                           images_per_device=self.images_per_device,
                                           prior=prior, image_size=self.config.model.image_size,
                                           unscored_ids=self.tokenizer.unscored_ids)
      inputs = jax.device_put(scorer.inputs, self._replicated)
      jitted = (jax.jit(scorer.text_logprobs, out_shardings=self._replicated),
                jax.jit(lambda params, images, inputs: scorer.image_text_logprobs(
                    params, self._fns["encode_images"](params, images), inputs),
                        out_shardings=self._replicated))
      self._scorers[key] = (inputs, *jitted)
    return self._scorers[key]

  def _jit(self, name: str, fn):
    if name not in self._jitted:
      self._jitted[name] = jax.jit(fn, out_shardings=self._replicated)
    return self._jitted[name]

  # ------------------------------------------------------------------------------- Scoring ---
  # Every scoring method takes `prefix`: the prefix-conditioning token put before each text, as
  # the evaluators' `prefixes` do (None: no prefix; runs trained with prefixes are tested with
  # 'caption').
  def prior(self, texts: Sequence[str], prefix: str | None = None,
            source: str = "no_image") -> np.ndarray:
    """log P(t) per text (nats), logp_P, from the decoder without an image (`source`
    'no_image') or given a blank mid-grey one ('null_image': for captioners never trained on
    text alone, such as public CoCa checkpoints)."""
    self._require_captions("prior")
    inputs, text_only, _ = self._scorer(texts, prefix=prefix, prior=source)
    with sharding.activate(self.mesh):
      return np.asarray(jax.device_get(text_only(self.params, inputs)))

  def likelihoods(self, images, texts: Sequence[str], groups_P=None,
                  prefix: str | None = None) -> np.ndarray:
    """log P(t|I) for every image and text: logp_BxP."""
    self._require_captions("likelihoods")
    inputs, _, image_text = self._scorer(texts, groups_P, prefix)
    rows = []
    with sharding.activate(self.mesh):
      for batch, valid in self._image_batches(images):
        rows.append(np.asarray(jax.device_get(image_text(self.params, batch, inputs)))[:valid])
    return np.concatenate(rows)

  def embed_images(self, images) -> np.ndarray:
    """L2-normalised image embeddings z_BxE (two towers, CoCa)."""
    self._require_embeddings("embed_images")
    fn = self._jit("embed_images", self._fns["embed_images"])
    with sharding.activate(self.mesh):
      return np.concatenate([np.asarray(jax.device_get(fn(self.params, batch)))[:valid]
                             for batch, valid in self._image_batches(images)])

  def embed_texts(self, texts: Sequence[str], prefix: str | None = None) -> np.ndarray:
    """L2-normalised text embeddings z_PxE (two towers, CoCa)."""
    self._require_embeddings("embed_texts")
    chunk = 64
    fn = self._jit("embed_texts", lambda params, texts_PxT: embeddings.embed_texts_chunked(
        self._fns["embed_texts"], params, texts_PxT, chunk))
    with sharding.activate(self.mesh):
      texts_PxT = jax.device_put(self.encode_texts(texts, prefix), self._replicated)
      return np.asarray(jax.device_get(fn(self.params, texts_PxT)))

  def _require_embeddings(self, what: str) -> None:
    if not self.has_embeddings:
      raise errors.ConfigError(f"{what} needs embeddings (models.EMBED_FNS), which family "
                               f"{self.family!r} does not supply; use likelihoods or prior.")

  def classify(self, images, class_names: Sequence[str], templates: Sequence[str],
               alphas: Sequence[float] = (0.0, 1.0), top_k: int = 5,
               prefix: str | None = None, prior: str = "no_image") -> dict:
    """Zero-shot classification, scored as the zero-shot evaluator does (`prior`: the source
    of log P(t), see `prior`).

    Returns {'class_names', and per family: 'ig': {alpha: {'scores_BxC', 'topk_BxK'}} (caption
    likelihoods: mean over templates of log P(t|I) - alpha * log P(t)), 'embedding':
    {'scores_BxC', 'topk_BxK', 'note'} (cosine similarity to CLIP's class embeddings; alpha does
    not apply)}. CoCa gets both.
    """
    texts = prompts(class_names, templates)
    num_classes, k = len(class_names), min(top_k, len(class_names))
    out = {"class_names": list(class_names)}
    if self.has_captions:
      groups_P = np.arange(len(texts)) % len(templates)  # A template's prompts share a prefix.
      logp_txt_P = self.prior(texts, prefix, prior)
      logp_img_BxP = self.likelihoods(images, texts, groups_P, prefix)
      scores_AxBxC = np.asarray(class_scores.ig_class_scores(
          logp_img_BxP, logp_txt_P, num_classes, [float(a) for a in alphas]))
      out["ig"] = {float(a): {"scores_BxC": s, "topk_BxK": _top_k(s, k)}
                   for a, s in zip(alphas, scores_AxBxC)}
    if self.has_embeddings:
      classes_CxE = np.asarray(class_scores.class_embeddings(
          jnp.asarray(self.embed_texts(texts, prefix)), num_classes))
      sims_BxC = self.embed_images(images) @ classes_CxE.T
      out["embedding"] = {"scores_BxC": sims_BxC, "topk_BxK": _top_k(sims_BxC, k),
                          "note": EMBEDDING_NOTE}
    return out

  def retrieval_scores(self, images, texts: Sequence[str], alpha: float = 0.0,
                       kind: str | None = None, prefix: str | None = None,
                       prior: str = "no_image") -> np.ndarray:
    """scores_BxP for every image and text: log P(t|I) - alpha * log P(t) (kind 'ig', the
    default where the family has a decoder) or the embeddings' cosine similarity (kind
    'embedding', alpha ignored), as the retrieval evaluator scores them."""
    kind = kind or ("ig" if self.has_captions else "embedding")
    if kind == "ig":
      return (self.likelihoods(images, texts, prefix=prefix) -
              float(alpha) * self.prior(texts, prefix, prior)[None])
    if kind == "embedding":
      return self.embed_images(images) @ self.embed_texts(texts, prefix).T
    raise errors.ConfigError(f"kind={kind!r} is not 'ig' or 'embedding'")

  # --------------------------------------------------------------------------------- Tasks ---
  def task(self, name: str | None = None, kind: str = "zeroshot") -> tasks.Task:
    """The evaluator `name` of the run's config (default: its first of `kind`)."""
    return tasks.task(self.config, name, kind)

  # ------------------------------------------------------------------------------ Captions ---
  def caption(self, images, beam_size: int = 1, max_len: int | None = None, alpha: float = 0.0,
              length_penalty: float = 0.0, prefix: str | None = None) -> list[str]:
    """One caption per image (`scoring.generation`: greedy, or beam search with `beam_size` > 1;
    `alpha` > 0 ranks hypotheses by log P(t|I) - alpha * log P(t)), decoded after the
    prefix-conditioning token `prefix` if given. `max_len`: generated tokens at most (EOS
    included; default: as many as the model's text length allows)."""
    if not self.has_captions:
      raise errors.ConfigError(f"caption needs a family that generates text; {self.family!r} "
                               "has no decoder (use captioner, cappa or coca)")
    start = token_ids.start_tokens(prefix)
    text_len = int(self.config.model.max_text_len)
    max_tokens = int(max_len or text_len - len(start))
    if not 1 <= max_tokens <= text_len - len(start):
      raise errors.ConfigError(f"max_len={max_len} must be in [1, {text_len - len(start)}] "
                               f"(config.model.max_text_len={text_len}, BOS and prefix first)")
    decode = generation.DecodeConfig(max_tokens=max_tokens, beam_size=int(beam_size),
                                     length_penalty=float(length_penalty),
                                     ig_alpha=float(alpha))
    fn = self._jit(("caption", decode, start), lambda params, images: generation.generate(
        self._fns, params, self._fns["encode_images"](params, images), decode, text_len,
        start)[0])
    captions = []
    with sharding.activate(self.mesh):
      for batch, valid in self._image_batches(images):
        tokens_BxT = np.asarray(jax.device_get(fn(self.params, batch)))[:valid]
        captions.extend(self.tokenizer.decode(t) for t in tokens_BxT)
    return captions


def load_run(workdir: str, step: int | None = None,
             config: ml_collections.ConfigDict | None = None, devices=None,
             images_per_device: int = 8) -> Run:
  """The run in `workdir` at checkpoint `step` (default: the latest), its params on a mesh of
  `devices` (default: this process's). `config` (default: the workdir's config.json) must
  describe the model the checkpoint holds."""
  workdir = paths.resolve(workdir)
  directory = checkpointing.directory(workdir)
  if not paths.path(directory).exists():
    raise checkpointing.CheckpointError(
        f"no checkpoints in {workdir}: {directory} does not exist. Training writes them "
        "(python -m ig_captioner.train --workdir=...); check the path.")
  config = experiment.read_config(workdir) if config is None else config
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)),
                            devices=devices or jax.local_devices())
  model = models.build(config.model)
  abstract_params, _ = train_state.abstract_params_and_shardings(model.init_params, mesh)
  ckpt = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    step, params = ckpt.restore_params_at(
        step, abstract_params, config, "training writes them every config.checkpoint_every "
        "steps; train first, or check the workdir.")
  finally:
    ckpt.close()
  tokenizer = sources.tokenizer(config.data)
  experiment.check_tokenizer_fits(tokenizer, config.model)
  return Run(workdir, step, config, model, params, tokenizer, mesh, images_per_device)
