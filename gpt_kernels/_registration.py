"""What the op modules of gpt_kernels register alike, written once."""
import torch


def refuse_double_backward(op, *backward_ops):
    """Give each backward op of `op` an autograd formula that raises a clear NotImplementedError:
    gradients of gradients (create_graph=True, then a second backward) are not supported, and
    without a formula autograd would fail with a less helpful message, or none."""
    def double_backward(ctx, *grads):
        raise NotImplementedError(f"gpt_kernels.{op}: double backward (gradients of gradients) is not supported")

    for name in backward_ops:
        torch.library.register_autograd("gpt_kernels::" + name, double_backward,
                                        setup_context=lambda ctx, inputs, output: None)
