"""LightningModules, one per kind of learning. A task never knows which network it trains."""
