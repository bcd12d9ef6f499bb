"""The Python half of pmp-worker: the Rust side verifies each message, then
hands its frames here to be unpickled and run."""

import contextlib
import sys

import cloudpickle

from pmp import serialize
from pmp._remote import ExceptionWithTraceback, RemoteError


def _pack_exception(exception):
    """Frames of the exception, its remote traceback attached; a stand-in
    RemoteError when the exception itself cannot be pickled."""
    import traceback

    text = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    try:
        return serialize.dumps_value(ExceptionWithTraceback(exception, text))
    except Exception as pickling_error:  # noqa: BLE001 - any pickling failure gets a stand-in
        name = f"{type(exception).__module__}.{type(exception).__qualname__}"
        stand_in = RemoteError(
            f"{name}: {exception} (the exception could not be pickled: {pickling_error})"
        )
        return serialize.dumps_value(ExceptionWithTraceback(stand_in, text))


class Runtime:
    def __init__(self):
        self._functions = {}
        self._init_values = None
        self._parameters = {}

    def init(self, frames):
        try:
            init_function = serialize.loads(frames)
            values = init_function()
            if not isinstance(values, dict):
                raise TypeError(f"init_function must return a dict, not {type(values).__name__}")
            self._init_values = values
            return True, []
        except BaseException as exception:  # noqa: BLE001 - the task's failure is its result
            return False, _pack_exception(exception)
        finally:
            _flush()

    def run(self, slot, inline_function, call, dependencies):
        try:
            if inline_function is not None:
                self._functions[slot] = cloudpickle.loads(inline_function)
                self._parameters.pop(slot, None)
            function = self._functions[slot]
            values = [serialize.loads(frames) for frames in dependencies]
            args, kwargs = serialize.loads_call(call, values)
            if self._init_values:
                kwargs = self._inject(slot, function, args, kwargs)
            result = function(*args, **kwargs)
        except BaseException as exception:  # noqa: BLE001 - the task's failure is its result
            return False, _pack_exception(exception)
        finally:
            _flush()
        try:
            return True, serialize.dumps_value(result)
        except BaseException as exception:  # noqa: BLE001 - reported as the task's failure
            error = TypeError(
                f"the result of {getattr(function, '__qualname__', function)!r}, "
                f"a {type(result).__name__}, could not be pickled: {exception}"
            )
            error.__context__ = exception
            return False, _pack_exception(error)

    def _inject(self, slot, function, args, kwargs):
        """Add init_function's values for parameters the call left unset."""
        import inspect

        if slot not in self._parameters:
            try:
                signature = inspect.signature(function)
            except (TypeError, ValueError):
                signature = None
            self._parameters[slot] = signature
        signature = self._parameters[slot]
        if signature is None:
            return kwargs
        try:
            supplied = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return kwargs
        extra = {
            name: self._init_values[name]
            for name, parameter in signature.parameters.items()
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            and name in self._init_values
            and name not in supplied
        }
        return {**kwargs, **extra} if extra else kwargs


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
