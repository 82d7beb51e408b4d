"""Expected ranges of the adversarial-training baselines: the least clean and white-box AutoAttack accuracy a
baseline trained to its paper's quality reaches, per dataset, method and L∞ ε (docs/baselines.md, "Expected
ranges"). A baseline below its range is under-trained, and a table that compares a new method with it flatters
the method; the leaderboard marks such a row ``below-expected-range`` (when the upper end of the 95% interval of
its clean or white-box AutoAttack accuracy lies below the floor) and keeps it out of "best AT".

Each floor is a published figure less a stated allowance, never a number measured by midbench:

- **mnist** (60,000 training images), L∞ ε = 0.3: AutoAttack standard as measured by Croce & Hein (ICML 2020,
  their table of defenses) for PGD-AT (Madry et al. 2018) 98.53 / 88.50, TRADES 99.48 / 92.81 and FGSM-RS fast
  AT 98.50 / 82.93 (clean / AutoAttack %); MSD, AVG and MAX from Maini, Wong & Kolter (ICML 2020, first 1,000
  test images, L∞ column, under their attacks rather than AutoAttack, so these floors may be strict) 98.3 / 62.7,
  99.1 / 65.2 and 98.6 / 51.0. MART published no MNIST figure and gets PGD-AT's. Allowance: 1 point clean,
  5 points AutoAttack (other architectures and reimplementations).
- **mnist5k** (4,000 training images, 15 times fewer): the same figures with 1.5 points clean and 20 points
  AutoAttack allowed. Robust generalisation needs more data than standard generalisation (Schmidt et al.,
  NeurIPS 2018), so the robust allowance is the larger; its size is midbench's choice, not a published number.
- **cifar10**, L∞ ε = 8/255: the lower ends of the ResNet-18 reimplementations (81–85% clean, 47–49.5%
  AutoAttack for PGD-AT, TRADES and MART) and Wong et al.'s FGSM-RS (83.34 / 43.21, RobustBench
  ``Wong2020Fast``), less 2 points each.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the flag of a row below its expected range (docs/flags.md)
BELOW_EXPECTED_RANGE = "below-expected-range"


@dataclass(frozen=True)
class ExpectedRange:
    """The floors of one baseline on one dataset, in percent, at L∞ ``eps``."""

    eps: float
    clean: float
    autoattack: float
    source: str

    def misses(self, clean: float | None, autoattack: float | None) -> bool:
        """Whether ``clean`` or ``autoattack`` (percent; the upper ends of their intervals when judging a
        measurement; None: not measured) falls below its floor."""
        return (clean is not None and clean < self.clean) or (autoattack is not None and autoattack < self.autoattack)


#: published (clean, AutoAttack) figures in percent, L∞, per dataset family and method (module docstring)
_MNIST = {"pgd-at": (98.53, 88.50, "Madry et al. 2018, AutoAttack by Croce & Hein 2020"),
          "trades": (99.48, 92.81, "Zhang et al. 2019, AutoAttack by Croce & Hein 2020"),
          "mart": (98.53, 88.50, "no MNIST figure published; PGD-AT's"),
          "fast-at": (98.50, 82.93, "Wong et al. 2020, AutoAttack by Croce & Hein 2020"),
          "msd": (98.3, 62.7, "Maini et al. 2020, L∞ column"),
          "avg": (99.1, 65.2, "Maini et al. 2020, L∞ column"),
          "max": (98.6, 51.0, "Maini et al. 2020, L∞ column")}
_CIFAR10 = {"pgd-at": (81.0, 47.0, "ResNet-18 reimplementations, lower end"),
            "trades": (81.0, 47.0, "ResNet-18 reimplementations, lower end"),
            "mart": (81.0, 47.0, "ResNet-18 reimplementations, lower end"),
            "fast-at": (83.34, 43.21, "Wong et al. 2020, RobustBench Wong2020Fast")}
#: per dataset: (its L∞ ε, the published figures, clean allowance, AutoAttack allowance)
_DATASETS = {"mnist": (0.3, _MNIST, 1.0, 5.0),
             "mnist5k": (0.3, _MNIST, 1.5, 20.0),
             "cifar10": (8 / 255, _CIFAR10, 2.0, 2.0)}

EXPECTED_RANGES: dict[tuple[str, str], ExpectedRange] = {
    (dataset, method): ExpectedRange(eps, round(clean - clean_allowance, 2), round(robust - robust_allowance, 2),
                                     f"{source}, less {clean_allowance:g} / {robust_allowance:g} points")
    for dataset, (eps, figures, clean_allowance, robust_allowance) in _DATASETS.items()
    for method, (clean, robust, source) in figures.items()}


def expected_range(dataset: str, method: str | None, eps_linf: float | None) -> ExpectedRange | None:
    """The floors of ``method`` on ``dataset`` when the evaluation used the range's L∞ ε (None otherwise: a
    table at another ε, or a method without published figures)."""
    found = EXPECTED_RANGES.get((dataset, str(method)))
    if found is None or eps_linf is None or abs(float(eps_linf) - found.eps) > 1e-6:
        return None
    return found
