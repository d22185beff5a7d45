"""Small collectives for gpt_pretrain.py under torchrun (each is a no-op for one process)."""
import torch.distributed as dist


def sum_over_ranks(tensor, world):
    """The element-wise sum of every rank's tensor (a new tensor; gloo has no AVG)."""
    if world > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def gather_from_ranks(tensor, world):
    """A list with every rank's tensor (rank order); [tensor] for one process."""
    if world == 1:
        return [tensor]
    gathered = [None] * world
    dist.all_gather_object(gathered, tensor)
    return gathered
