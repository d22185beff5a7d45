"""Small collectives for gpt_pretrain.py under torchrun (each is a no-op for one process)."""
import torch
import torch.distributed as dist


def mean_over_ranks(value, world):
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)  # SUM: gloo has no AVG
        value /= world
    return value.item()


def any_rank(flag, world, device):
    if world == 1:
        return flag
    flag = torch.tensor([float(flag)], device=device)
    dist.all_reduce(flag)
    return flag.item() > 0


def gather_from_ranks(tensor, world):
    """A list with every rank's tensor (rank order); [tensor] for one process."""
    if world == 1:
        return [tensor]
    gathered = [None] * world
    dist.all_gather_object(gathered, tensor)
    return gathered
