"""Pure functions of the accept/reject MDP (paper §3.1-3.3, MARA.md).

- ``candidate_sets``: the hybrid truncation that defines the candidates of a position.
- ``kl_penalty``: the per-decision KL penalty of Eq. 8.
- ``Draw``: how an answer is drawn within the candidate set the agent judges (a request's
  temperature, top-k and top-p).

How the KL penalty is made per decision. The token-level KL of Eq. 8 compares
pi_theta(t | x, y_<i) (Eq. 6) with the upstream distribution pi_ref over the same
candidates. Both factor into a chain of binary decisions in candidate order: pi_theta
accepts candidate k with pi(accept | s_k); pi_ref "accepts" it with
q_k / sum_{j >= k} q_j, the upstream probability of t^k given that t^1..t^(k-1) were
passed over. By the chain rule, the per-decision log-ratios along the path to the
emitted token add up to log pi_theta(t) - log pi_ref(t), and the per-decision binary
KLs add up (in expectation) to the token-level KL. So each decision carries its own
exact share, and the penalty needs only the candidates the agent has looked at: it
works unchanged when later candidates were never computed (lazy mode).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from core.config import KLConfig, SamplingConfig
from core.contracts import ACCEPT, REJECT
from core.sections import Int, Number, section

_EPS = 1e-8
GREEDY_BELOW = 1e-3  # temperatures below this are greedy (logits / 1e-40 would overflow)


def candidate_sets(logits: torch.Tensor, cfg: SamplingConfig) -> list[tuple[list[int], np.ndarray]]:
    """(B, V) next-token logits -> per row (candidate token ids, upstream probabilities).

    Temperature, then top-k, then top-p on the renormalised top-k distribution; the
    survivors sorted by probability, highest first. Probabilities are renormalised over
    the candidate set (they are pi_ref for the KL penalty).
    """
    logits = logits.float() / cfg.temperature
    k = min(cfg.top_k, logits.shape[-1])
    top_logits, top_ids = torch.topk(logits, k, dim=-1)  # sorted, descending
    top_probs = torch.softmax(top_logits, dim=-1)
    mass_before = torch.cumsum(top_probs, dim=-1) - top_probs
    keep = mass_before < cfg.top_p  # the first one is always kept
    counts = keep.sum(dim=-1).tolist()
    out = []
    for row, n in enumerate(counts):
        probs = top_probs[row, :n].double().cpu().numpy()
        out.append((top_ids[row, :n].tolist(), probs / probs.sum()))
    return out


def decide(accept_probs: np.ndarray, greedy: np.ndarray | bool, uniforms: np.ndarray | None = None,
           threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """Actions (1 = ACCEPT, 0 = reject) from pi(accept | s), per row: greedy, accept when
    pi >= ``threshold`` (0.5: the policy's mode; core.agent_file's accept threshold); sampled,
    accept when u < pi for u ~ U[0, 1) given in ``uniforms`` (the caller's generator, so that its
    draws stay reproducible). ``greedy``: one flag, or one per row."""
    accept_probs = np.asarray(accept_probs, dtype=np.float64)
    greedy = np.broadcast_to(np.asarray(greedy, dtype=bool), accept_probs.shape)
    if uniforms is None:
        if not greedy.all():
            raise ValueError("sampled decisions need uniforms")
        uniforms = np.ones_like(accept_probs)
    accepted = np.where(greedy, accept_probs >= threshold, np.asarray(uniforms) < accept_probs)
    return np.where(accepted, ACCEPT, REJECT).astype(np.int64)


def reference_accept_probability(ref_probs: np.ndarray, k: int) -> float:
    """pi_ref(accept | s_k) = q_k / sum_{j >= k} q_j (see the module docstring)."""
    tail = float(np.sum(ref_probs[k:]))
    return float(ref_probs[k]) / max(tail, _EPS)


def kl_penalty(accept_prob: float, ref_accept_prob: float, action: int, cfg: KLConfig) -> float:
    """Eq. 8 per decision: -lambda * D(pi_theta(. | s) || pi_ref(. | s)) on {reject, accept}.

    ``kl`` uses the log-ratio of the action taken, ``abs`` its absolute value, ``mse``
    half its square, and ``full`` the exact binary KL (the reference's default).
    """
    p = np.clip(np.array([1.0 - accept_prob, accept_prob]), _EPS, 1.0)
    q = np.clip(np.array([1.0 - ref_accept_prob, ref_accept_prob]), _EPS, 1.0)
    log_ratio = np.log(p) - np.log(q)
    if cfg.estimator == "kl":
        value = log_ratio[action]
    elif cfg.estimator == "abs":
        value = abs(log_ratio[action])
    elif cfg.estimator == "mse":
        value = 0.5 * log_ratio[action] ** 2
    else:
        value = float(np.sum(p * log_ratio))
    return -cfg.coef * float(value)


@section
class Draw:
    """How one answer is drawn within the candidate set the agent judges: a request's
    temperature, top-k and top-p (None: the candidate set's own). They never change the
    candidate set, which is the agent's (the one it was trained on): they reshape the
    upstream's distribution over it where the upstream draws, past the agent's horizon
    with a sampled continuation. Temperature 0 (below ``GREEDY_BELOW``) or top-k 1 asks for
    a deterministic answer: the agent's greedy decisions and the upstream's greedy
    continuation, so the agent still decides every position it would have decided."""

    temperature: Number(ge=0, also=(None,), doc="re-tempers the upstream's distribution (0: greedy)") = None
    top_k: Int(ge=1, also=(None,), doc="at most this many of the set's candidates (1: greedy)") = None
    top_p: Number(gt=0, le=1, also=(None,), doc="then the smallest prefix reaching this probability") = None

    @property
    def greedy(self) -> bool:
        return (self.temperature is not None and self.temperature < GREEDY_BELOW) or self.top_k == 1

    def over(self, defaults: "Draw") -> "Draw":
        """This draw's settings, the ``defaults``' where this one leaves them out (a
        request's over a server's)."""
        return Draw(*(mine if mine is not None else theirs for mine, theirs in
                      zip((self.temperature, self.top_k, self.top_p),
                          (defaults.temperature, defaults.top_k, defaults.top_p))))

    def upstream_sampling(self, candidates: SamplingConfig) -> SamplingConfig:
        """The upstream's own sampling under this draw (a plain-upstream answer's candidate
        set, a sampled baseline): ``candidates``' settings where the draw leaves them out,
        and the single most likely token when the draw is greedy."""
        if self.greedy:
            return replace(candidates, temperature=1.0, top_k=1, top_p=1.0)
        return replace(candidates, **{k: v for k, v in (("temperature", self.temperature), ("top_k", self.top_k),
                                                        ("top_p", self.top_p)) if v is not None})

    def probabilities(self, ref_probs: np.ndarray, set_temperature: float) -> np.ndarray:
        """The candidate set's upstream probabilities (``candidate_sets``, at the set's
        temperature) as this draw takes them: re-tempered to the draw's temperature
        (q^(T_set / T) renormalised is softmax(logits / T) over the set), then cut to the
        draw's top-k and to the smallest prefix whose probability reaches its top-p, and
        renormalised. The candidates keep their order; the first is always kept."""
        probs = np.asarray(ref_probs, dtype=np.float64)
        if self.temperature is not None and not self.greedy:
            log_probs = np.log(np.clip(probs, 1e-300, None)) * (set_temperature / self.temperature)
            probs = np.exp(log_probs - log_probs.max())
            probs = probs / probs.sum()
        if self.top_k is not None:
            probs = np.where(np.arange(len(probs)) < self.top_k, probs, 0.0)
            probs = probs / probs.sum()
        if self.top_p is not None:
            probs = np.where(np.cumsum(probs) - probs < self.top_p, probs, 0.0)
        return probs / probs.sum()
