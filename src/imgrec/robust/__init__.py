"""Adversarial robustness: L-infinity attacks (captum.robust) on [0, 1]-pixel models and the attack script."""
