"""A run's settings: one frozen :class:`RunSettings`, built once, written to ``run.json``.

The command line and the API build it once (:meth:`RunSettings.create`, which checks every
setting before anything is written); ``extract`` adds the fingerprints of the run's data,
label map, checkpoint and weights (:func:`dataclasses.replace`) and writes it
(:meth:`RunSettings.to_json`); every later stage reads it back (:meth:`RunSettings.from_json`).

``run.json`` layouts written so far are read and upgraded:

- schema 2 and older named the step count ``steps``, and lack the keys of
  :data:`NEW_IN_3` (not compared when absent);
- runs from before attention heads hold FFN neurons (no ``units``);
- runs from before per-method options hold neuron-path's ``refine`` and ``beam`` at the
  top level (no ``method_options``). Those two are still written there, beside
  ``method_options`` (which wins when both are read), so that older versions read and
  resume new run folders.

The run's identity (:data:`COMPATIBLE_KEYS`) is what must match for records to share a
folder; ``methods`` is not part of it (a folder collects methods).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from captum_paths.records import SCHEMA_VERSION

__all__ = ["RunSettings", "COMPATIBLE_KEYS", "NEW_IN_3", "LEGACY_OPTIONS", "LOAD_KEYS", "legacy_options",
           "merge_method_options", "check_target"]

PathLike = Union[str, os.PathLike]

#: Settings that must match for records to share a run folder: the run's identity.
COMPATIBLE_KEYS = ("model", "checkpoint", "pretrained", "num_classes", "mode", "n_steps", "approximation", "k",
                   "target", "method_options", "data", "data_fingerprint", "label_map_sha256", "checkpoint_sha256",
                   "random_weights", "weights_sha256", "model_args", "dtype", "units", "ablation",
                   "ablation_images", "ablation_seed")
#: Identity keys that run folders of schema 2 and older do not have (compared only when present).
NEW_IN_3 = ("data", "data_fingerprint", "label_map_sha256", "checkpoint_sha256", "random_weights",
            "weights_sha256", "model_args", "dtype")
#: Top-level ``run.json`` keys that held a method's option before ``method_options``: key -> method.
LEGACY_OPTIONS = {"refine": "neuron-path", "beam": "neuron-path"}
#: Settings the run's model and images are loaded from.
LOAD_KEYS = ("model", "checkpoint", "pretrained", "num_classes", "data", "label_map", "random_weights",
             "model_args")
#: Options of the model's constructor that are settings of their own.
_OWN_SETTINGS = ("pretrained", "checkpoint", "num_classes", "device", "random_weights", "classnames")


@dataclass(frozen=True)
class RunSettings:
    """The settings of a run folder (``run.json``): what was searched, on which model and images.

    Build it with :meth:`create` (checked) or read it with :meth:`from_json`; it never changes
    (:func:`dataclasses.replace` makes another). File and folder paths are absolute.

    Attributes:
        model: the model spec (``demo``, ``timm:NAME`` ...); ``checkpoint``, ``pretrained``,
            ``num_classes``, ``random_weights`` and ``model_args`` load it.
        data: the image folder; ``label_map`` maps its class folders to indices.
        methods: the path methods the folder holds records of.
        k, n_steps, approximation, mode, target, dtype, units: the search settings.
        ablation: what a removed unit becomes: ``"zero"``, or ``"mean"``, its mean activation over
            ``ablation_images`` reference images drawn from the run's data with ``ablation_seed``
            (:meth:`captum_paths.pipeline.run.RunFolder.layer_baselines`); both ``None`` for zero.
        method_options: per method, the options given to it (``{"neuron-path": {"refine": 8}}``);
            options not given are left out (each method's default).
        data_fingerprint, label_map_sha256, checkpoint_sha256, weights_sha256: what ``extract``
            found (``None`` before, or when there is no such file).
        schema: the ``run.json`` layout.
        absent: identity keys the ``run.json`` read did not have (an older layout; not compared).
        extra: other keys of the ``run.json`` read, kept as they were.
    """

    model: str
    data: Optional[str] = None
    methods: Tuple[str, ...] = ("neuron-path",)
    checkpoint: Optional[str] = None
    pretrained: bool = False
    num_classes: Optional[int] = None
    label_map: Union[None, str, Mapping[str, int]] = None
    random_weights: Optional[int] = None
    model_args: Mapping[str, Any] = field(default_factory=dict)
    k: int = 1
    n_steps: Optional[int] = None
    approximation: Optional[str] = None
    mode: str = "gate"
    target: str = "label"
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dtype: str = "fp32"
    units: str = "neurons"
    ablation: str = "zero"
    ablation_images: Optional[int] = None
    ablation_seed: Optional[int] = None
    data_fingerprint: Optional[str] = None
    label_map_sha256: Optional[str] = None
    checkpoint_sha256: Optional[str] = None
    weights_sha256: Optional[str] = None
    schema: int = SCHEMA_VERSION
    absent: FrozenSet[str] = field(default=frozenset(), compare=False, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        # read-only containers: the object is shared by the stages of a run
        set_ = object.__setattr__
        set_(self, "methods", tuple(self.methods))
        for name in ("label_map", "model_args", "method_options", "extra"):
            set_(self, name, _freeze(getattr(self, name)))
        set_(self, "absent", frozenset(self.absent))

    # ------------------------------------------------------------------ building
    @classmethod
    def create(
        cls,
        *,
        model: str,
        data: Optional[PathLike],
        methods: Sequence[str] = ("neuron-path",),
        checkpoint: Optional[PathLike] = None,
        pretrained: bool = False,
        num_classes: Optional[int] = None,
        label_map: Optional[Union[PathLike, Mapping[str, int]]] = None,
        random_weights: Optional[int] = None,
        model_args: Optional[Mapping[str, Any]] = None,
        k: int = 1,
        n_steps: Optional[int] = None,
        approximation: Optional[str] = None,
        mode: str = "gate",
        target: str = "label",
        method_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
        dtype: str = "fp32",
        units: str = "neurons",
        ablation: str = "zero",
        ablation_images: Optional[int] = None,
        ablation_seed: Optional[int] = None,
    ) -> "RunSettings":
        """The settings of a new run, every one checked (before anything is written); see
        :meth:`captum_paths.pipeline.Run.extract` for what each means.

        Raises:
            ValueError: a setting a method, the model spec or the run cannot take (the
                message names it).
            TypeError: ``model_args`` or ``method_options`` that are not dicts, or an option
                a method does not declare (:class:`~captum_paths.search.base.UnknownMethodOption`).
        """
        methods = list(dict.fromkeys(methods))
        if not methods:
            raise ValueError("give at least one path method")
        check_target(target)
        _check_search(dtype, units, mode)
        options = _check_method_options(method_options, methods, k=k, n_steps=n_steps, approximation=approximation,
                                        mode=mode)
        _check_model(model, pretrained, checkpoint, random_weights, model_args)
        ablation_images, ablation_seed = _check_ablation(ablation, ablation_images, ablation_seed, mode)
        return cls(
            model=model, data=_absolute(data), methods=tuple(methods), checkpoint=_absolute(checkpoint),
            pretrained=bool(pretrained), num_classes=num_classes,
            label_map=dict(label_map) if isinstance(label_map, Mapping) else _absolute(label_map),
            random_weights=random_weights,
            model_args=json.loads(json.dumps(dict(model_args or {}))),  # as run.json will read back (lists)
            k=k, n_steps=n_steps, approximation=approximation, mode=mode, target=target, method_options=options,
            dtype=dtype, units=units, ablation=ablation, ablation_images=ablation_images, ablation_seed=ablation_seed,
        )

    # ------------------------------------------------------------------ run.json
    def to_json(self) -> Dict[str, Any]:
        """The ``run.json`` object (neuron-path's options also at the top level, as older layouts
        held them)."""
        options = _thaw(self.method_options)
        legacy = {key: options.get(method, {}).get(key) for key, method in LEGACY_OPTIONS.items()}
        settings = {
            "schema": self.schema, "model": self.model, "checkpoint": self.checkpoint, "pretrained": self.pretrained,
            "num_classes": self.num_classes, "mode": self.mode, "n_steps": self.n_steps,
            "approximation": self.approximation, "k": self.k, "target": self.target, "methods": list(self.methods),
            "data": self.data, "label_map": _thaw(self.label_map), **legacy, "method_options": options,
            "random_weights": self.random_weights, "model_args": _thaw(self.model_args), "dtype": self.dtype,
            "units": self.units, "ablation": self.ablation, "ablation_images": self.ablation_images,
            "ablation_seed": self.ablation_seed, "data_fingerprint": self.data_fingerprint, "label_map_sha256": self.label_map_sha256,
            "checkpoint_sha256": self.checkpoint_sha256, "weights_sha256": self.weights_sha256,
        }
        return {**settings, **{key: value for key, value in _thaw(self.extra).items() if key not in settings}}

    @classmethod
    def from_json(cls, settings: Mapping[str, Any]) -> "RunSettings":
        """The settings of a ``run.json`` object of any layout written so far, in the current one.

        Raises:
            ValueError: ``methods``, ``method_options`` or ``model_args`` of the wrong type (an
                edited file).
        """
        raw = dict(settings)
        schema = raw.get("schema", 1)
        if schema < 3 and "steps" in raw:  # schema 2 and older named the step count "steps"
            raw.setdefault("n_steps", raw.pop("steps"))
        raw["schema"] = max(schema, SCHEMA_VERSION)
        raw.setdefault("units", "neurons")  # runs before attention heads held FFN neurons
        raw.setdefault("ablation", "zero")  # runs before neuron baselines removed units by zeroing them
        legacy = {key: raw.pop(key, None) for key in LEGACY_OPTIONS}
        if "method_options" not in raw:  # runs before method_options: neuron-path's at the top level
            raw["method_options"] = {}
            for key, value in legacy.items():
                if value is not None:
                    raw["method_options"].setdefault(LEGACY_OPTIONS[key], {})[key] = value
        _check_read(raw)
        absent = frozenset(key for key in NEW_IN_3 if key not in raw)
        names = {f.name for f in dataclasses.fields(cls)} - {"absent", "extra"}
        values = {key: raw.pop(key) for key in list(raw) if key in names}
        values.setdefault("model", None)
        return cls(**values, absent=absent, extra=raw)

    # ------------------------------------------------------------------ identity
    def identity(self) -> Dict[str, Any]:
        """The run's identity as JSON values: the :data:`COMPATIBLE_KEYS` this ``run.json`` has,
        a method's option as ``METHOD.OPTION`` (in place of ``method_options``)."""
        settings = self.to_json()
        identity = {}
        for key in COMPATIBLE_KEYS:
            if key == "method_options":
                identity.update({f"{method}.{option}": value for method, options in settings[key].items()
                                 for option, value in options.items()})
            elif key not in self.absent:
                identity[key] = settings[key]
        return identity

    def differences(self, asked: "RunSettings") -> List[str]:
        """``"KEY: X there, Y here"`` for every identity key in which ``asked`` differs from these
        settings (a run folder's): another run. Keys this ``run.json`` lacks are not compared."""
        there, here = self.identity(), asked.identity()
        keys = list(there) + [key for key in here if key not in there and key.split(".")[0] not in self.absent]
        return [f"{key}: {_short(there.get(key))} there, {_short(here.get(key))} here"
                for key in keys if there.get(key) != here.get(key)]

    def load_settings(self) -> Dict[str, Any]:
        """What the model and the images are loaded from (:data:`LOAD_KEYS`)."""
        settings = self.to_json()
        return {key: settings[key] for key in LOAD_KEYS}

    def options_of(self, method: str) -> Dict[str, Any]:
        """The options given to ``method`` (``{}`` when none: its defaults)."""
        return dict(self.method_options.get(method, {}))


def legacy_options(**options: Any) -> Dict[str, Dict[str, Any]]:
    """``method_options`` of the options named as before ``method_options`` (``refine=``,
    ``beam=``: neuron-path's; :data:`LEGACY_OPTIONS`), ``None`` values left out."""
    unknown = sorted(set(options) - set(LEGACY_OPTIONS))
    if unknown:
        raise TypeError(f"unknown options {unknown}; give them in method_options={{METHOD: {{OPTION: VALUE}}}}")
    merged: Dict[str, Dict[str, Any]] = {}
    for key, value in options.items():
        if value is not None:
            merged.setdefault(LEGACY_OPTIONS[key], {})[key] = value
    return merged


def merge_method_options(*parts: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """One ``method_options`` of several; an option given in two of them is a ``ValueError``."""
    merged: Dict[str, Dict[str, Any]] = {}
    for part in parts:
        if not isinstance(part, Mapping):
            raise TypeError(f"method_options must be a dict of method -> {{option: value}}; got {part!r}")
        for method, options in part.items():
            if not isinstance(options, Mapping):
                raise TypeError(f"method_options[{method!r}] must be a dict of option -> value; got {options!r}")
            mine = merged.setdefault(method, {})
            for option, value in options.items():
                if option in mine:
                    raise ValueError(f"{method} option {option} is given twice ({mine[option]!r} and {value!r})")
                mine[option] = value
    return merged


def check_target(target: str) -> None:
    """``ValueError`` unless ``target`` is ``"label"`` or ``"pred"``."""
    if target not in ("label", "pred"):
        raise ValueError(f"target must be 'label' or 'pred'; got {target!r}")


#: reference images of a mean ablation when none are given
DEFAULT_ABLATION_IMAGES = 64


def _check_ablation(ablation: str, images: Optional[int], seed: Optional[int], mode: str
                    ) -> Tuple[Optional[int], Optional[int]]:
    """``(ablation_images, ablation_seed)`` resolved for ``ablation`` (defaults for ``"mean"``,
    ``None`` for ``"zero"``); ``ValueError`` for what the ablation cannot take."""
    from captum_paths.attribution.layer_baselines import ABLATIONS

    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}; got {ablation!r}")
    if ablation == "zero":
        given = [name for name, value in (("ablation_images", images), ("ablation_seed", seed)) if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to ablation='mean' (reference images); got ablation='zero'")
        return None, None
    if mode == "paper":
        raise ValueError("ablation='mean' needs mode='gate': the paper score scales activations towards 0")
    if images is None:
        images = DEFAULT_ABLATION_IMAGES
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"ablation_images must be a positive int; got {images!r}")
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"ablation_seed must be a non-negative int; got {seed!r}")
    return images, seed


