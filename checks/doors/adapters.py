"""Adapters: present layers written in other styles through the checker's layer protocol.

The checker talks to one protocol (``docs/ARCHITECTURE.md``)::

    forward(x) -> y         backward(dy) -> dx
    params: dict[str, ndarray]   (the arrays forward reads; perturbed in place)
    grads:  dict[str, ndarray]   (same keys, filled by the last backward)

Two adapters bring other styles to it:

* :func:`from_functions` -- cs231n-style function pairs
  ``forward(x, w, b, conf) -> (out, cache)`` / ``backward(dout, cache) -> (dx, dw, db)``.
* :class:`LayerAdapter` -- a class layer with other conventions: NHWC layout, parameters
  created on the first forward, gradient dicts with other names or shapes, gradients
  accumulated with ``+=``, caches that must be cleared before each call, a global-RNG
  dropout mask that must be the same in every call, parameters read from attributes
  (``set_params=``, so a float32 layer can be differenced in float64), gradients handed to
  an optimizer inside backward (``optimizers=``). Each difference is one keyword.

Plain functions with a vector-Jacobian product need no adapter: use
:func:`checks.check_vjp`.

Examples
--------
A numpy-ml-style layer: NHWC, kernel ``W`` of shape ``(kh, kw, c_in, c_out)`` created on
the first forward, gradients in ``layer.gradients`` accumulated with ``+=``, every input
appended to ``layer.X``:

>>> layer = LayerAdapter(                                              # doctest: +SKIP
...     NHWCConv2D(out_ch=4, kernel_shape=(3, 3), pad=1),
...     layout="NHWC",
...     example_input=x,                      # NCHW; builds the lazy parameters
...     params=lambda l: {"K": l.parameters["W"].transpose(3, 2, 0, 1),
...                       "b": l.parameters["b"].reshape(-1)},
...     grads=lambda l: {"K": l.gradients["W"].transpose(3, 2, 0, 1),
...                      "b": l.gradients["b"].reshape(-1)},
...     reset=lambda l: l.X.clear(),
...     accumulates=True,
... )
>>> check_layer(layer, x)                                               # doctest: +SKIP

A float32 layer keeping its weights in attributes, differenced in float64 (``set_params``
hands it the checker's float64 copies), and an ML-From-Scratch-style layer whose backward
passes its gradients to optimizers (``self.W = self.W_opt.update(self.W, grad_w)``):

>>> LayerAdapter(dense32, params=lambda l: {"W": l.W, "b": l.b},       # doctest: +SKIP
...              grads=lambda l: {"W": l.dW, "b": l.db},
...              set_params=lambda l, name, a: setattr(l, name, a))
>>> LayerAdapter(mlfs_dense, forward="forward_pass",                  # doctest: +SKIP
...              backward="backward_pass", params=lambda l: {"W": l.W, "w0": l.w0},
...              optimizers={"W": "W_opt", "w0": "w0_opt"})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["FunctionLayer", "LayerAdapter", "from_functions"]

ParamsHook = Callable[[Any], Mapping[str, np.ndarray]]
ParamsSetter = Callable[[Any, str, np.ndarray], None]


def _as_array_dict(value: Any, what: str) -> dict[str, np.ndarray]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping name -> ndarray, got {type(value).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, arr in value.items():
        if not isinstance(name, str):
            raise TypeError(f"{what} keys must be str, got {name!r}")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{what}[{name!r}] must be a numpy array, got {type(arr).__name__}")
        out[name] = arr
    return out


class FunctionLayer:
    """A forward/backward function pair presented as a layer (see :func:`from_functions`)."""

    def __init__(
        self,
        forward: Callable[..., tuple[Any, Any]],
        backward: Callable[[Any, Any], Any],
        params: Mapping[str, np.ndarray],
        conf: Any = None,
    ) -> None:
        if not callable(forward) or not callable(backward):
            raise TypeError(
                f"forward and backward must be callable, got {type(forward).__name__} and "
                f"{type(backward).__name__}"
            )
        self._forward = forward
        self._backward = backward
        self.params = _as_array_dict(params, "params")
        self.grads: dict[str, np.ndarray] = {}
        self.conf = conf
        self._cache: Any = None
        self._has_cache = False
        self.__name__ = getattr(forward, "__name__", "forward")

    def __repr__(self) -> str:
        return f"from_functions({self.__name__}, params={list(self.params)})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        # params are read at every call: the checker perturbs (or replaces) them between calls
        args = [x, *self.params.values()]
        if self.conf is not None:
            args.append(self.conf)
        result = self._forward(*args)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                f"{self.__name__} must return (out, cache), got "
                f"{type(result).__name__}"
                + (f" of length {len(result)}" if isinstance(result, tuple) else "")
            )
        out, self._cache = result
        self._has_cache = True
        return np.asarray(out)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if not self._has_cache:
            raise RuntimeError("backward called before forward: no cache to differentiate")
        result = self._backward(dy, self._cache)
        names = list(self.params)
        if isinstance(result, np.ndarray) and not names:
            self.grads = {}
            return result
        if not isinstance(result, (tuple, list)) or len(result) != 1 + len(names):
            got = len(result) if isinstance(result, (tuple, list)) else type(result).__name__
            raise ValueError(
                f"backward must return (dx, {', '.join('d' + n for n in names)}) -- "
                f"{1 + len(names)} arrays in the order of params {names} -- got {got}"
            )
        dx, *dparams = result
        self.grads = {n: np.asarray(g) for n, g in zip(names, dparams, strict=True)}
        return np.asarray(dx)


def from_functions(
    forward: Callable[..., tuple[Any, Any]],
    backward: Callable[[Any, Any], Any],
    params: Mapping[str, np.ndarray],
    *,
    conf: Any = None,
) -> FunctionLayer:
    """Wrap a cs231n-style function pair as a layer.

    Parameters
    ----------
    forward : callable
        ``forward(x, *params.values(), conf) -> (out, cache)``; ``conf`` is passed last and
        only when it is not None (so ``affine_forward(x, w, b)`` works as is).
    backward : callable
        ``backward(dout, cache) -> (dx, *dparams)`` with the gradients in the order of
        ``params``; a bare ``dx`` when there are no parameters (``relu_backward``).
    params : mapping str -> ndarray
        The parameter arrays in the order ``forward`` takes them, under the names the
        report will use (``{"w": w, "b": b}``). They are not copied: the checker perturbs
        them in place and restores them.
    conf : any, optional
        The configuration argument (``conv_param``, ``pool_param``, ``bn_param``, ...).

    Returns
    -------
    FunctionLayer
        ``params`` is the mapping given; ``grads`` maps the same names to the tuple that
        ``backward`` returned after ``dx``.

    Raises
    ------
    TypeError
        When ``forward`` does not return ``(out, cache)`` or a parameter is not an array.
    ValueError
        When ``backward`` returns a number of arrays other than ``1 + len(params)``.

    Examples
    --------
    >>> def affine_forward(x, w, b):
    ...     return x @ w + b, (x, w)
    >>> def affine_backward(dout, cache):
    ...     x, w = cache
    ...     return dout @ w.T, x.T @ dout, dout.sum(axis=0)
    >>> rng = np.random.default_rng(0)
    >>> layer = from_functions(affine_forward, affine_backward,
    ...                        {"w": rng.normal(size=(3, 2)), "b": np.zeros(2)})
    >>> layer.forward(np.ones((4, 3))).shape
    (4, 2)
    >>> sorted(layer.grads), layer.backward(np.ones((4, 2))).shape, sorted(layer.grads)
    ([], (4, 3), ['b', 'w'])
    """
    return FunctionLayer(forward, backward, params, conf)


_LAYOUTS = ("NCHW", "NHWC")


def _to_layer(a: np.ndarray, layout: str) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if layout == "NHWC" and a.ndim == 4 else a


def _from_layer(a: np.ndarray, layout: str) -> np.ndarray:
    return a.transpose(0, 3, 1, 2) if layout == "NHWC" and a.ndim == 4 else a


def _call(hook: Callable[..., Any] | str, layer: Any, *args: Any) -> Any:
    if isinstance(hook, str):
        return getattr(layer, hook)(*args)
    return hook(layer, *args)


class _WriteThroughParams(dict[str, np.ndarray]):
    """The adapter's ``params`` when ``set_params`` is given: binding an entry (the checker
    puts float64 copies in, and its arrays back) also hands the array to the layer."""

    def __init__(
        self,
        items: Mapping[str, np.ndarray],
        layer: Any,
        setter: ParamsSetter,
        hook: ParamsHook,
    ) -> None:
        super().__init__(items)
        self._layer = layer
        self._setter = setter
        self._hook = hook

    def __setitem__(self, name: str, arr: np.ndarray) -> None:
        if name in self and dict.__getitem__(self, name) is arr:
            return  # the layer already reads it (the checker re-binds after each evaluation)
        if name not in self:
            raise KeyError(f"set_params: {name!r} is not a parameter name ({sorted(self)})")
        self._setter(self._layer, name, arr)
        now = _as_array_dict(self._hook(self._layer), "params(layer)").get(name)
        if arr.size and (now is None or not np.shares_memory(now, arr)):
            raise ValueError(
                f"set_params(layer, {name!r}, array) did not make the layer read the array: "
                f"params(layer)[{name!r}] does not share memory with it afterwards (bind the "
                f"array, or a view of it in the layer's layout, where the params hook reads "
                f"{name!r})"
            )
        super().__setitem__(name, arr)


class _Recorder:
    """Stands in for a layer's optimizer during backward: ``update(w, grad)`` keeps ``grad``
    and returns ``w`` unchanged."""

    def __init__(self, name: str, attr: str, captured: dict[str, np.ndarray]) -> None:
        self._name = name
        self._attr = attr
        self._captured = captured

    def update(self, w: Any, grad: Any, *args: Any, **kwargs: Any) -> Any:
        if self._name in self._captured:
            raise RuntimeError(
                f"{self._attr}.update was called twice in one backward (the gradient of "
                f"{self._name!r} would be applied twice)"
            )
        self._captured[self._name] = np.array(grad, copy=True)  # the layer may reuse it
        return w


class LayerAdapter:
    """Present a class layer with other conventions through the checker's layer protocol.

    Parameters
    ----------
    layer : object
        The layer to wrap.
    layout : {"NCHW", "NHWC"}
        The layer's layout for 4-D inputs and outputs. The adapter always speaks NCHW to the
        checker (so ``--input-shape N,C,H,W``, heatmaps and hints read the same for every
        layer) and transposes on the way in and out. Other ranks pass through.
    params : callable, optional
        ``params(layer) -> {name: array}``: the layer's parameter arrays under the names the
        report should use. Return the layer's own arrays or *views* of them (``transpose``,
        ``reshape`` of a contiguous array), never copies: the checker perturbs them in
        place. Default: ``layer.params``.
    grads : callable, optional
        ``grads(layer) -> {name: array}`` with the same names, read after each backward
        (views or fresh arrays). Default: ``layer.grads``.
    forward, backward : str or callable, optional
        Method names, or ``forward(layer, x) -> y`` / ``backward(layer, dy) -> dx`` in the
        layer's layout, for layers whose methods have other names or extra arguments.
    example_input : ndarray, optional
        An NCHW input; ``forward`` is called on it once at construction so that lazily
        created parameters exist before the checker reads ``params``.
    reset : callable, optional
        ``reset(layer)``, called before every forward: clear caches that grow with every
        call (a list of every input seen), counters, running statistics.
    accumulates : bool
        The layer adds into its gradient arrays (``+=``): zero them before every backward,
        so ``grads`` holds the gradient of one call.
    seed : int, optional
        Seed the global numpy RNG (``np.random.seed``) before every forward and restore its
        previous state afterwards, so a layer that draws from ``np.random`` (dropout) draws
        the same mask in every call. For a layer with its own ``Generator``, use
        ``reset=lambda l: setattr(l, "rng", np.random.default_rng(0))`` instead.
    set_params : callable, optional
        ``set_params(layer, name, array)``: make the layer read ``array`` as parameter
        ``name`` from now on. ``array`` has the shape the ``params`` hook gives ``name`` (the
        checker's view); bind it, or a view of it in the layer's own layout, where the hook
        reads it: ``lambda l, n, a: setattr(l, n, a)`` for ``params=lambda l: {"W": l.W,
        ...}``; ``lambda l, n, a: l.parameters.__setitem__("W", a.transpose(2, 3, 1, 0))``
        for a hook that returned ``l.parameters["W"].transpose(3, 2, 0, 1)``. With it,
        ``adapter.params`` writes through: the checker's rebinding of an entry (a float64
        copy for a float32 layer, ``precision="auto"``; its own array back afterwards)
        reaches the layer, and after each call the hook must return an array sharing memory
        with ``array``. Without it, only a layer whose own ``params`` dict is the adapter's
        (no ``params`` hook) sees a rebinding, and a float32 layer is differenced in its
        own precision. The layer's original arrays are put back through it, so after a
        check it reads its original memory (a hook's view of it, where the hook transposes).
    optimizers : mapping str -> str, optional
        For layers that hand their gradients to an optimizer inside backward
        (ML-From-Scratch: ``self.W = self.W_opt.update(self.W, grad_w)``): parameter name ->
        name of the layer's attribute holding that parameter's optimizer (``{"W": "W_opt",
        "w0": "w0_opt"}``), one per parameter. During each backward those attributes hold a
        recorder whose ``update(w, grad)`` keeps a copy of ``grad`` and returns ``w``
        unchanged; the optimizers are put back afterwards, untouched. The weights stay as
        they were, and ``grads`` is what the recorders received (the gradient of one call;
        a parameter whose optimizer was not called is missing, which the check reports).
        ``grad`` must have the shape of ``params[name]``: a ``params`` hook may not
        transpose these parameters. Replaces ``grads`` and ``accumulates``.

    Raises
    ------
    ValueError
        On an unknown ``layout``; when a ``params`` hook returns copies (the check calls the
        hook twice and requires both results to share memory) or arrays that are not
        writeable; when ``params`` names differ from ``grads`` names after a backward; when
        ``set_params`` did not make the layer read the array it was given; when
        ``optimizers`` names differ from ``params`` names, a recorded gradient's shape
        differs from its parameter's, or an optimizer attribute has no ``update``.
    TypeError
        On ``optimizers`` together with ``grads`` or ``accumulates``; on a ``set_params``
        that is not callable.

    Notes
    -----
    The adapter reads ``params`` once, when built (after ``example_input``), and keeps the
    views; a layer that re-creates its parameter arrays on every forward cannot be checked
    in place and is reported by the copy test above.
    """

    def __init__(
        self,
        layer: Any,
        *,
        layout: str = "NCHW",
        params: ParamsHook | None = None,
        grads: ParamsHook | None = None,
        forward: str | Callable[[Any, np.ndarray], Any] = "forward",
        backward: str | Callable[[Any, np.ndarray], Any] = "backward",
        example_input: np.ndarray | None = None,
        reset: Callable[[Any], None] | None = None,
        accumulates: bool = False,
        seed: int | None = None,
        set_params: ParamsSetter | None = None,
        optimizers: Mapping[str, str] | None = None,
    ) -> None:
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        for name, hook in (("forward", forward), ("backward", backward)):
            if isinstance(hook, str):
                if not callable(getattr(layer, hook, None)):
                    raise TypeError(
                        f"{type(layer).__name__} has no method {hook!r}; pass {name}=callable"
                    )
            elif not callable(hook):
                raise TypeError(f"{name} must be a method name or a callable, got {hook!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if set_params is not None and not callable(set_params):
            raise TypeError(f"set_params must be callable, got {set_params!r}")
        if optimizers is not None:
            if grads is not None or accumulates:
                raise TypeError(
                    "optimizers= captures the gradients: give it without grads= or accumulates="
                )
            if not isinstance(optimizers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in optimizers.items()
            ):
                raise TypeError(
                    f"optimizers must map parameter names to attribute names, got {optimizers!r}"
                )
        self.layer = layer
        self.layout = layout
        self._params_hook: ParamsHook = params or (lambda l: l.params)
        self._grads_hook: ParamsHook = grads or (lambda l: l.grads)
        self._forward = forward
        self._backward = backward
        self._reset = reset
        self.accumulates = bool(accumulates)
        self.seed = seed
        self.optimizers = dict(optimizers) if optimizers is not None else None
        self.captured: dict[str, np.ndarray] = {}
        self.__name__ = type(layer).__name__
        if example_input is not None:
            self.forward(np.asarray(example_input))
        read = self._read_params()
        self.params: dict[str, np.ndarray]
        if set_params is not None:
            self.params = _WriteThroughParams(read, layer, set_params, self._params_hook)
        elif params is None and isinstance(getattr(layer, "params", None), dict):
            # the layer's own dict: an entry the checker rebinds is what the layer reads
            self.params = layer.params
        else:
            self.params = read
        if self.optimizers is not None:
            if set(self.optimizers) != set(self.params):
                raise ValueError(
                    f"optimizers names {sorted(self.optimizers)} differ from params names "
                    f"{sorted(self.params)}: give one optimizer attribute per parameter"
                )
            for attr in self.optimizers.values():
                if not callable(getattr(getattr(layer, attr, None), "update", None)):
                    raise ValueError(
                        f"{type(layer).__name__}.{attr} has no update method (optimizers= "
                        f"names the attributes holding each parameter's optimizer; if they are "
                        f"created lazily, pass example_input=)"
                    )

    def __repr__(self) -> str:
        return f"LayerAdapter({self.__name__}, layout={self.layout!r})"

    def _read_params(self) -> dict[str, np.ndarray]:
        first = _as_array_dict(self._params_hook(self.layer), "params(layer)")
        again = _as_array_dict(self._params_hook(self.layer), "params(layer)")
        for name, arr in first.items():
            if arr.size and not np.shares_memory(arr, again[name]):
                raise ValueError(
                    f"params hook returned a copy for {name!r} (two calls gave arrays that do "
                    f"not share memory): return the layer's array or a view of it "
                    f"(transpose, reshape) so in-place perturbations reach the layer; if the "
                    f"parameters are created lazily, pass example_input="
                )
            if not arr.flags.writeable:
                raise ValueError(f"parameter {name!r} is read-only; the checker perturbs it")
        return first

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The layer's gradients under the checker's names (read through the hook, or what the
        optimizers received in the last backward with ``optimizers=``)."""
        if self.optimizers is not None:
            for name, g in self.captured.items():
                if g.shape != self.params[name].shape:
                    raise ValueError(
                        f"{self.optimizers[name]}.update received a gradient of shape "
                        f"{g.shape} for {name!r}, whose params view has shape "
                        f"{self.params[name].shape}"
                    )
            return dict(self.captured)
        grads = _as_array_dict(self._grads_hook(self.layer), "grads(layer)")
        if set(grads) != set(self.params):
            raise ValueError(
                f"grads names {sorted(grads)} differ from params names {sorted(self.params)}"
            )
        return grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self._reset is not None:
            self._reset(self.layer)
        x_layer = _to_layer(np.asarray(x), self.layout)
        if self.seed is None:
            y = _call(self._forward, self.layer, x_layer)
        else:
            # the wrapped layer draws from the legacy global RNG, so that is what gets seeded
            state = np.random.get_state()  # noqa: NPY002
            np.random.seed(self.seed)  # noqa: NPY002
            try:
                y = _call(self._forward, self.layer, x_layer)
            finally:
                np.random.set_state(state)  # noqa: NPY002
        return _from_layer(np.asarray(y), self.layout)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.accumulates:
            for arr in _as_array_dict(self._grads_hook(self.layer), "grads(layer)").values():
                arr[...] = 0
        dy_layer = _to_layer(np.asarray(dy), self.layout)
        if self.optimizers is None:
            dx = _call(self._backward, self.layer, dy_layer)
        else:
            self.captured = {}
            saved = {attr: getattr(self.layer, attr) for attr in self.optimizers.values()}
            try:
                for name, attr in self.optimizers.items():
                    setattr(self.layer, attr, _Recorder(name, attr, self.captured))
                dx = _call(self._backward, self.layer, dy_layer)
            finally:
                for attr, opt in saved.items():
                    setattr(self.layer, attr, opt)
        return _from_layer(np.asarray(dx), self.layout)
