"""A callback that kills a training run at a chosen step, for the resume tests."""

from sgdlab.callbacks import Callback


class CrashAt(Callback):
    """Raises KeyboardInterrupt after update ``step`` (never, when None), like a lost Colab
    session: not a clean StopTraining, so nothing after the crash point is written."""

    def __init__(self, step=None):
        self.step = step

    def on_step(self, step):
        if step.index == self.step:
            raise KeyboardInterrupt(f"simulated crash at step {self.step}")
