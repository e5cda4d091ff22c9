"""Training methods, each a config plus a module, registered by name in :data:`METHODS`."""

from .base import (METHODS, Method, MethodConfig, PerTaskConfig, PerTaskMethod, embedding_rms, get_method,
                   lr_following_model, register_method, with_method_defaults)
from .adapter import Adapter, AdapterConfig
from .full_tuning import FullTuning, FullTuningConfig
from .hyperformer import Hyperformer, HyperformerConfig
from .hyperprompt import HyperPrompt, HyperPromptConfig
from .in_context import InContext, InContextConfig
from .knowprompt import KnowPrompt, KnowPromptConfig
from .multitask_prompt import MultiTaskPromptConfig, MultiTaskPromptTuning
from .prefix_tuning import PrefixTuning, PrefixTuningConfig
from .prompt_tuning import ManualPrompt, ManualPromptConfig, PromptTuning, PromptTuningConfig

__all__ = ["METHODS", "Method", "MethodConfig", "PerTaskMethod", "PerTaskConfig", "get_method", "register_method", "PromptTuning",
           "PromptTuningConfig", "ManualPrompt", "ManualPromptConfig", "FullTuning", "FullTuningConfig",
           "PrefixTuning", "PrefixTuningConfig", "InContext", "InContextConfig", "KnowPrompt", "KnowPromptConfig", "Adapter", "AdapterConfig",
           "MultiTaskPromptTuning", "MultiTaskPromptConfig", "Hyperformer", "HyperformerConfig",
           "HyperPrompt", "HyperPromptConfig", "with_method_defaults", "embedding_rms",
           "lr_following_model"]
