"""Meta Invariance Defense (Zhang et al., "Meta Invariance Defense Towards Generalizable Robustness to Unknown
Adversarial Attacks", TPAMI 2024, arXiv:2404.03340), as described in docs/mid.md.

- :mod:`midbench.mid.parts`: the teacher autoencoder and the MID classifier as checkpointable modules;
- :mod:`midbench.mid.losses`: the adversarial, cyclic and label consistencies;
- :mod:`midbench.mid.meta`: one meta-learning step (functional inner update, second- or first-order);
- :mod:`midbench.mid.pool`: the Attacker Pool and its per-epoch-block cache;
- :mod:`midbench.defenses.mid`: the training methods ``mid-teacher`` and ``mid``.
"""
