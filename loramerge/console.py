"""What the terminal shows besides a command's own output: one-line notices of what a command assumed and went on
with (errors end the command instead, in `loramerge.cli`), and no library chatter a user cannot act on."""

from __future__ import annotations

import logging
import sys
import warnings


def warn(command: str, message: str) -> None:
    """`loramerge <command>: warning: <message>` on stderr, one line, beside the command's own output."""
    print(f"loramerge {command}: warning: {' '.join(message.split())}", file=sys.stderr)


NOISE = [  # (message regex, category, module regex): warnings that ask nothing of a loramerge user
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\."),  # Lightning's own call to it
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\."),  # Lightning's own call
    # the folder holds the stage's fingerprint.json (what tells a resumable last.ckpt from a stale one) before the
    # first checkpoint: not a user's leftovers
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"lightning\.pytorch\.callbacks\."),
]
CHATTY_LOGGERS = [
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
    "mlflow.store.db.utils",
]
"""Lightning's info lines: hardware found (GPU/TPU available: False), seed set, AMP chosen, a litlogger tip. The
stage records each of these facts in its MLflow run; its warnings still show. MLflow's: the local store's tables
created on a fresh project's first stage."""
KEPT_NOTICES = ["Detected KeyboardInterrupt"]
"""Info lines of those loggers that a user acts on: Ctrl-C was heard and training stops at a checkpoint it resumes from."""


class _Actionable(logging.Filter):
    """Lets through warnings and errors, and of the info lines only `KEPT_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or any(notice in record.getMessage() for notice in KEPT_NOTICES)


ACTIONABLE = _Actionable()


def quiet_libraries() -> None:
    """Silence, at their source, the library notices above; every other warning (and these loggers' warnings) shows."""
    for message, category, module in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).addFilter(ACTIONABLE)
