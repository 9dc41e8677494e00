"""Models: the RK block machinery, the frameworks, counting, and a registry of paper models."""
