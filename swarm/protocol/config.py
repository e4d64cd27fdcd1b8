"""`CoreConfig`: the options the protocol core reads, made from `swarm.config.OPTIONS`.

Every option has one home, `config.OPTIONS`; those marked `core` are the core's, here in snake_case
(`failureTimeout` is `failure_timeout`) with the same defaults, and a default computed from other options
(`maxPeers` from `localLinks` and `shortcuts`, say) computed the same way. So adding an option to the core
is one entry in OPTIONS plus its use. The simulator and the tests build a `CoreConfig` by keyword; a node
builds it from its validated `Options` (`CoreConfig.from_options`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..config import OPTIONS

__all__ = ["CoreConfig"]


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _derive_defaults(config: Any) -> None:
    """Fill the fields left None whose option has a computed default, from the fields before them."""
    values = {option.key: getattr(config, _snake(option.key)) for option in _CORE_OPTIONS}
    for option in _CORE_OPTIONS:
        if values[option.key] is None and option.derive is not None:
            values[option.key] = option.derive(values)
            object.__setattr__(config, _snake(option.key), values[option.key])


def _from_options(cls: type, options: Any) -> Any:
    """The core's part of validated `swarm.config.Options`."""
    return cls(**{_snake(option.key): getattr(options, option.key) for option in _CORE_OPTIONS})


_CORE_OPTIONS = tuple(option for option in OPTIONS if option.core)
# The options the core reads, snake_case, with their defaults: made from `config.OPTIONS` (the options
# marked `core`), so that an option has one home and a core option is one entry there plus its use.
CoreConfig = dataclasses.make_dataclass(
    "CoreConfig", [(_snake(option.key), Any, dataclasses.field(default=option.default))
                   for option in _CORE_OPTIONS],
    frozen=True, namespace={"__module__": __name__, "__post_init__": _derive_defaults,
                            "from_options": classmethod(_from_options),
                            "__doc__": "The options the protocol core reads (`config.OPTIONS` marked core)."})
