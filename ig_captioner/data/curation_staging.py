"""How a curation's remote workers (Dataflow, Flink, Spark) get this package: staged from the
launching machine's checkout with the curation's own requirements
(launch/curation_requirements.txt), not the trainer's pins. Local runners need nothing."""

import os
import shutil
import tempfile

from apache_beam.options import pipeline_options

from ig_captioner import errors

LOCAL_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner",
                 "BundleBasedDirectRunner", "FnApiRunner", "PrismRunner", "prism")
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(_REPO, "launch", "curation_requirements.txt")


def stage_package(options: pipeline_options.PipelineOptions) -> str | None:
  """For a runner whose workers are elsewhere (Dataflow, Flink, Spark), unless the options say
  how workers get the code (--setup_file, --extra_package, --requirements_file,
  --sdk_container_image): writes a setup.py installing this package with
  launch/curation_requirements.txt (not the trainer's pins) and sets --setup_file to it.
  Returns its path, or None."""
  runner = options.view_as(pipeline_options.StandardOptions).runner
  setup = options.view_as(pipeline_options.SetupOptions)
  worker = options.view_as(pipeline_options.WorkerOptions)
  environment = options.view_as(pipeline_options.PortableOptions).environment_type
  if (runner in LOCAL_RUNNERS or environment in ("LOOPBACK", "EMBEDDED") or setup.setup_file
      or setup.extra_packages or setup.requirements_file or worker.sdk_container_image):
    return None
  if not os.path.exists(REQUIREMENTS):
    raise errors.ConfigError(f"{REQUIREMENTS} is missing: run the curation from a checkout, or "
                             "pass --setup_file or --sdk_container_image for the workers")
  with open(REQUIREMENTS, encoding="utf-8") as f:
    requirements = [r.split("#")[0].strip() for r in f if r.split("#")[0].strip()]
  build_dir = tempfile.mkdtemp(prefix="ig_captioner_curation_")
  shutil.copytree(os.path.join(_REPO, "ig_captioner"), os.path.join(build_dir, "ig_captioner"),
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  with open(os.path.join(build_dir, "README.md"), "w", encoding="utf-8") as f:
    f.write("ig_captioner's curation pipeline, as its remote workers install it.\n")
  setup_file = os.path.join(build_dir, "setup.py")
  with open(setup_file, "w", encoding="utf-8") as f:
    f.write("import setuptools\n"
            "setuptools.setup(name='ig-captioner-curation', version='0.2.0',\n"
            "    packages=setuptools.find_packages(include=['ig_captioner', 'ig_captioner.*']),\n"
            "    package_data={'ig_captioner.data': ['metadata/*']},\n"
            f"    install_requires={requirements!r})\n")
  setup.setup_file = setup_file
  return setup_file
