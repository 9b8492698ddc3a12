"""Import shims for third-party packages that lag behind torchvision."""

from __future__ import annotations

import sys
import types


def install_torchvision_functional_tensor() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable again.

    basicsr 1.4.2 (and through it realesrgan) imports ``rgb_to_grayscale``
    from that module at import time; torchvision 0.17 removed the module and
    kept the function in ``torchvision.transforms.functional``. Registering a
    tiny alias module lets basicsr import without patching site-packages.
    """
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        __import__(name)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    alias = types.ModuleType(name)
    alias.rgb_to_grayscale = functional.rgb_to_grayscale  # type: ignore[attr-defined]
    sys.modules[name] = alias
