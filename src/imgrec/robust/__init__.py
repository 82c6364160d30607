"""Adversarial robustness: L-infinity attacks (captum.robust, ART) on [0, 1]-pixel models, for adversarial training
(imgrec.tasks.adversarial) and `imgrec attack` (imgrec.verbs.attack)."""