def _check_search(dtype: str, units: str, mode: str) -> None:
    from captum_paths.model.sites import UNITS
    from captum_paths.pipeline.batches import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got {units!r}")
    if units != "neurons" and mode == "paper":
        raise ValueError(f"mode 'paper' (the released scripts' score) is defined on FFN neurons only; units "
                         f"{units!r} need mode 'gate'")


def _check_method_options(method_options: Optional[Mapping[str, Mapping[str, Any]]], methods: Sequence[str],
                          **search: Any) -> Dict[str, Dict[str, Any]]:
    """Every method's settings and options, checked by the method's class: ``{method: options
    given}`` (``None`` values and methods without options left out). Options may name a
    registered method the run does not search now (the folder's identity keeps them)."""
    from captum_paths.search.base import UnknownMethodOption
    from captum_paths.search.registry import get_path_method

    method_options = {} if method_options is None else method_options
    if not isinstance(method_options, Mapping):
        raise TypeError(f"method_options must be a dict of method -> {{option: value}}; got {method_options!r}")
    checked = {}
    for name in dict.fromkeys([*methods, *method_options]):
        options = method_options.get(name) or {}
        if not isinstance(options, Mapping) or not all(isinstance(option, str) for option in options):
            raise TypeError(f"method_options[{name!r}] must be a dict of option -> value; got {options!r}")
        if name in methods:
            get_path_method(name).check_arguments(k=search["k"], n_steps=search["n_steps"],
                                                  method=search["approximation"], mode=search["mode"], **options)
        else:
            try:
                cls = get_path_method(name)
            except (TypeError, ValueError) as exc:
                raise UnknownMethodOption(f"options of an unknown path method: {exc}", str(name)) from None
            cls.check_options(options, k=search["k"], mode=search["mode"])
        given = {option: value for option, value in options.items() if value is not None}
        if given:
            checked[name] = given
    return checked


