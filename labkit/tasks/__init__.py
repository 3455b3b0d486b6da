"""LightningModules. Add a task: one module here plus ``conf/task/<name>.yaml``."""
from labkit.tasks.autoencoder import AutoencoderTask, DenoisingAutoencoderTask, SparseAutoencoderTask
from labkit.tasks.base import LabTask
from labkit.tasks.classification import ClassificationTask
from labkit.tasks.metric import SiameseTask, TripletTask

__all__ = ["LabTask", "ClassificationTask", "AutoencoderTask", "DenoisingAutoencoderTask", "SparseAutoencoderTask",
           "SiameseTask", "TripletTask"]
