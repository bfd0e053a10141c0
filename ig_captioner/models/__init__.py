"""Flax model definitions: ViT encoder, shared text decoder, the captioner."""
