"""The ExecuTorch runtime (``executorch.runtime``) with the XNNPACK backend of the wheel: the same
runtime and kernels a phone runs a ``.pte`` with, on this host's CPU."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Union

import numpy as np

from .spec import InputSpec

_SCALAR_TYPES = {0: "uint8", 6: "float32"}  # c10::ScalarType codes of the inputs we export


@contextlib.contextmanager
def native_log(lines: List[str]) -> Iterator[None]:
    """Collect what the runtime's C++ logger writes to file descriptor 2 (its reason for refusing a
    file, and XNNPACK's CPU probing) into ``lines`` instead of the console."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip()]


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """Importing executorch imports torchao, whose first import logs a deprecation notice of torch's
    (an Enum registered with pytree) on the console: keep it off ours."""
    logger = logging.getLogger("torch.utils._pytree")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_program(path: Union[Path, bytes]):
    """A loaded ``executorch.runtime.Program``, its flatbuffer verified. A file the runtime refuses
    raises ``ValueError`` with the runtime's own reason (it logs it, then raises a bare error code)."""
    with quiet_import():
        from executorch.runtime import Runtime, Verification

    data = bytes(path) if isinstance(path, (bytes, bytearray)) else str(path)
    lines: List[str] = []
    try:
        with native_log(lines):
            return Runtime.get().load_program(data, verification=Verification.InternalConsistency)
    except RuntimeError as e:
        reasons = [line.split("] ", 1)[-1] for line in lines if "cpuinfo" not in line]
        raise ValueError("; ".join(reasons[-2:] + [str(e)])) from None


def read_constant(path: Path, method: str) -> Optional[str]:
    """The string a ``constant_methods`` entry of the program returns (``None`` if it has none)."""
    program = load_program(path)
    if method not in program.method_names:
        return None
    return program.load_method(method).execute([])[0]


class ExecutorchRunner:
    """A ``.pte`` program's ``forward`` at batch 1 (the exported shape), on ``threads`` XNNPACK threads."""

    max_batch: Optional[int] = 1

    def __init__(self, path: Union[Path, bytes], spec: InputSpec, threads: int):
        program = load_program(path)
        with native_log([]):  # XNNPACK's CPU probing and the thread pool's notices
            from executorch.extension.pybindings import portable_lib

            # The thread pool is one per process: a runner sets it when it is built, and the measuring
            # loops build the runners of one thread count together.
            portable_lib._unsafe_reset_threadpool(int(threads))
            self.method = program.load_method("forward")
        meta = self.method.metadata
        if meta.num_inputs() != 1:
            raise ValueError(f"the program's forward takes {meta.num_inputs()} inputs, expected 1 image tensor")
        tensor = meta.input_tensor_meta(0)
        shape, dtype = list(tensor.sizes()), _SCALAR_TYPES.get(tensor.dtype(), f"dtype #{tensor.dtype()}")
        if shape != spec.shape() or dtype != spec.dtype:
            raise ValueError(f"the file's input is {dtype}{shape}, expected {spec.dtype}{spec.shape()}")
        self.spec = spec

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        x = self.spec.feed(images)
        # copied at once: the output tensor lives in the program's planned memory, reused by the next call
        return np.stack([self.method.execute([torch.from_numpy(x[i:i + 1])])[0][0].numpy().copy()
                         for i in range(len(x))])
