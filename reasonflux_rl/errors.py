"""The one exception type for bad user input: the CLI prints it as a one-line error instead of a traceback."""


class ConfigError(ValueError):
    """A configuration value, path or checkpoint that cannot work; the message names the key and what is allowed.

    Example:
    ```python
    >>> from reasonflux_rl.errors import ConfigError
    >>> isinstance(ConfigError("prm_beta=2 is out of range"), ValueError)
    True

    ```
    """
