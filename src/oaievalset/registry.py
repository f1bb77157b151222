"""Find and load the registry YAML, follow aliases, and resolve an eval set to eval specs.

The layout is openai/evals': each root holds `eval_sets/*.yaml` and `evals/*.yaml`,
each file a mapping of name -> spec, where a spec with `id:` is an alias of another name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Union

from oaievalset.errors import RegistryError, UnknownEvalError, UnknownEvalSetError
from oaievalset.yamlio import FolderCache, load_yaml

StrPath = Union[str, "os.PathLike[str]"]


def bundled_registry_path() -> Path:
    """The registry that ships with the package (inside the wheel, or at the top of a checkout)."""
    here = Path(__file__).resolve().parent
    installed = here / "registry"
    if installed.is_dir():
        return installed
    return here.parent.parent / "registry"


def default_registry_paths() -> list[Path]:
    """The original's default roots: the bundled registry, then ~/.evals."""
    return [bundled_registry_path(), Path.home() / ".evals"]


# NamedTuples rather than dataclasses: importing dataclasses (and inspect with it) would
# cost a noticeable part of oaievalset's start-up.


class Entry(NamedTuple):
    """One raw YAML entry, with where it came from."""

    name: str
    spec: dict[str, Any]
    file: Path
    root: Path

    @property
    def alias(self) -> str | None:
        target = self.spec.get("id")
        return None if target is None else str(target)


class EvalSpec(NamedTuple):
    """A resolved eval: its final key (after aliases), class path and arguments."""

    key: str
    cls: str
    args: dict[str, Any]
    registry_path: Path
    group: str
    file: Path
    metadata: dict[str, Any]  # the entry's other keys (description, metrics...)


class EvalSetSpec(NamedTuple):
    """A resolved eval set: its final key and the names or patterns it lists."""

    key: str
    evals: tuple[str, ...]
    file: Path


class ModelGradedSpec(NamedTuple):
    """A model-graded spec: the grader's prompt, its choices and how they score, and which
    sample keys the model answers (`input_outputs`: sample key -> name of the answer)."""

    key: str
    prompt: Any  # a template string, or chat messages whose contents are templates
    choice_strings: Any  # a list, a string of one-character choices, or from_n...
    input_outputs: dict[str, str]
    eval_type: str | None
    choice_scores: Any  # a mapping of choice -> score, "from_strings", or None
    output_template: str | None
    file: Path


class CompletionFnSpec(NamedTuple):
    """A completion function of the registry: a class and its arguments."""

    key: str
    cls: str
    args: dict[str, Any]
    file: Path


# What each kind of entry is called in messages.
_KINDS = {
    "evals": "eval",
    "eval_sets": "eval set",
    "modelgraded": "model-graded spec",
    "completion_fns": "completion function",
}


class SetResolution(NamedTuple):
    """What an eval set resolves to: evals in registry order, and entries that matched nothing."""

    eval_set: EvalSetSpec
    evals: tuple[EvalSpec, ...]
    unmatched: tuple[str, ...]


def pattern_to_regex(pattern: str) -> str:
    """A set entry as a regex: `*` is a wildcard, every other character is literal.

    The original escapes only `.` and lets `[ ? + ( |` act as regex; we do not.
    """
    return ".*".join(re.escape(part) for part in pattern.split("*"))


