"""The one place that reads YAML: the safe loader, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from oaievalset.errors import RegistryError

# libyaml's loader is several times faster; it is absent from some builds of PyYAML.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with the safe loader; any failure is a RegistryError naming it."""
    try:
        with open(path, "rb") as f:
            return yaml.load(f, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise RegistryError(f"{where}: cannot parse YAML ({problem}); fix the file") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: cannot parse YAML ({exc}); fix the file") from None
    except UnicodeDecodeError:
        raise RegistryError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from None
