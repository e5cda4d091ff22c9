"""Serving many prompts from one frozen model.

* :mod:`.engine` — :class:`MultiPromptModel`: named prompts and ensembles, mixed-task batches;
* :mod:`.batcher` — :class:`Batcher`: dynamic batching of concurrent requests;
* :mod:`.app` — the HTTP server (FastAPI), ``softprompt serve``, and the playground page.

The HTTP part needs ``pip install -e ".[serve]"``; the engine needs nothing more than softprompt.
"""

from .engine import Classification, Generation, MultiPromptModel, TaskConflictError, UnknownTaskError

__all__ = ["MultiPromptModel", "Classification", "Generation", "UnknownTaskError", "TaskConflictError"]
