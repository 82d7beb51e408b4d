"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", ICLR 2020).

Misclassification-aware adversarial training: a boosted cross-entropy on the adversarial example plus a KL
regulariser weighted towards the examples the model misclassifies,

    BCE(f(x'), y) + β · KL(f(x) ‖ f(x')) · (1 − f_y(x)),
    BCE(p, y) = −log p_y − log(1 − max_{k≠y} p_k),

averaged over the batch, with x' from PGD on the cross-entropy. The weight ``1 − f_y(x)`` is differentiated
(not detached), as in the paper's objective. β = 6 is the paper's setting (``--beta``).

The training attack is a registry entry (default ``pgd-linf``) with the ``--eps``/``--attack-steps``/
``--attack-step-size`` overrides, recorded in the checkpoint like PGD-AT's.

Cost per training step and example: K forwards and K backwards for the attack, then one forward of x and one of
x' and a backward through both — K + 2 forwards and K + 2 backwards.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.attacks.kl import kl_from_clean
from midbench.defenses.base import METHODS
from midbench.defenses.paired import PairedLossTraining

#: floor of 1 − max_{k≠y} p_k inside the log, so a saturated wrong class gives a large finite loss, not inf
_LOG_FLOOR = 1e-12


def boosted_cross_entropy(adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example ``−log p_y(x') − log(1 − max_{k≠y} p_k(x'))``, shape (N,)."""
    probs = nn.functional.softmax(adv_logits, dim=1)
    # probabilities are ≥ 0, so zeroing the true class leaves the largest wrong-class probability as the max
    largest_wrong = probs.scatter(1, y.unsqueeze(1), 0.0).amax(dim=1)
    return (nn.functional.cross_entropy(adv_logits, y, reduction="none")
            - torch.log((1.0 - largest_wrong).clamp_min(_LOG_FLOOR)))


def mart_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor, beta: float
              ) -> dict[str, torch.Tensor]:
    """The MART objective given the logits of x and x'.

    Returns:
        ``loss``, and its parts ``boosted`` (mean BCE on x') and ``robust`` (mean of KL · (1 − f_y(x))).
    """
    boosted = boosted_cross_entropy(adv_logits, y).mean()
    clean_true_prob = nn.functional.softmax(clean_logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    robust = (kl_from_clean(clean_logits, adv_logits) * (1.0 - clean_true_prob)).mean()
    return {"loss": boosted + beta * robust, "boosted": boosted, "robust": robust}


@METHODS.register("mart")
class MartTraining(PairedLossTraining):
    """MART: boosted CE on PGD examples + β·KL weighted by the clean misclassification (Wang et al., ICLR 2020)."""

    name = "mart"
    citation = ("Wang et al., Improving Adversarial Robustness Requires Revisiting Misclassified Examples, "
                "ICLR 2020")

    paired_loss = staticmethod(mart_loss)
