"""Strategies used only by the search tests (registered through RKNAS_PLUGIN_MODULES)."""

import torch
from torch import nn

import rknas
from rknas import StageStrategy

__version__ = "0.0.1"  # reported as its version: this module belongs to no installed distribution


class Dud(nn.Module):
    """Wipes the state: the classifier sees a constant, so accuracy stays at chance."""

    def __init__(self, k):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, y):
        return y * self.scale * 0


class WrongShape(nn.Module):
    def forward(self, y):
        return y[:, :1]


@rknas.hookimpl
def register_stage_strategies(register):
    register(StageStrategy(name="search_dud", description="test: chance accuracy", builder=lambda spec: Dud(spec.channels)))
    register(StageStrategy(name="search_broken", description="test: breaks the contract", builder=lambda spec: WrongShape()))


class Crash(nn.Module):
    """Passes the contract check (eval mode) and kills its process during training."""

    def forward(self, y):
        if self.training:
            import os

            os._exit(3)
        return y


@rknas.hookimpl(specname="register_stage_strategies")
def register_crash(register):
    register(StageStrategy(name="search_crash", description="test: worker dies while training", builder=lambda spec: Crash()))


class Gate(nn.Module):
    """Blocks training until the file named by RKNAS_TEST_GATE exists: a trial the test holds open.

    While it waits it touches ``<gate>.waiting``: the test sees that the trial is inside training
    (its actor started, no other call of Tune's in flight). Once the gate is open, an evaluation
    (validation after an epoch) touches ``<gate>.evaluated``: the test sees that the held trial
    trained and produced a result, whatever the driver does.
    """

    def forward(self, y):
        import os

        gate = os.environ["RKNAS_TEST_GATE"]
        if self.training:
            import time

            if not os.path.exists(gate):
                open(gate + ".waiting", "a").close()
            while not os.path.exists(gate):
                time.sleep(0.05)
        elif os.path.exists(gate):
            open(gate + ".evaluated", "a").close()
        return y


@rknas.hookimpl(specname="register_stage_strategies")
def register_gate(register):
    register(StageStrategy(name="search_gate", description="test: waits for a file while training", builder=lambda spec: Gate()))


class LateGate(nn.Module):
    """Like ``Gate``, but only from the second training epoch on (trained, then evaluated, in this process).

    The first epoch ends and is checkpointed before the trial blocks, so a test that kills the
    held worker sees whether the retry continues from that checkpoint. (The contract check at
    build time runs the module in eval mode before any training: that evaluation does not count.)
    """

    def __init__(self):
        super().__init__()
        self.trained = False
        self.evaluated = False

    def forward(self, y):
        if not self.training:
            self.evaluated = self.trained
        elif not self.evaluated:
            self.trained = True
        else:
            import os
            import time

            while not os.path.exists(os.environ["RKNAS_TEST_GATE"]):
                time.sleep(0.05)
        return y


@rknas.hookimpl(specname="register_stage_strategies")
def register_late_gate(register):
    register(StageStrategy(name="search_late_gate", description="test: waits for a file in its second epoch",
                           builder=lambda spec: LateGate()))
