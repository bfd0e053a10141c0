"""A fake bucket for tests: `gs://` paths through etils.epath lead to a local directory."""

import contextlib
import os
from unittest import mock

from etils.epath import gpath
from etils.epath import testing as epath_testing


@contextlib.contextmanager
def fake_bucket(local_dir):
  """`gs://` paths lead to `local_dir`, with an object store's rules: appending to an object or
  renaming one fails (GCS has neither), so code that relies on them fails here too."""
  def local(p):
    text = os.fspath(p)
    return os.path.join(local_dir, text[len("gs://"):]) if text.startswith("gs://") else text

  def bucket_only(check=None):
    def call(original, p, *args, **kwargs):
      if check:
        check(os.fspath(p), *args)
      return original(local(p), *args, **kwargs)
    return call

  def no_append(p, mode="r"):
    assert "a" not in mode, f"append to a bucket object {p}"

  def no_rename(original, p, dst):
    if "gs://" in os.fspath(p) + os.fspath(dst):
      raise AssertionError(f"rename in a bucket: {p} -> {dst}")
    return original(p, dst)

  def glob(original, pattern):  # Matches named as the bucket's.
    prefix = os.path.join(local_dir, "")
    return [f"gs://{m[len(prefix):]}" if m.startswith(prefix) else m
            for m in original(local(pattern))]

  fns = {name: bucket_only() for name in ("copy", "exists", "isdir", "listdir", "makedirs",
                                          "mkdir", "remove", "rmtree", "stat")}
  with mock.patch.object(gpath, "_is_tf_installed", lambda: False), \
      epath_testing.mock_epath(open=bucket_only(no_append), rename=no_rename,
                               replace=no_rename, glob=glob, **fns):
    yield
