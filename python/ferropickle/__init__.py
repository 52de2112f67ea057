"""ferropickle: a Rust-accelerated pickler that writes standard pickle protocol 5 streams."""

from ferropickle._ferropickle import (
    DEFAULT_PROTOCOL,
    HIGHEST_PROTOCOL,
    PicklingError,
    PicklingRecursionError,
    UnpicklingError,
    __version__,
    cache_clear,
    cache_info,
    dumps,
    loads,
    stats,
)

__all__ = [
    "DEFAULT_PROTOCOL",
    "HIGHEST_PROTOCOL",
    "PicklingError",
    "PicklingRecursionError",
    "UnpicklingError",
    "__version__",
    "cache_clear",
    "cache_info",
    "dumps",
    "loads",
    "stats",
]
