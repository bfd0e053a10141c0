"""The README and docs/ point at things that exist: relative links, and the repository paths
they quote (`ig_captioner/...`, `tests/...`, `configs/...`); lines within 100 characters."""

import glob
import os
import re

import pytest

from tests.conftest import REPO

PAGES = ["README.md"] + sorted(os.path.relpath(p, REPO)
                               for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_QUOTED_PATH = re.compile(
    r"`((?:ig_captioner|tests|configs|launch|benchmarks|notebooks|docs)/[\w/.\-]*)`")


@pytest.mark.parametrize("page", PAGES)
def test_links_and_quoted_paths_exist(page):
  text = open(os.path.join(REPO, page), encoding="utf-8").read()
  base = os.path.dirname(os.path.join(REPO, page))
  missing = [link for link in _LINK.findall(text) if "://" not in link
             and not os.path.exists(os.path.join(base, link))]
  missing += [path for path in _QUOTED_PATH.findall(text)
              if not glob.glob(os.path.join(REPO, path.rstrip("/")))]
  assert not missing, f"{page} names what does not exist: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_lines_within_100_characters(page):
  with open(os.path.join(REPO, page), encoding="utf-8") as f:
    long_lines = [n for n, line in enumerate(f, 1)
                  if len(line.rstrip("\n")) > 100 and not line.startswith(("|", "!["))]
  assert not long_lines, f"{page}: lines over 100 characters: {long_lines}"


def test_readme_is_short():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    assert len(f.readlines()) <= 250
