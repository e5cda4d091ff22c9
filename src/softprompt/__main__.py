"""``python -m softprompt ...``: the ``softprompt`` command (:func:`softprompt.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
