"""The token id layout every model, objective, scorer and pipeline relies on (no tokenizer here:
`data/tokenizer.py` maps text to these ids):

    0 <pad>   1 <s> (BOS)   2 </s> (EOS)   3 <unk>
    4 <mask>                          CapPa's parallel-prediction decoder input
    5 <caption>   6 <classification>  prefix-conditioning tokens (the type of a text's source)
    7 ...                             the pieces

A text is `[BOS, (prefix,) pieces..., EOS]` right-padded with PAD. The decoder reads
`tokens[:, :-1]` and predicts `tokens[:, 1:]`; PAD and the prefixes are never scored.
"""

import functools
import operator

from ig_captioner import errors

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
MASK_ID = 4
PREFIX_IDS = {"caption": 5, "classification": 6}
RESERVED_SYMBOLS = ("<mask>", "<caption>", "<classification>")  # Ids 4, 5, 6.
NUM_SPECIAL_IDS = 7
UNSCORED_IDS = (PAD_ID,) + tuple(PREFIX_IDS.values())


def start_tokens(prefix: str | None = None) -> tuple[int, ...]:
  """What every text starts with: BOS, then the prefix-conditioning token `prefix` if given
  (a `PREFIX_IDS` name; ConfigError for another)."""
  if prefix is None:
    return (BOS_ID,)
  if prefix not in PREFIX_IDS:
    raise errors.ConfigError(f"prefix {prefix!r} is unknown; known: {sorted(PREFIX_IDS)}")
  return (BOS_ID, PREFIX_IDS[prefix])


def is_scored(targets, unscored_ids: tuple[int, ...] = UNSCORED_IDS):
  """Which target ids count (not PAD, not a prefix), elementwise: numpy on the host, jax.numpy
  inside jit alike. `unscored_ids`: a tokenizer's own (`tokenizer.unscored_ids`: CLIP's BPE
  has no prefix ids, its 5 and 6 are pieces)."""
  return functools.reduce(operator.and_, [targets != i for i in unscored_ids])


def scored_targets(tokens_BxT, unscored_ids: tuple[int, ...] = UNSCORED_IDS):
  """bool Bx(T-1): which next-token targets `tokens[:, 1:]` count."""
  return is_scored(tokens_BxT[:, 1:], unscored_ids)