class Registry:
    """The eval sets and evals of several registry roots, loaded on first use."""

    def __init__(self, registry_paths: Sequence[StrPath] | None = None) -> None:
        paths = default_registry_paths() if registry_paths is None else registry_paths
        self._registry_paths: list[Path] = [Path(p) for p in paths]
        self._cache: dict[str, dict[str, Entry]] = {}

    def add_registry_paths(self, paths: Iterable[StrPath]) -> None:
        self._registry_paths.extend(Path(p) for p in paths)
        self._cache.clear()

    @property
    def roots(self) -> list[Path]:
        """The roots in load order, each once (the same folder given twice is loaded once)."""
        seen: set[str] = set()
        roots: list[Path] = []
        for path in self._registry_paths:
            key = os.path.realpath(os.path.expanduser(path))
            if key not in seen:
                seen.add(key)
                roots.append(path)
        return roots

    # -- loading -------------------------------------------------------------------------

    def _entries(self, kind: str) -> dict[str, Entry]:
        if kind not in self._cache:
            self._cache[kind] = self._load(kind)
        return self._cache[kind]

    def _load(self, kind: str) -> dict[str, Entry]:
        bundled = os.path.realpath(bundled_registry_path())
        per_root = [
            (os.path.realpath(root) == bundled, list(_read_root(root, kind))) for root in self.roots
        ]

        # A name defined twice outside the bundled registry is an error, as in the original.
        others: dict[str, Entry] = {}
        for is_bundled, entries in per_root:
            if is_bundled:
                continue
            for entry in entries:
                first = others.get(entry.name)
                if first is not None:
                    raise RegistryError(
                        f"{_KINDS[kind]} '{entry.name}' is defined twice: "
                        f"in {first.file} and in {entry.file}; rename or remove one"
                    )
                others[entry.name] = entry

        # The bundled registry is only a fallback: a name that another root defines takes
        # that root's definition, in that root's place (so an openai/evals registry loads
        # beside ours).
        merged: dict[str, Entry] = {}
        for is_bundled, entries in per_root:
            for entry in entries:
                if is_bundled and entry.name in others:
                    continue
                if is_bundled and entry.name in merged:
                    raise RegistryError(
                        f"{_KINDS[kind]} '{entry.name}' is defined twice: "
                        f"in {merged[entry.name].file} and in {entry.file}; rename or remove one"
                    )
                merged[entry.name] = entry
        return merged

    # -- aliases -------------------------------------------------------------------------

    def _follow(self, name: str, kind: str, what: str) -> Entry:
        entries = self._entries(kind)
        entry = entries[name]
        seen = [name]
        while entry.alias is not None:
            target = entry.alias
            if target in seen:
                chain = " -> ".join([*seen, target])
                raise RegistryError(
                    f"{entry.file}: {what} '{entry.name}' is part of an alias cycle ({chain}); "
                    f"point one of them at a real {what}"
                )
            if target not in entries:
                raise RegistryError(
                    f"{entry.file}: {what} '{entry.name}' is an alias of '{target}', "
                    f"which no registry root defines; fix the 'id'"
                )
            seen.append(target)
            entry = entries[target]
        return entry

    # -- eval sets -----------------------------------------------------------------------

    def eval_set_names(self) -> list[str]:
        return list(self._entries("eval_sets"))

    def eval_set_entries(self) -> list[Entry]:
        """Every eval set entry of every root, in registry order, aliases unresolved."""
        return list(self._entries("eval_sets").values())

    def get_eval_set(self, name: str) -> EvalSetSpec | None:
        """The set called `name` after aliases, or None if no root defines it."""
        if name not in self._entries("eval_sets"):
            return None
        entry = self._follow(name, "eval_sets", "eval set")
        evals = entry.spec.get("evals")
        if evals is None:
            raise RegistryError(
                f"{entry.file}: eval set '{entry.name}' has no 'evals' list; "
                f"add `evals: [...]` or `id: other-set`"
            )
        if not isinstance(evals, list) or not all(isinstance(e, str) for e in evals):
            raise RegistryError(
                f"{entry.file}: eval set '{entry.name}': 'evals' must be a list of names"
            )
        return EvalSetSpec(key=entry.name, evals=tuple(evals), file=entry.file)

    def require_eval_set(self, name: str) -> EvalSetSpec:
        """As get_eval_set, but an unknown name is an error that offers the closest names."""
        spec = self.get_eval_set(name)
        if spec is None:
            raise UnknownEvalSetError(
                f"unknown eval set '{name}'{_closest(name, self.eval_set_names())}; "
                f"'oaievalset --list' shows the sets"
            )
        return spec

    # -- evals ---------------------------------------------------------------------------

    def eval_names(self) -> list[str]:
        return list(self._entries("evals"))

    def get_eval(self, name: str) -> EvalSpec | None:
        """The eval called `name` after aliases, or None if no root defines it."""
        if name not in self._entries("evals"):
            return None
        return self._eval_spec(self._follow(name, "evals", "eval"))

    def _eval_spec(self, entry: Entry) -> EvalSpec:
        cls = entry.spec.get("class")
        if not isinstance(cls, str) or not cls:
            raise RegistryError(
                f"{entry.file}: eval '{entry.name}' has no 'class'; "
                f"add `class: module:Class` or make it an alias with `id: other-eval`"
            )
        args = entry.spec.get("args") or {}
        if not isinstance(args, dict):
            raise RegistryError(f"{entry.file}: eval '{entry.name}': 'args' must be a mapping")
        metadata = {k: v for k, v in entry.spec.items() if k not in ("class", "args")}
        return EvalSpec(
            key=entry.name,
            cls=cls,
            args=dict(args),
            registry_path=entry.root,
            group=entry.file.name.split(".")[0],
            file=entry.file,
            metadata=metadata,
        )

    def closest_eval_names(self, name: str, most: int = 3) -> list[str]:
        """The eval names nearest to a name or pattern (`*` left out), for a message."""
        import difflib  # only for a message

        return difflib.get_close_matches(name.replace("*", ""), self.eval_names(), n=most)

    def require_eval(self, name: str) -> EvalSpec:
        spec = self.get_eval(name)
        if spec is None:
            raise UnknownEvalError(
                f"unknown eval '{name}'{_closest(name, self.eval_names())}; "
                f"check the name or pass --registry_path"
            )
        return spec

    def get_evals(self, patterns: Sequence[str]) -> Iterator[EvalSpec]:
        """Every eval whose name matches a pattern, in registry order (as the original)."""
        for name in self._matching(patterns, set()):
            yield self._eval_spec(self._follow(name, "evals", "eval"))

    def _matching(self, patterns: Sequence[str], matched: set[str]) -> Iterator[str]:
        """The eval names that match a pattern, in registry order; the patterns that match
        something are added to `matched`."""
        exact = {p for p in patterns if "*" not in p}
        unseen = {p: re.compile(pattern_to_regex(p)) for p in patterns if "*" in p}
        regex = (
            re.compile("|".join(f"(?:{rx.pattern})" for rx in unseen.values())) if unseen else None
        )
        for name in self._entries("evals"):
            hit = name in exact
            if hit:
                matched.add(name)
            if regex is not None and regex.fullmatch(name):
                hit = True
                for pattern, rx in list(unseen.items()):  # each pattern is looked for once
                    if rx.fullmatch(name):
                        matched.add(pattern)
                        del unseen[pattern]
            if hit:
                yield name

    # -- model-graded specs and completion functions --------------------------------------

    def require_modelgraded_spec(self, name: str) -> ModelGradedSpec:
        """The model-graded spec called `name` (after aliases); an unknown name, or one that
        lacks what a spec needs, is an error naming the file and entry."""
        entries = self._entries("modelgraded")
        if name not in entries:
            raise RegistryError(
                f"unknown model-graded spec '{name}'{_closest(name, entries)}; specs live in "
                f"a registry root's modelgraded/*.yaml"
            )
        entry = self._follow(name, "modelgraded", "model-graded spec")
        spec = entry.spec
        missing = [k for k in ("prompt", "choice_strings", "input_outputs") if k not in spec]
        if missing:
            raise RegistryError(
                f"{entry.file}: model-graded spec '{entry.name}' has no "
                f"{', '.join(repr(m) for m in missing)}"
            )
        prompt, outputs = spec["prompt"], spec["input_outputs"]
        chat = isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt)
        if not isinstance(prompt, str) and not chat:
            raise RegistryError(
                f"{entry.file}: model-graded spec '{entry.name}': 'prompt' must be text or "
                f"a list of chat messages"
            )
        if not isinstance(outputs, dict):
            raise RegistryError(
                f"{entry.file}: model-graded spec '{entry.name}': 'input_outputs' must map "
                f"sample keys to answer names"
            )
        scores = spec.get("choice_scores")
        if isinstance(scores, dict):
            try:
                scores = {str(k): float(v) for k, v in scores.items()}
            except (TypeError, ValueError):
                raise RegistryError(
                    f"{entry.file}: model-graded spec '{entry.name}': 'choice_scores' must "
                    f"map choices to numbers"
                ) from None
        return ModelGradedSpec(
            key=entry.name,
            prompt=prompt,
            choice_strings=spec["choice_strings"],
            input_outputs={str(k): str(v) for k, v in outputs.items()},
            eval_type=spec.get("eval_type"),
            choice_scores=scores,
            output_template=spec.get("output_template"),
            file=entry.file,
        )

    def get_completion_fn(self, name: str) -> CompletionFnSpec | None:
        """The registry's completion function called `name` (after aliases), or None."""
        if name not in self._entries("completion_fns"):
            return None
        entry = self._follow(name, "completion_fns", "completion function")
        cls = entry.spec.get("class")
        args = entry.spec.get("args") or {}
        if not isinstance(cls, str) or not isinstance(args, dict):
            raise RegistryError(
                f"{entry.file}: completion function '{entry.name}' needs a 'class' and "
                f"'args' as a mapping"
            )
        return CompletionFnSpec(key=entry.name, cls=cls, args=dict(args), file=entry.file)

    def resolve(self, set_name: str) -> SetResolution:
        """The evals of a set, in registry order, with the entries that matched nothing."""
        eval_set = self.require_eval_set(set_name)
        matched: set[str] = set()
        evals: dict[str, EvalSpec] = {}
        for name in self._matching(eval_set.evals, matched):
            entry = self._follow(name, "evals", "eval")
            # An alias and its target both match `zz-*`: keep the first, as the original's
            # de-duplication of identical commands does.
            if entry.name not in evals:
                evals[entry.name] = self._eval_spec(entry)
        unmatched = tuple(p for p in eval_set.evals if p not in matched)
        return SetResolution(eval_set=eval_set, evals=tuple(evals.values()), unmatched=unmatched)