def _check_model(model: str, pretrained: bool, checkpoint: Optional[PathLike], random_weights: Optional[int],
                 model_args: Optional[Mapping[str, Any]]) -> None:
    from captum_paths.model.loading import has_random_weights

    if random_weights is None and has_random_weights(model, pretrained, checkpoint):
        raise ValueError(
            f"model {model!r} without --pretrained or --checkpoint has random weights, a different network on every "
            "load; pass --pretrained, --checkpoint FILE, or --random-weights SEED to study a seeded random network"
        )
    if model_args is not None and (not isinstance(model_args, Mapping)
                                   or not all(isinstance(key, str) for key in model_args)):
        raise TypeError(f"model_args must be a dict of keyword arguments; got {model_args!r}")
    taken = sorted(set(model_args or {}) & set(_OWN_SETTINGS))
    if taken:
        raise ValueError(f"model_args {taken} have options of their own: use --{taken[0].replace('_', '-')}")


def _check_read(raw: Mapping[str, Any]) -> None:
    """``ValueError`` for containers of the wrong type in a ``run.json`` (an edited file)."""
    from captum_paths.attribution.layer_baselines import ABLATIONS

    if raw.get("ablation") not in ABLATIONS:
        raise ValueError(f"'ablation' must be one of {ABLATIONS}; got {raw.get('ablation')!r}")
    methods = raw.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ValueError(f"'methods' must be a list of method names; got {methods!r}")
    options = raw["method_options"]
    if not isinstance(options, dict) or not all(isinstance(o, dict) for o in options.values()):
        raise ValueError(f"'method_options' must be an object of method -> {{option: value}}; got {options!r}")
    if not isinstance(raw.get("model_args") or {}, dict):
        raise ValueError(f"'model_args' must be an object; got {raw['model_args']!r}")


def _freeze(value: Any) -> Any:
    """``value`` with its dicts read-only and its lists tuples (deeply)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """``value`` as JSON holds it: dicts and lists (deeply)."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


def _short(value: Any) -> str:
    """``repr`` of a setting, hashes cut to 12 characters."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return repr(value[:12] + "...")
    return repr(value)


def _absolute(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else str(Path(path).expanduser().resolve())
