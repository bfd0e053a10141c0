"""Caption metrics: CIDEr-D (Vedantam et al., 2015) and BLEU-4 (Papineni et al., 2002), by
pycocoevalcap's pure-Python scorers (the `captioning` extra). Its PTB tokenizer calls Java, so
captions are normalised here instead, as COCO's tokenizer would: lower case, punctuation
dropped, words separated by single spaces.
"""

import re
from typing import Sequence

from ig_captioner import errors

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> str:
  """'A Photo, of 7!' -> 'a photo of 7'."""
  return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def _scorers():
  try:
    from pycocoevalcap.bleu.bleu import Bleu  # pylint: disable=g-import-not-at-top
    from pycocoevalcap.cider.cider import Cider  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ConfigError("caption metrics need pycocoevalcap: pip install -e '.[captioning]'"
                             ) from e
  return Bleu(4), Cider()


def score(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
  """{'cider_d', 'bleu4'} of one candidate per image against that image's references. CIDEr-D's
  document frequencies come from these references (the corpus is the evaluation split)."""
  if len(candidates) != len(references) or not candidates:
    raise ValueError(f"{len(candidates)} candidates for {len(references)} reference sets")
  res = {str(i): [normalize(c)] for i, c in enumerate(candidates)}
  gts = {str(i): [normalize(r) for r in refs] for i, refs in enumerate(references)}
  bleu, cider = _scorers()
  bleu_n, _ = bleu.compute_score(gts, res, verbose=0)
  cider_d, _ = cider.compute_score(gts, res)
  return {"cider_d": float(cider_d), "bleu4": float(bleu_n[3])}
