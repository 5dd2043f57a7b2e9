"""Lightning's FSDP strategy in CPU processes (gloo), so that the FSDP path runs in the CPU suite.

Lightning accepts FSDP only with a GPU accelerator (it checks the strategy's exact class, which a
subclass passes) and hands FSDP the device's index as ``device_id``, which a CPU device lacks (FSDP
then looks for an accelerator). This subclass passes the device itself; the wrapping, sharding,
mixed precision, state dicts and checkpoints are Lightning's and torch's own.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager

from lightning.pytorch.strategies import FSDPStrategy
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
