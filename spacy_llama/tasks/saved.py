"""What a task keeps in a saved pipeline: one ``task.json`` in the task's folder (its
template, its labels and few-shot examples; the settings its config does not hold)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import srsly

TASK_FILE = "task.json"


def write_task(path: Path, data: Dict[str, Any]) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    srsly.write_json(path / TASK_FILE, data)


def read_task(path: Path) -> Optional[Dict[str, Any]]:
    """The saved ``task.json`` of the folder ``path``; None when there is none."""
    file = Path(path) / TASK_FILE
    if not file.exists():
        return None
    data: Dict[str, Any] = srsly.read_json(file)
    return data
