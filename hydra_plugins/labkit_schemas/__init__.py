"""labkit's schemas in Hydra's ConfigStore and its run-directory resolvers in OmegaConf, whenever Hydra starts
(``python train.py``, ``compose`` in a notebook or a test, a submitit or joblib worker): Hydra imports every module
of the ``hydra_plugins`` namespace when it looks for plugins, and this one registers ``schema/<group>/<Name>``
(:func:`labkit.schemas.store`), which the YAMLs of ``conf/`` extend, and the ``${labkit_...:}`` resolvers that
``conf/hydra/default.yaml`` names (:func:`labkit.run.directory.register_resolvers`). Importing labkit itself
registers neither. The plugin changes nothing in the search path."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from labkit.run.directory import register_resolvers
from labkit.schemas import store

store()
register_resolvers()


class LabkitSchemas(SearchPathPlugin):
    """Registers labkit's schemas and resolvers (on import); adds no search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        store()  # again, in case the ConfigStore was cleared since the import
        register_resolvers()  # (or OmegaConf's resolvers were)
