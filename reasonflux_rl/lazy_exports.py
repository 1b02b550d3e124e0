"""Names a package exports without importing the modules that define them until a name is first read (PEP 562).

The package and its rooms export their public callables this way, so that importing one light module (a config, the
reward formula) does not load TRL or a model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` that imports ``exports[name]`` (a module path) when ``name`` is read.

    Example:
    ```python
    >>> from reasonflux_rl.lazy_exports import lazy_exports
    >>> getattr_ = lazy_exports("pkg", {"dumps": "json"})
    >>> getattr_("dumps")([1])
    '[1]'
    >>> try:
    ...     getattr_("loads")
    ... except AttributeError as err:
    ...     print(err)
    module 'pkg' has no attribute 'loads'

    ```
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
