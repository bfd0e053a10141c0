"""Scoring with a model's predict functions (`models`), for evaluators, the inference API and
objectives alike:

- `likelihood`: token and sequence log-probabilities; the reference scorer of texts;
- `prompt_plan`, `prompt_scoring`: exact cached scoring of many prompts per image;
- `prompt_streaming`, `shortlist`: the same for very large prompt sets (streamed; two-stage);
- `class_scores`: zero-shot class scores (the IG score; CLIP's prompt ensemble);
- `embeddings`: text embeddings in chunks;
- `generation`: caption generation with a KV cache (greedy, beam, IG-guided).
"""
