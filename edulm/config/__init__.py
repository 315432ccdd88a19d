"""Run configuration: typed dataclasses, YAML files, dotted ``key=value`` overrides, validation.

- :mod:`edulm.config.schema`: the sections as dataclasses, a docstring under every field
  (``edulm info --explain``);
- :mod:`edulm.config.loading`: YAML, overrides and type coercion (:func:`load_config`,
  :func:`config_from_dict`), writing ``config.yaml``;
- :mod:`edulm.config.checks`: validation, one function per section, called from :func:`validate`.

Unknown keys, wrong types, non-finite numbers and inconsistent shapes raise
:class:`~edulm.base.errors.UsageError` with a did-you-mean where one fits.
"""

from edulm.config.checks import (
    SHAPE_KEYS,
    explicit_model_keys,
    shape_pending,
    validate,
    validate_data,
    validate_model,
    validate_run,
    validate_tokenizer,
    validate_train,
)
from edulm.config.loading import (
    apply_overrides,
    coerce,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    own_settings,
    parse_override,
    read_yaml,
    save_config,
)
from edulm.config.schema import (
    SECTIONS,
    Config,
    DataConfig,
    ModelConfig,
    RunConfig,
    SourceEntry,
    TokenizerConfig,
    TrainConfig,
    explain,
    field_docs,
)

__all__ = [
    "SECTIONS", "SHAPE_KEYS", "Config", "DataConfig", "ModelConfig", "RunConfig", "SourceEntry", "TokenizerConfig",
    "TrainConfig", "apply_overrides", "coerce", "config_from_dict", "config_to_dict", "dump_config", "explain",
    "explicit_model_keys", "field_docs", "load_config", "own_settings", "parse_override", "read_yaml", "save_config", "shape_pending",
    "validate", "validate_data", "validate_model", "validate_run", "validate_tokenizer", "validate_train",
]
