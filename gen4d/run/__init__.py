"""The run engine shared by every gen4d run: run folder policy (:mod:`.folder`), checkpoints in
safetensors + JSON (:mod:`.checkpoint`), logging (:mod:`.logs`), the training loop (:mod:`.engine`)."""

from gen4d.run.engine import Engine, LoopResult, LoopSettings, Task, read_training_state
from gen4d.run.folder import MARKER, RunFolder, check_resume_config, is_run, open_run

__all__ = [
    "MARKER",
    "Engine",
    "LoopResult",
    "LoopSettings",
    "RunFolder",
    "Task",
    "check_resume_config",
    "is_run",
    "open_run",
    "read_training_state",
]
