"""Messages of the libraries that say nothing about a run, silenced one by one where each is made (nothing
else is muted):

* Lightning's "Tip" lines advertising litlogger / litmodels, its note that the trainer already has the
  model summary callback (ours, src/callbacks/model_summary.py) and that it loads the training loader to
  count the run's iterations (INFO records of its rank_zero logger);
* torch's deprecation of ``isinstance(treespec, LeafSpec)``, which Lightning 2.6 still calls for every batch
  it moves (a warning about Lightning's code, not the user's);
* Lightning's "number of training batches is smaller than the logging interval": the training records are
  logged at the run's last iteration too (src/models/base.py), so short runs lose nothing.
"""
from __future__ import annotations

import logging
import warnings


class _DropTips(logging.Filter):
    PREFIXES = ("💡 Tip:", "Trainer already configured with model summary callbacks",
                "Loading `train_dataloader` to estimate number of stepping batches")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


def silence_library_noise() -> None:
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in logger.filters):
        logger.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging "
                                              r"interval")
