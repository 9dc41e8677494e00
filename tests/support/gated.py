"""A tiny digits space with the test strategy `search_gate`: trials the test holds open.

A trial with ``HELD`` parameters blocks in training until the file named by
``RKNAS_TEST_GATE`` exists, so tests order events without depending on the machine's speed.
"""

SPACE = {
    "name": "tiny",
    "data": {"name": "digits", "train_subset": 300},
    "framework": "cifar",
    "architecture": {"periods": 2, "strategy": ["E", "search_gate"], "stages": 1, "k": [8, 16], "attention": False},
    "training": {"lr": 0.2, "batch_size": 25, "warmup_epochs": 0},
    "fidelity": {"epochs": 2, "min_epochs": 1, "early_stopping": False},
}
HELD = {"p1_strategy": "search_gate", "p1_k": 8, "p2_strategy": "E", "p2_k": 8}
GOOD = {"p1_strategy": "E", "p1_k": 8, "p2_strategy": "E", "p2_k": 8}
