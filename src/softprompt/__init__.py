"""softprompt: parameter-efficient prompt learning on frozen language models.

Quick start::

    import softprompt
    result = softprompt.train(task="rotten_tomatoes", prompt_length=20, max_steps=200, out="runs/rt")
    pm = softprompt.PromptedModel.from_saved("runs/rt/best")
    pm.classify(["a gorgeous, witty, seductive movie"])
"""

from .version import __version__  # noqa: E402,F401
from .errors import (ConfigError, DataError, ModelLoadError, ModelMismatchError, PromptFileError,  # noqa: E402
                     SoftPromptError, TemplateError, UnknownLabelError)
from .modeling import DEFAULT_MODEL, load_model  # noqa: E402
from .prompt import INITIALIZERS, SoftPrompt, register_initializer  # noqa: E402


def train(config=None, **overrides):
    """Train a prompt; see :func:`softprompt.training.train` and :class:`softprompt.config.TrainConfig`."""
    from .training import train as _train

    return _train(config, **overrides)


def __getattr__(name):
    if name == "PromptedModel":
        from .api import PromptedModel

        return PromptedModel
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    raise AttributeError(name)


__all__ = ["train", "SoftPrompt", "PromptedModel", "TrainConfig", "load_model", "DEFAULT_MODEL", "INITIALIZERS",
           "register_initializer", "SoftPromptError", "ConfigError", "DataError", "ModelLoadError",
           "ModelMismatchError", "PromptFileError", "TemplateError", "UnknownLabelError"]
