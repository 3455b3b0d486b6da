"""labkit's schemas in Hydra's ConfigStore, whenever Hydra starts (``python train.py``, ``compose`` in a notebook or
a test, a submitit or joblib worker): Hydra imports every module of the ``hydra_plugins`` namespace when it looks
for plugins, and this one registers ``schema/<group>/<Name>`` (:func:`labkit.schemas.store`), which the YAMLs
of ``conf/`` extend. The plugin itself changes nothing in the search path."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from labkit.schemas import store

store()


class LabkitSchemas(SearchPathPlugin):
    """Registers labkit's schemas (on import); adds no search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        store()  # again, in case the ConfigStore was cleared since the import