def _closest(name: str, candidates: Iterable[str]) -> str:
    import difflib  # only for an error message

    close = difflib.get_close_matches(name, list(candidates), n=5)
    return f"; closest: {', '.join(close)}" if close else "; no similar name"


def _read_root(root: Path, kind: str) -> Iterator[Entry]:
    """Every entry of one kind in one root, files sorted by name for a stable order."""
    where = root / kind
    cache: FolderCache | None = None
    if where.is_dir():
        # Every file matching *.yaml, hidden ones included, as the original's Path.glob;
        # is_file() comes from the listing, not from a stat per file.
        with os.scandir(where) as listing:
            names = sorted(e.name for e in listing if e.name.endswith(".yaml") and e.is_file())
        files = [where / name for name in names]
        cache = FolderCache(where)
    elif where.is_file():
        files = [where]
    else:
        return
    complete = False
    try:
        for file in files:
            yield from _entries_of(file, root, cache.load(file) if cache else load_yaml(file))
        complete = True
    finally:
        if cache is not None:
            cache.save(complete)


def _entries_of(file: Path, root: Path, data: Any) -> Iterator[Entry]:
    """The entries of one parsed file; an empty file has none."""
    if data is None:
        return
    if not isinstance(data, dict):
        raise RegistryError(
            f"{file}: expected a mapping of names to specs, found {type(data).__name__}"
        )
    for name, spec in data.items():
        if not isinstance(spec, dict):
            hint = f"; write an alias as '{name}: {{id: {spec}}}'" if isinstance(spec, str) else ""
            raise RegistryError(
                f"{file}: entry '{name}' must be a mapping, found {type(spec).__name__}{hint}"
            )
        yield Entry(name=str(name), spec=spec, file=file, root=root)
