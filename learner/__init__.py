"""The SAC learner of MARA.

- ``learner.config``   SACConfig (the maths) and LearnerConfig (the process around it)
- ``learner.sac``      pure losses, SACState, ``sac_update(state, batch, cfg) -> (state, metrics)``
- ``learner.learner``  SACLearner: training state + weight versions + checkpoints (no Ray)
- ``learner.actor``    LearnerActor: the threaded Ray actor (import it explicitly; it needs ray)
"""

from learner.config import LearnerConfig, SACConfig
from learner.learner import SACLearner
from learner.sac import UpdateMetrics, sac_update

__all__ = ["LearnerConfig", "SACConfig", "SACLearner", "UpdateMetrics", "sac_update"]
