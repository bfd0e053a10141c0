"""Data: the embedded digits data set, tokenizer, and grain input pipelines."""
