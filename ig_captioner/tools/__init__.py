"""Tooling on top of the trainer and the evaluator, each a command of its own:

- `sweep`: a config's runs trained and evaluated, locally or submitted to a launcher, and the
  summary tables (`sweep_tables`, `sweep_hooks`);
- `launchers`: the commands that start a job on every host of a TPU VM slice, GKE (xpk) or SLURM;
- `plan`: per-chip memory, FLOPs and step time of a config on a TPU topology, compiled here;
- `study_report`: the IG study's alpha selection, tables and figures (`configs/ig_study.py`).
"""
