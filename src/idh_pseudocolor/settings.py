"""Project settings. There is no need to edit this file unless you want to change values
from the Kedro defaults. For further information, including these default values, see
https://docs.kedro.org/en/stable/configure/configuration_basics/#configuration"""

# Hooks, before any node: a paper run whose settings are not the paper's, or an environment that
# asks for a GPU on a machine without one, stops with an error that says what to do.
# Experiment tracking: kedro-mlflow's hook as this project needs it (StudyTracking;
# conf/*/mlflow.yml, docs/tracking.md), registered here instead of the plugin's own.
from idh_pseudocolor.hooks import HardwareCheck, PaperSettingsCheck, StudyTracking  # noqa: E402

# LIFO: the settings are checked first, the hardware next, and only then a tracked run starts
HOOKS = (StudyTracking(), HardwareCheck(), PaperSettingsCheck())

# Installed plugins for which to disable hook auto-registration.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")  # its metadata spells it so

# Class that manages the KedroSession.
# from kedro.framework.session import KedroSession
# SESSION_CLASS = KedroSession

# Class that manages storing KedroSession data.
# from kedro.framework.session.store import BaseSessionStore
# SESSION_STORE_CLASS = BaseSessionStore
# Keyword arguments to pass to the `SESSION_STORE_CLASS` constructor.
# SESSION_STORE_ARGS = {
#     "path": "./sessions"
# }

# Directory that holds configuration.
# CONF_SOURCE = "conf"

# Configuration in layers: base -> paper (a4000, l4) -> <env> -> rehearsal (<env>+rehearsal)
# -> local.
# conf/local (credentials, data_root) applies under every --env; see idh_pseudocolor.config_loader.
from idh_pseudocolor.config_loader import LOADER_ARGS, LayeredConfigLoader  # noqa: E402

CONFIG_LOADER_CLASS = LayeredConfigLoader

# Keyword arguments to pass to the `CONFIG_LOADER_CLASS` constructor: base_env "base", run env
# "local", soft merges (layers hold only deltas); see idh_pseudocolor.config_loader.LOADER_ARGS.
CONFIG_LOADER_ARGS = LOADER_ARGS

# Class that manages Kedro's library components.
# from kedro.framework.context import KedroContext
# CONTEXT_CLASS = KedroContext

# Class that manages the Data Catalog.
# from kedro.io import DataCatalog
# DATA_CATALOG_CLASS = DataCatalog

# Kedro 1.7 calls an OmegaConf API that newer OmegaConf releases deprecate; the warning is
# Kedro's to fix and would otherwise bury every run's log.
import warnings  # noqa: E402

warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)
# aggregate_study reads each namespace's output by its full name (configuration_15.validation_runs):
# that is the namespacing Kedro's warning is about, used as intended.
warnings.filterwarnings(
    "ignore", message=r"One or more dataset names contain '\.' characters", category=UserWarning
)
