"""Evaluators, each configured by `type` in `config.evals`."""
