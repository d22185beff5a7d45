"""Loss-curve picture for gpt_pretrain.py (matplotlib is optional: pip install matplotlib)."""
import json

from support.files import write_atomically


def plot_losses(metrics_path, png_path):
    """Draw the training loss per logged step and the evaluated train/val losses. A failed
    write (disk full...) leaves no partial png and raises support.files.WriteError."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed, so no loss_curve.png (pip install matplotlib)")
        return
    with open(metrics_path) as f:
        records = [json.loads(line) for line in f]
    steps = [r["iter"] for r in records if "train_loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(steps, [r["train_loss"] for r in records if "train_loss" in r], lw=0.8, alpha=0.6,
            label="train loss (one batch)")
    ax.plot([r["iter"] for r in evals], [r["eval_train_loss"] for r in evals], "o-", label="train loss (eval)")
    ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val loss (eval)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        write_atomically(png_path, lambda f: fig.savefig(f, format="png", dpi=100), "the loss plot")
    finally:
        plt.close(fig)
    print(f"wrote {png_path}")
