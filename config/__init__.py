"""Settings: the TOML file in config/ plus secrets from the environment or .env, validated in one place."""

from config.settings import (
    DEFAULT_CONFIG,
    DEFAULT_RULES,
    ChannelConfig,
    ConfigError,
    Secret,
    Settings,
    SourceConfig,
    load_settings,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_RULES",
    "ChannelConfig",
    "ConfigError",
    "Secret",
    "Settings",
    "SourceConfig",
    "load_settings",
]
