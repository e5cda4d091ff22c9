"""Stopping a training run cleanly: SIGINT (Ctrl-C) or SIGTERM (``kill``, a job scheduler, the
end of a lease) asks the run to finish its current step, save a checkpoint and stop, so that
``--resume`` loses no step. A second SIGINT stops at once (from the last checkpoint, as before).

Under several processes each process checks at the same point of every step whether any of them
was asked (:meth:`StopRequests.any`), so all stop after the same step. ``torchrun`` passes a
SIGINT or SIGTERM on to its workers and kills them 30 s later: a step must end within that for
the checkpoint to be written (else the run resumes from its last periodic checkpoint)."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)

__all__ = ["StopRequests", "TrainingInterrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """A run stopped on request after saving its checkpoint. ``signum`` is the signal that asked
    (its exit status is ``128 + signum``), ``step`` the last step done and saved."""

    def __init__(self, message: str, signum: int, step: int):
        super().__init__(message)
        self.signum, self.step = signum, step


class StopRequests:
    """While entered (in the main thread; elsewhere signals cannot be caught and nothing
    changes), SIGINT and SIGTERM set :attr:`signum` instead of stopping the process; the
    handlers found on entry are put back on exit. A second SIGINT raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return  # a repeated SIGTERM (torchrun forwards one after the terminal's SIGINT): still stopping
        self.signum = signum
        log.warning("%s: finishing this step, then saving a checkpoint and stopping (Ctrl-C again stops at once, "
                    "losing the steps since the last checkpoint)", signal.Signals(signum).name)

    def any(self, acc) -> int | None:
        """The signal that asked this process or, under several processes, any of them to stop
        (the highest number where they differ); None when none did. ``acc`` is the run's
        ``accelerate.Accelerator``; with more than one process this is a collective call."""
        if acc.num_processes == 1:
            return self.signum
        import torch
        import torch.distributed as dist

        asked = torch.tensor([self.signum or 0], device=acc.device)
        dist.all_reduce(asked, op=dist.ReduceOp.MAX)
        return int(asked.item()) or None
