"""PPT (Gu, Han, Liu & Huang, 2021): pre-train a soft prompt on self-supervised tasks built from
unlabeled text, then use it to initialise few-shot prompt tuning (``--init pretrained:DIR``).

- :mod:`.corpus`: read a corpus file, split documents into sentences;
- :mod:`.formats`: PPT's pre-training formats (``unified``, ``pair``, ``choice``, ``single``) as
  softprompt tasks, and the builders of their examples;
- :mod:`.config`: :class:`PretrainConfig`, the options of ``softprompt pretrain-prompt``;
- :mod:`.pretrain`: :func:`pretrain_prompt`, which builds the data and trains the prompt.

See docs/ppt.md.
"""

from .config import PretrainConfig
from .corpus import Document, read_corpus, split_sentences
from .formats import FORMATS, PPT_FORMATS, build_examples, get_format, hold_out
from .pretrain import pretrain_prompt


__all__ = ["FORMATS", "PPT_FORMATS", "Document", "PretrainConfig", "build_examples", "get_format", "hold_out",
           "pretrain_prompt", "read_corpus", "split_sentences"]
