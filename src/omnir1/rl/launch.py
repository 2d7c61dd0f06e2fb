"""One process per GPU of a node: `omnir1 train` under `accelerate launch`.

With `train.gpus_per_node` > 1 (the DVC train stage, a Kubeflow one-node train step), the
command starts itself again under `accelerate launch` with that many processes and the
accelerate config `train.accelerate_config` (plain DDP by default, or a DeepSpeed one), and
waits for them: TRL refuses one process driving several GPUs (DataParallel). A process that
is already a rank of a launcher (LOCAL_RANK set: this relaunch, the multi-node PyTorchJob)
trains. On a CPU the ranks form a gloo group (TrainParams.grpo_config), which the tests use.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from omnir1.errors import ConfigError


def is_rank() -> bool:
    """Whether this process is one rank of a launcher (accelerate, torchrun, a PyTorchJob)."""
    return "LOCAL_RANK" in os.environ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(
    train_args: Sequence[str], processes: int, accelerate_config: str | Path
) -> list[str]:
    """`accelerate launch` of `omnir1 train TRAIN_ARGS` with `processes` ranks on this node."""
    config = Path(accelerate_config)
    if not config.is_file():
        raise ConfigError(config, "accelerate config not found", "train.accelerate_config")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return [
        accelerate,
        "launch",
        "--config_file",
        str(config),
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "omnir1.cli",
        "train",
        *map(str, train_args),
    ]


def relaunch(train_args: Sequence[str], processes: int, accelerate_config: str | Path) -> int:
    """Run `omnir1 train` as `processes` ranks and return the launcher's exit code."""
    return subprocess.run(launch_command(train_args, processes, accelerate_config)).returncode
