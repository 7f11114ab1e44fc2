"""The SAC learner of MARA.

- ``learner.sac``      pure losses, SACState, ``sac_update(state, batch, cfg) -> (state, metrics)``
- ``learner.learner``  SACLearner: training state + weight versions + checkpoints (no Ray)
- ``learner.service``  LearnerService: the training loop and weight publication that the driver
                       runs as a Ray actor (import it explicitly; it needs ray)

Its configuration (``SACConfig``, ``LearnerConfig``) is in core/config.py.
"""

from learner.learner import SACLearner
from learner.sac import UpdateMetrics, sac_update

__all__ = ["SACLearner", "UpdateMetrics", "sac_update"]
