"""open_clip's CoCa (`open_clip.CoCa`, configs with a `multimodal_cfg`) as our `coca` family.

What open_clip's CoCa computes, and the `config.model` options of ours that say it: the ViT has
no final layer norm (`encoder_ln_final=False`); an attentional pooler of width `embed_dim` with
N queries (`attn_pooler_queries`, 256 by default) and layer norms on its queries and keys
(`pooler_norms`) is followed by `ln_post`; its first output, projected, is the image embedding
and the other N-1 are what the multimodal decoder cross-attends to (`pooler_queries=N`). The
text tower appends a learned class token (`embed_cls`) whose features, layer-normed and
projected, are the text embedding, under the key mask open_clip's checkpoints were trained with
(`text_pooling='cls'`; `'cls_valid'` for its `correct_cls_mask`). Each decoder layer is a
self-attention block then a cross-attention block with its own MLP and a layer norm on the
visual tokens (`cross_layers='separate'`); the vocabulary projection has no bias.
"""

from ig_captioner.convert import open_clip_names as names
from ig_captioner.models import layers


def size_name(width: int, depth: int, heads: int, mlp_ratio: float) -> str:
  return layers.size_name(layers.TransformerSize(width=width, depth=depth,
                                                 mlp_dim=int(width * mlp_ratio), num_heads=heads))


def _decoder_fields(arch: dict) -> tuple[dict, dict]:
  text, multimodal = arch["text_cfg"], arch["multimodal_cfg"]
  text_shape = {"width": text.get("width", 512), "heads": text.get("heads", 8),
                "mlp_ratio": float(text.get("mlp_ratio", 4.0)),
                "context_length": text.get("context_length", 77)}
  # open_clip builds its multimodal decoder with the default MLP ratio 4, whatever the config.
  multimodal_shape = {"width": multimodal.get("width", 512), "heads": multimodal.get("heads", 8),
                      "mlp_ratio": 4.0, "context_length": multimodal.get("context_length", 77)}
  return text_shape, multimodal_shape


def unsupported(arch: dict) -> list[str]:
  """What of a CoCa `arch` the `coca` family cannot express (besides what CLIPs share)."""
  vision, multimodal = arch["vision_cfg"], arch["multimodal_cfg"]
  out = []
  if vision.get("attentional_pool") is not True:
    out.append(f"vision_cfg.attentional_pool={vision.get('attentional_pool')!r} (CoCa's pooler "
               "is `true`)")
  text_shape, multimodal_shape = _decoder_fields(arch)
  for field, theirs in text_shape.items():
    if multimodal_shape[field] != theirs:
      out.append(f"the multimodal decoder's {field} {multimodal_shape[field]} differs from "
                 f"text_cfg.{field}={theirs}")
  if multimodal.get("ls_init_value") is not None:
    out.append(f"multimodal_cfg.ls_init_value={multimodal['ls_init_value']!r}")
  if arch.get("init_logit_bias") is not None:
    out.append(f"init_logit_bias={arch['init_logit_bias']!r} (a CoCa with a logit bias)")
  return out


def model_fields(arch: dict) -> dict:
  """The `config.model` fields of a CoCa beyond those it shares with a CLIP."""
  vision, text, multimodal = arch["vision_cfg"], arch["text_cfg"], arch["multimodal_cfg"]
  text_shape, _ = _decoder_fields(arch)
  return dict(
      name="coca",
      decoder=size_name(text_shape["width"], text.get("layers", 12), text_shape["heads"],
                        text_shape["mlp_ratio"]),
      unimodal_depth=int(text.get("layers", 12)),
      multimodal_depth=int(multimodal.get("layers", 12)),
      encoder_ln_final=False, pooler_queries=int(vision.get("attn_pooler_queries", 256)),
      pooler_width=int(arch["embed_dim"]), pooler_heads=int(vision.get("attn_pooler_heads", 8)),
      pooler_norms=True,
      text_pooling="cls_valid" if text.get("correct_cls_mask") else "cls",
      cross_layers="separate", head_bias=False)


def rules(arch: dict) -> dict[str, names.Rule]:
  """{our param path: (open_clip state-dict name, transform)} for a CoCa."""
  vision, text, multimodal = arch["vision_cfg"], arch["text_cfg"], arch["multimodal_cfg"]
  # The pooler's keys have the ViT's width: fused q/k/v only where that is embed_dim too.
  fused = int(arch["embed_dim"]) == vision.get("width", 768)
  out = names.vision_trunk("encoder", vision)
  out |= names.attention("image_pool/attn", "visual.attn_pool.attn", fused)
  out |= names.nest("image_pool/ln_query", names.ln("visual.attn_pool.ln_q"))
  out |= names.nest("image_pool/ln_tokens", names.ln("visual.attn_pool.ln_k"))
  out |= names.nest("image_pool/ln", names.ln("visual.ln_post"))
  out |= {"image_pool/query": ("visual.attn_pool.query", names.same),
          "image_projection/kernel": ("visual.proj", names.same),
          "text_embedding/token_embedding": ("text.token_embedding.weight", names.same),
          "text_embedding/pos_embedding": ("text.positional_embedding", names.same),
          "text_cls": ("text.cls_emb", names.same),
          "text_projection/kernel": ("text.text_projection", names.same),
          "head/kernel": ("text_decoder.text_projection", names.same),
          "log_temperature": ("logit_scale", lambda a: a.reshape(()))}
  out |= names.nest("ln_text", names.ln("text.ln_final"))
  out |= names.nest("ln_final", names.ln("text_decoder.ln_final"))
  for i in range(text.get("layers", 12)):
    out |= names.nest(f"unimodal{i}", names.block(f"text.transformer.resblocks.{i}"))
  for i in range(multimodal.get("layers", 12)):
    out |= names.nest(f"multimodal{i}/self_block", names.block(f"text_decoder.resblocks.{i}"))
    out |= names.nest(f"multimodal{i}/cross_block",
                      names.cross_block(f"text_decoder.cross_attn.{i}"))
  return out
