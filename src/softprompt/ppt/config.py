"""Options of ``softprompt pretrain-prompt``: :class:`PretrainConfig`, which lives in
:mod:`softprompt.config` with every other command's options (re-exported here for old imports)."""

from ..config import PretrainConfig

__all__ = ["PretrainConfig"]
