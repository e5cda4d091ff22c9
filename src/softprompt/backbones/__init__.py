"""How a prompt enters each model family: one class per family behind :class:`Backbone`."""

from __future__ import annotations

from ..errors import ModelLoadError
from .base import Backbone
from .causal import CausalBackbone
from .masked import MaskedBackbone
from .seq2seq import Seq2SeqBackbone

FAMILIES: dict[str, type[Backbone]] = {
    "causal": CausalBackbone,
    "seq2seq": Seq2SeqBackbone,
    "masked": MaskedBackbone,
}


def backbone_for_config(config) -> type[Backbone]:
    """Pick the family of a ``transformers`` config: encoder-decoder, masked LM or decoder-only."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False) and kind in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return Seq2SeqBackbone
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False):
        if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and kind in ("bert", "roberta", "xlm-roberta", "electra"):
            return MaskedBackbone
        return CausalBackbone
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return MaskedBackbone
    raise ModelLoadError(
        f"model type {kind!r} is not a causal, seq2seq or masked language model that softprompt supports"
    )


def wrap(model, tokenizer, model_id: str | None = None, **kwargs) -> Backbone:
    """Wrap an already loaded ``transformers`` model and tokenizer in the right backbone."""
    return backbone_for_config(model.config)(model, tokenizer, model_id=model_id, **kwargs)


__all__ = ["Backbone", "CausalBackbone", "Seq2SeqBackbone", "MaskedBackbone", "FAMILIES", "backbone_for_config", "wrap"]
