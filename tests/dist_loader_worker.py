"""Run under torchrun with 2 processes: record which samples each rank's loaders yield."""
import json
import sys
from pathlib import Path

import torch.distributed as dist

from colorize.data.loaders import build_loaders
from colorize.settings import DataConfig

data_dir, kind, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
config = DataConfig(dir=data_dir, loader=kind, batch_size=6)
loaders = build_loaders(config, rank=rank, world=world)
seen = {"world": world}
for split in ("train", "test"):
    real = [i for b in loaders[split] for i, v in zip(b.index.tolist(), b.valid.tolist()) if v]
    seen[split] = {"real": real}
limited = build_loaders(DataConfig(dir=data_dir, loader=kind, batch_size=6, eval_limit=17),
                        rank=rank, world=world, splits=("test",))["test"]
seen["test_padded"] = sum(int((~b.valid).sum()) for b in limited)
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps(seen))
dist.destroy_process_group()
