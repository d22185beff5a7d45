"""Where gpt_pretrain.py's metrics go: metrics.jsonl always, TensorBoard and W&B on request.

    --logger tensorboard   event files in OUT_DIR/tensorboard (pip install tensorboard);
                           view with `tensorboard --logdir OUT_DIR/tensorboard`
    --logger wandb         a Weights & Biases run, its files in OUT_DIR/wandb (pip install
                           wandb); WANDB_MODE=offline logs without an account or a network
                           (`wandb sync OUT_DIR/wandb/offline-run-*` uploads it later)

Every record of metrics.jsonl goes to each logger as it is written: the same names, the same
iteration numbers; the run's config goes to each once, at the start.
"""
import json
import os

from support.files import append_line, write_atomically

LOGGERS = ("tensorboard", "wandb")


class TensorBoardLogger:
    def __init__(self, out_dir, config, start_step):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("--logger tensorboard needs the tensorboard package: pip install tensorboard") from None
        # purge_step: TensorBoard hides what earlier runs in this folder logged from start_step on,
        # so a resumed run drops what a killed run logged past its checkpoint (as metrics.jsonl
        # does) and a new run (0) starts a clean chart
        self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=start_step)
        self.writer.add_text("config", "\n".join(f"    {k} = {v!r}" for k, v in config.items()), start_step)

    def log(self, step, metrics):
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self):
        self.writer.close()


class WandbLogger:
    def __init__(self, out_dir, config, start_step):
        try:
            import wandb
        except ImportError:
            raise ImportError("--logger wandb needs the wandb package: pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "gpt-pretrain"), dir=out_dir,
                              name=os.path.basename(os.path.abspath(out_dir)), config=config)

    def log(self, step, metrics):
        self.run.log(metrics, step=step)

    def close(self):
        self.run.finish()


def _iteration(line):
    try:
        return json.loads(line)["iter"]
    except (ValueError, KeyError, TypeError):  # a half line from a killed run
        return float("inf")


class MetricsLog:
    """metrics.jsonl (one JSON record per line, each with its "iter") and the chosen loggers."""

    def __init__(self, out_dir, loggers, config, start_step):
        self.path = os.path.join(out_dir, "metrics.jsonl")
        if os.path.exists(self.path):
            self._keep_until(start_step)
        self.loggers = []
        try:
            for name in dict.fromkeys(loggers or ()):  # in order, each once
                self.loggers.append({"tensorboard": TensorBoardLogger, "wandb": WandbLogger}[name](
                    out_dir, config, start_step))
        except ImportError as e:
            self.close()
            raise ValueError(str(e)) from None

    def _keep_until(self, step):
        """A new run (step 0) starts an empty file; a resumed one drops what a killed run logged
        past its checkpoint, so that every iteration appears once."""
        with open(self.path) as f:
            kept = [line for line in f if step and _iteration(line) <= step]
        write_atomically(self.path, lambda f: f.write("".join(kept).encode()), "metrics")

    def write(self, record):
        append_line(self.path, json.dumps(record), "metrics")
        step = record["iter"]
        metrics = {k: v for k, v in record.items() if k != "iter" and isinstance(v, (int, float))}
        for logger in self.loggers:
            logger.log(step, metrics)

    def close(self):
        for logger in self.loggers:
            logger.close()
        self.loggers = []

