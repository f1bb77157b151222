"""The one place that reads YAML: the safe loader, and errors that name the file and line."""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import time
from pathlib import Path
from typing import Any

from oaievalset.errors import RegistryError


def load_yaml(path: Path) -> Any:
    """Parse one YAML file with the safe loader; any failure is a RegistryError naming it."""
    # Imported here: with every file in the cache, a run never needs PyYAML (nor the time
    # it takes to import). libyaml's loader is several times faster, where the build has it.
    import yaml

    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, "rb") as f:
            return yaml.load(f, Loader=loader)
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


# -- a cache of parsed files, so that a large registry loads in near-constant time -------

_RACY = 2.0  # seconds: a file changed this recently is not cached (its time stamp may repeat)


def cache_dir() -> Path | None:
    """Where parsed registry files are cached; None when OAIEVALSET_NO_CACHE is set."""
    if os.environ.get("OAIEVALSET_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "oaievalset"


class FolderCache:
    """Parsed YAML files of one folder, kept in one file under the cache folder.

    An entry is used only while the file's inode, size, modification and change times are
    all the same as when it was parsed (the change time cannot be set back by anyone), and a
    file modified in the last seconds is never cached, so stale data is never served.
    """

    def __init__(self, folder: Path) -> None:
        self._entries: dict[str, tuple[tuple[int, int, int, int], Any]] = {}
        self._seen: set[str] = set()  # the files asked for in this load
        self._dirty = False
        base = cache_dir()
        self._file: Path | None = None
        if base is None:
            return
        digest = hashlib.sha1(os.path.realpath(folder).encode("utf-8")).hexdigest()[:20]
        self._file = base / f"yaml-{digest}.marshal"
        try:
            loaded = marshal.loads(self._file.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            return
        if isinstance(loaded, dict):
            self._entries = loaded

    def load(self, path: Path) -> Any:
        """The parsed file, from the cache when it is certainly current."""
        try:
            st = os.stat(path)
        except OSError:
            return load_yaml(path)  # let load_yaml report the problem
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        self._seen.add(str(path))
        hit = self._entries.get(str(path))
        if hit is not None and tuple(hit[0]) == key:
            return hit[1]
        data = load_yaml(path)
        if self._file is not None and time.time() - max(st.st_mtime, st.st_ctime) > _RACY:
            try:
                marshal.dumps(data)  # only plain data (no dates, sets...) can be kept
            except ValueError:
                return data
            self._entries[str(path)] = (key, data)
            self._dirty = True
        return data

    def save(self, complete: bool = False) -> None:
        """Write the cache if it changed; a cache that cannot be written is simply skipped.

        After a complete load of the folder, files that were not asked for (removed or
        renamed since) are dropped from it, so that it does not grow with old files.
        """
        if complete:
            for gone in self._entries.keys() - self._seen:
                del self._entries[gone]
                self._dirty = True
        if not self._dirty or self._file is None:
            return
        import tempfile  # only when the cache changed: it is slow to import

        tmp = None
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".yaml-", dir=self._file.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(self._entries))
            os.replace(tmp, self._file)
        except OSError:
            # A full disk or a folder made read-only mid-write: no temporary file is left.
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self._dirty = False
