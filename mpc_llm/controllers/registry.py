"""Controllers by name: what config files and the command line build, and with which presets.

A spec is a mapping ``{"name": ..., **settings}`` (``"aisp"`` when the name is left out). The
registry maps each name to its class; the class carries its config (``config_class``), its
project preset (``preset``, the settings a spec built here starts from) and, for a wrapper, the
kind of controller its ``inner`` spec must build (``wraps``). Nothing outside this module knows
any controller by name: the default controller (`DEFAULT_NAME`), the baseline every summary
compares against (`BASELINE`) and what ``mpc-llm compare`` runs when told nothing
(`COMPARE_DEFAULT`) are declared here, once.

A new controller registers in one place and then runs from Python, a config file and the command
line alike. A controller defined outside the package is named in a config file (or on the command
line) by where it lives, ``"package.module:ClassName"``: the module is imported (a config file is
code, as a ``callable`` reward's ``fn`` is) and the class registered under that name.

    >>> from mpc_llm.controllers import BestOfN, register
    >>> class MyBestOfN(BestOfN):
    ...     pass
    >>> _ = register("my_best_of_n", MyBestOfN)
    >>> build({"name": "my_best_of_n", "num_samples": 4}).config.num_samples
    4
    >>> unregister("my_best_of_n")
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from mpc_llm.controllers.aisp import AISP
from mpc_llm.controllers.aisp_sampler import AISPSampler
from mpc_llm.controllers.args import ARGS
from mpc_llm.controllers.best_of_n import BestOfN
from mpc_llm.controllers.blockwise import BlockwiseBestOfN
from mpc_llm.controllers.cem import CEM
from mpc_llm.controllers.planner import Planner
from mpc_llm.controllers.qalign import QAlign
from mpc_llm.controllers.random_shooting import RandomShooting
from mpc_llm.controllers.re_control import REControl
from mpc_llm.controllers.receding_horizon import RecedingHorizon
from mpc_llm.controllers.smc import SMC
from mpc_llm.controllers.soft_best_of_n import SoftBestOfN
from mpc_llm.controllers.speculative_rejection import SpeculativeRejection
from mpc_llm.controllers.state import override
from mpc_llm.controllers.twisted_smc import TwistedSMC
from mpc_llm.controllers.value_blockwise import ValueBlockwise

#: The controller a spec without a ``name`` builds.
DEFAULT_NAME = "aisp"
#: The controller summaries pair the others against (win rates, reward differences) and ``mpc-llm
#: align`` runs beside the steered one at the same budget; a comparison may name another.
BASELINE = "best_of_n"
#: What ``mpc-llm compare`` runs when no controllers are named.
COMPARE_DEFAULT = (DEFAULT_NAME, BASELINE)

#: Controllers by name, as the CLI and config files spell them.
CONTROLLERS: dict[str, type[Planner]] = {}


def register(name: str, cls: type[Planner], *, replace: bool = False) -> type[Planner]:
    """Make ``cls`` buildable as ``{"name": name, ...}`` (config files, ``--controllers name``).

    Registering a class again under its name, or a new definition of it (same module and
    qualified name: a re-run notebook cell, a reloaded module), replaces the entry.

    Raises:
        ValueError: ``name`` is taken by another class (pass ``replace=True`` to replace it) or
            ``cls`` is not a `Planner` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, Planner)):
        raise ValueError(f"register({name!r}, ...) needs a Planner subclass (a Controller or a "
                         f"SequentialController), got {cls!r}")  # fmt: skip
    old = CONTROLLERS.get(name)
    same = old is not None and (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__)
    if old is not None and not (same or replace):
        raise ValueError(f"a controller is already registered as {name!r}; pass replace=True to replace it")
    CONTROLLERS[name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget the controller registered as ``name`` (tests, notebooks)."""
    CONTROLLERS.pop(name, None)


def _lookup(name: object) -> type[Planner] | None:
    """The class registered as ``name``; for ``"package.module:ClassName"``, that class, imported
    and registered under the name on first use. None: unknown (or not importable)."""
    if not isinstance(name, str):
        return None
    if name in CONTROLLERS or ":" not in name:
        return CONTROLLERS.get(name)
    try:
        found = _import_class(name)
    except ValueError:
        return None
    return register(name, found)


def _import_class(path: str) -> type[Planner]:
    """``"package.module:ClassName"`` -> the class (a `Planner` subclass)."""
    module, _, attr = path.partition(":")
    try:
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import the controller {path!r}: {err}") from err
    if not (isinstance(obj, type) and issubclass(obj, Planner)):
        raise ValueError(f"{path!r} is not a controller class (a Planner subclass), got {obj!r}")
    return obj


def controller_class(name: object) -> type[Planner]:
    """The class registered as ``name`` (or named by ``"package.module:ClassName"``).

    Raises:
        ValueError: an unknown name (the message lists the registered ones), or a
            ``"module:Class"`` that cannot be imported or is not a controller class.
    """
    if isinstance(name, str) and ":" in name and name not in CONTROLLERS:
        return register(name, _import_class(name))
    if not isinstance(name, str) or name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; valid names: {', '.join(sorted(CONTROLLERS))}")
    return CONTROLLERS[name]


def settings_of(name: str) -> set[str]:
    """The settings (names and aliases) controller ``name`` accepts (``inner`` for a wrapper);
    empty for an unknown name."""
    cls = _lookup(name)
    if cls is None:
        return set()
    return cls.config_class.field_names() | ({"inner"} if cls.wraps is not None else set())


def names() -> list[str]:
    """The registered names, sorted (what ``--controller`` / ``--controllers`` accept)."""
    return sorted(CONTROLLERS)


def accepted_settings(spec: Mapping[str, Any] | str) -> set[str]:
    """The settings a spec's controller takes, with those of a wrapper's inner controller (the
    settings `with_settings` can place somewhere)."""
    out = _as_spec(spec)
    name = out.get("name", DEFAULT_NAME)
    inner = out.get("inner")
    if inner is None or _lookup(name) is None:
        return settings_of(name) if isinstance(name, str) else set()
    inner_name = inner if isinstance(inner, str) else dict(inner).get("name", DEFAULT_NAME)
    return settings_of(name) | settings_of(inner_name)


def is_baseline(planner: Planner) -> bool:
    """Whether ``planner`` is the baseline (`BASELINE`): its answer is the bar the others are
    measured against, so ``align`` need not run it twice."""
    return isinstance(planner, CONTROLLERS[BASELINE])


def baseline(num_samples: int) -> Planner:
    """The baseline (`BASELINE`) drawing ``num_samples`` per round, with its own defaults."""
    return build({"name": BASELINE, "num_samples": num_samples})


def with_settings(
    spec: Mapping[str, Any] | str,
    shared: Mapping[str, Any],
    given: Mapping[str, Any] | None = None,
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """``spec`` with settings from outside it (the command line's flags) put where they belong.

    ``shared`` settings (``--sigma``, ``-n``, ...; None values ignored) go only to a controller that
    has them; ``given`` ones (``--set key=value``) too, unless ``strict``, when a setting nothing
    has stays on the controller for its validation to name. A wrapper (one that declares ``wraps``)
    passes each setting it does not have itself to its inner controller. A setting given replaces
    its alternative (`override`: ``sigma`` drops ``sigma_relative``).

    Example:
        >>> with_settings({"name": "receding_horizon", "inner": "cem"}, {"sigma": 0.5, "tau": 4})
        {'name': 'receding_horizon', 'inner': {'name': 'cem', 'sigma': 0.5, 'tau': 4}}
    """
    given = dict(given or {})
    out = _as_spec(spec)
    name = out.get("name", DEFAULT_NAME)
    cls = _lookup(name)
    wraps = cls is not None and cls.wraps is not None
    own_fields = settings_of(name) if isinstance(name, str) else set()

    def pick(fields: set[str], keep_unknown: bool) -> dict[str, Any]:
        picked = {k: v for k, v in shared.items() if v is not None and k in fields}
        picked.update({k: v for k, v in given.items() if keep_unknown or k in fields})
        return picked

    own = pick(own_fields, strict and not wraps)
    if wraps:
        inner = out.get("inner", {"name": DEFAULT_NAME})
        inner = dict(inner) if isinstance(inner, Mapping) else {"name": inner}
        inner_name = inner.get("name", DEFAULT_NAME)
        inner_cls = _lookup(inner_name)
        fields = settings_of(inner_name) if isinstance(inner_name, str) else set()
        to_inner = {k: v for k, v in pick(fields, strict).items() if k not in own_fields}
        inner_config = None if inner_cls is None else inner_cls.config_class
        out = {**out, "inner": override(inner, to_inner, inner_config)}
        own = {k: v for k, v in own.items() if k in own_fields}
    return override(out, own, None if cls is None else cls.config_class)


def _as_spec(spec: Mapping[str, Any] | str) -> dict[str, Any]:
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def with_preset(spec: Mapping[str, Any] | str) -> dict[str, Any]:
    """``spec`` over the preset of its controller (a setting given in the spec replaces the preset's
    alternative to it: ``sigma`` drops a preset ``sigma_relative``); a wrapper's ``inner`` spec
    gets its own preset. Unknown names pass unchanged (`build` refuses them).

    Example:
        >>> with_preset({"name": "cem", "sigma": 0.5})["sigma"], "sigma_relative" in with_preset("cem")
        (0.5, True)
    """
    out = _as_spec(spec)
    name = out.setdefault("name", DEFAULT_NAME)
    cls = _lookup(name)
    if cls is None:
        return out
    out = {
        "name": name,
        **override(cls.preset, {k: v for k, v in out.items() if k != "name"}, cls.config_class),
    }
    if cls.wraps is not None:
        inner = out.get("inner", DEFAULT_NAME)
        out["inner"] = with_preset(inner if isinstance(inner, Mapping | str) else {"name": inner})
    return out


def build(spec: Mapping[str, Any] | str) -> Planner:
    """A controller from ``{"name": ..., **settings}`` (a wrapper's ``inner`` is a spec too);
    settings not given take the config's own defaults (`with_preset` adds the project's presets).

    Raises:
        ValueError: an unknown name, a bad setting (pydantic's message), or an ``inner`` of the wrong
            kind.
    """
    options = _as_spec(spec)
    name = options.pop("name", DEFAULT_NAME)
    cls = controller_class(name)
    if cls.wraps is None:
        return cls(options)
    inner = _build_inner(options.pop("inner", DEFAULT_NAME))
    if not isinstance(inner, cls.wraps):
        kinds = sorted(n for n, c in CONTROLLERS.items() if issubclass(c, cls.wraps))
        raise ValueError(
            f"the inner controller of {name} must be a {cls.wraps.__name__} ({', '.join(kinds)}), "
            f"got {type(inner).__name__}"
        )
    return cls(inner, options)  # type: ignore[call-arg]


def _build_inner(spec: Any) -> Planner:
    """`build` for a wrapper's ``inner`` spec, its errors' field paths starting with ``inner``."""
    from pydantic import ValidationError

    try:
        return build(spec)
    except ValidationError as err:
        details = [{**e, "loc": ("inner", *e["loc"])} for e in err.errors()]
        raise ValidationError.from_exception_data(err.title, details) from None  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"inner: {err}") from None


for _name, _cls in {
    "aisp": AISP,
    "cem": CEM,
    "random_shooting": RandomShooting,
    "best_of_n": BestOfN,
    "receding_horizon": RecedingHorizon,
    "blockwise_best_of_n": BlockwiseBestOfN,
    "speculative_rejection": SpeculativeRejection,
    "args": ARGS,
    "soft_best_of_n": SoftBestOfN,
    "aisp_sample": AISPSampler,
    "smc": SMC,
    "twisted_smc": TwistedSMC,
    "qalign": QAlign,
    "re_control": REControl,
    "value_blockwise": ValueBlockwise,
}.items():
    register(_name, _cls)
