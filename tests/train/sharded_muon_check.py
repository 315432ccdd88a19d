"""Run by ``torchrun`` from test_muon_distributed.py: ShardedMuon on row-sharded DTensors (FSDP2's
layout, uneven shards included) makes bitwise the updates torch.optim.Muon makes on whole tensors."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from edulm.train.optim.muon_update import ShardedMuon

SHAPES = [(7, 5), (5, 9), (6, 6), (3, 4)]  # odd row counts: shards of unequal size, and one of 1 row


def main() -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    gen = torch.Generator().manual_seed(0)  # the same numbers on every process
    whole = [torch.randn(shape, generator=gen) for shape in SHAPES]
    plain = [torch.nn.Parameter(w.clone()) for w in whole]
    sharded = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)])) for w in whole]
    settings = dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw")
    reference, ours = torch.optim.Muon(plain, **settings), ShardedMuon(sharded, **settings)
    for _ in range(3):
        for p, s in zip(plain, sharded):
            p.grad = torch.randn(p.shape, generator=gen)
            s.grad = distribute_tensor(p.grad.clone(), mesh, [Shard(0)], src_data_rank=None)
        reference.step()
        ours.step()
    for p, s in zip(plain, sharded):
        assert s.to_local().shape[0] < p.shape[0]  # really sharded
        assert torch.equal(s.full_tensor(), p), (p.shape, (s.full_tensor() - p).abs().max())
        assert torch.equal(ours.state[s]["momentum_buffer"].full_tensor(), reference.state[p]["momentum_buffer"])
    print(f"rank {dist.get_rank()}: equal", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
