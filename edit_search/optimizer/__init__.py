"""Study creation and resumption, storages, samplers, and the batched ask/tell loop.

This is the only part of the package that talks to Optuna's storage.
"""

from edit_search.optimizer._context import EditContext, Scores
from edit_search.optimizer._loop import DEFAULT_PATIENCE, RECIPE_KEY, Progress, choose, optimize
from edit_search.optimizer._recovery import (
    fail_stale_trials,
    record_target,
    register_worker,
    remaining_trials,
)
from edit_search.optimizer._storage import DEFAULT_STORAGE, all_study_names, open_storage
from edit_search.optimizer._study import (
    HAND_RECIPES,
    OBJECTIVE_NAMES,
    SAMPLERS,
    SETTINGS_KEY,
    StudySettings,
    create_or_resume,
    load_settings,
    load_study,
    make_sampler,
)

__all__ = [
    "DEFAULT_PATIENCE",
    "DEFAULT_STORAGE",
    "HAND_RECIPES",
    "OBJECTIVE_NAMES",
    "RECIPE_KEY",
    "SAMPLERS",
    "SETTINGS_KEY",
    "EditContext",
    "Progress",
    "Scores",
    "StudySettings",
    "all_study_names",
    "choose",
    "create_or_resume",
    "fail_stale_trials",
    "load_settings",
    "load_study",
    "make_sampler",
    "open_storage",
    "optimize",
    "record_target",
    "register_worker",
    "remaining_trials",
]
