"""Lightning's FSDP and DeepSpeed strategies in CPU processes (gloo), so that the sharded
strategies run in the CPU suite.

Lightning accepts them only on GPUs: FSDP by a check of the strategy's exact class (which a
subclass passes), DeepSpeed in ``setup_environment`` and by checking device indices, which CPU
devices lack; both hand the device index to the library (FSDP's ``device_id``, DeepSpeed's
``device_rank``), where FSDP then looks for an accelerator. These subclasses only get past those
checks and hand over a CPU device; the wrapping, partitioning, mixed precision, optimizer steps,
state dicts and checkpoints are Lightning's, torch's and DeepSpeed's own (DeepSpeed selects its
CPU accelerator and gloo by itself when no GPU is there).
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.distributed.fsdp.wrap import enable_wrap


class CPUFSDPStrategy(FSDPStrategy):
    @contextmanager
    def model_sharded_context(self) -> Generator[None, None, None]:
        with enable_wrap(
            wrapper_cls=FullyShardedDataParallel,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=self.root_device,
            **self.kwargs,
        ):
            yield


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", 0)  # DeepSpeed's CPU accelerator takes any index

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # without DeepSpeedStrategy's CUDA check

    def setup_distributed(self) -> None:
        reset_seed()  # as DeepSpeedStrategy does, without its check of GPU indices
        self.set_world_ranks()
        self._init_deepspeed_distributed()
