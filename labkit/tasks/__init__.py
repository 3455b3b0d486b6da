"""LightningModules. Add a task: one module here plus ``conf/task/<name>.yaml``."""
from labkit.tasks.base import LabTask
from labkit.tasks.classification import ClassificationTask

__all__ = ["LabTask", "ClassificationTask"]
