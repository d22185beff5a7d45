"""The loss-spike guard of gpt_pretrain.py (--skip-spikes), after llm.c's outlier detector."""
import math
from collections import deque


class SpikeDetector:
    """z-score of a loss against the last `window` losses (mean and standard deviation).

    As in llm.c, every loss joins the window, the skipped ones too: a lasting change of level
    (a new part of the data) becomes the norm after a while instead of being skipped forever.
    Until the window is full there is no verdict (z is None).
    """

    def __init__(self, threshold, window=128):
        self.threshold, self.losses = threshold, deque(maxlen=window)

    def zscore(self, loss):
        """The z-score of loss against the window before it (None until the window is full);
        then loss joins the window."""
        z = None
        if len(self.losses) == self.losses.maxlen:
            mean = sum(self.losses) / len(self.losses)
            std = math.sqrt(sum((x - mean) ** 2 for x in self.losses) / len(self.losses))
            z = (loss - mean) / std if std > 0 else (0.0 if loss == mean else math.copysign(math.inf, loss - mean))
        if math.isfinite(loss):  # a non-finite loss is the other guard's business
            self.losses.append(loss)
        return z

    def is_spike(self, loss):
        z = self.zscore(loss)
        return z is not None and z > self.threshold

    def state_dict(self):
        return {"losses": list(self.losses)}

    def load_state_dict(self, state):
        self.losses.extend(state["losses"])
