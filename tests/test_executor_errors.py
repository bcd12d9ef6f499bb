"""What a failing call looks like: its own exception with the remote
traceback, values that cannot be pickled (a worker that dies:
test_executor_lost_workers.py).

Peer breakages these guard against (research/executorlib.md §5, §6): the remote
traceback was lost; custom exception classes became NameError; an
unpicklable argument, result or exception killed a thread or a worker and
left futures pending forever.
"""

import os
import pickle
import sys
import threading

import pytest
from pmp import Executor, RemoteTraceback, WorkerDiedError, _pmp

RESULT_TIMEOUT = 60


class MyError(Exception):
    """An exception class only this test module defines."""


class MyErrorWithFields(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def add(a, b):
    return a + b


def identity(x):
    return x


def _check_value(x):
    if x > 10:
        raise ValueError(f"bad value {x}")
    return x


def raise_value_error(x):
    return _check_value(x)


def raise_my_error(tag):
    raise MyError(tag)


def raise_my_error_with_fields():
    raise MyErrorWithFields(7, "seven")


def divide(a, b):
    return a / b


def lookup(key):
    return {}[key]


def read_missing(path):
    with open(path) as f:
        return f.read()


def call_sys_exit():
    sys.exit(5)


def return_lock():
    return threading.Lock()


def return_generator():
    return (i for i in range(3))


def raise_unpicklable_exception():
    error = ValueError("this exception carries a lock")
    error.lock = threading.Lock()
    raise error


def _worker_only_module(directory, name, source):
    import importlib

    with open(os.path.join(directory, f"{name}.py"), "w") as f:
        f.write(source)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module(name)


def return_worker_only_object(directory, name):
    module = _worker_only_module(directory, name, "class OnlyHere:\n    pass\n")
    return module.OnlyHere()


def raise_worker_only_exception(directory, name):
    module = _worker_only_module(directory, name, "class OnlyHereError(Exception):\n    pass\n")
    raise module.OnlyHereError("raised from a class the client cannot import")


def failing_init():
    raise ValueError("init_function broke on purpose")


# ---- exceptions raised by the function ----------------------------------------


def test_exception_type_message_and_remote_traceback(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        future = exe.submit(raise_value_error, 42)
        with pytest.raises(ValueError, match=r"^bad value 42$") as raised:
            future.result(timeout=RESULT_TIMEOUT)
        # A second result() raises the same again.
        with pytest.raises(ValueError, match="bad value 42"):
            future.result(timeout=RESULT_TIMEOUT)
        assert isinstance(future.exception(timeout=RESULT_TIMEOUT), ValueError)
        assert exe.submit(raise_value_error, 3).result(timeout=RESULT_TIMEOUT) == 3
    cause = raised.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert "raise_value_error" in text
    assert "_check_value" in text
    assert 'raise ValueError(f"bad value {x}")' in text
    assert "ValueError: bad value 42" in text
    # It starts at the function: the worker runtime's frame that called it is pmp's, not theirs.
    frames = text.split("Traceback (most recent call last):\n", 1)[1]
    assert frames.lstrip().startswith('File "' + __file__), text
    assert "pmp/worker" not in text, text


@pytest.mark.parametrize(
    ("function", "argument", "expected"),
    [
        (divide, 0, ZeroDivisionError),
        (lookup, "missing", KeyError),
        (read_missing, "/nonexistent/pmp-test/file", FileNotFoundError),
    ],
    ids=["ZeroDivisionError", "KeyError", "FileNotFoundError"],
)
def test_builtin_exception_types(block_allocation, function, argument, expected):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        if function is divide:
            future = exe.submit(divide, 1, argument)
        else:
            future = exe.submit(function, argument)
        with pytest.raises(expected) as raised:
            future.result(timeout=RESULT_TIMEOUT)
    if expected is FileNotFoundError:
        assert raised.value.errno == 2
        assert raised.value.filename == argument
    if expected is KeyError:
        assert raised.value.args == ("missing",)


def test_custom_exception_classes_keep_their_class(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        with pytest.raises(MyError, match="custom-tag-5") as raised:
            exe.submit(raise_my_error, "custom-tag-5").result(timeout=RESULT_TIMEOUT)
        assert type(raised.value) is MyError
        assert isinstance(raised.value.__cause__, RemoteTraceback)
        assert "raise_my_error" in str(raised.value.__cause__)
        with pytest.raises(MyErrorWithFields) as fields:
            exe.submit(raise_my_error_with_fields).result(timeout=RESULT_TIMEOUT)
        assert (fields.value.code, fields.value.detail) == (7, "seven")


def test_custom_exception_class_from_script_main(run_script):
    completed = run_script(
        """
        from pmp import Executor, RemoteTraceback

        class MyError(Exception):
            pass

        def fail(tag):
            raise MyError(tag)

        with Executor(max_workers=1, block_allocation=True) as exe:
            try:
                exe.submit(fail, "from-main").result(timeout=60)
            except MyError as error:
                print("caught", type(error).__name__, error)
                print("traceback", isinstance(error.__cause__, RemoteTraceback))
                print("names fail", "fail" in str(error.__cause__))
        with Executor(max_workers=1) as exe:
            try:
                exe.submit(fail, "fresh").result(timeout=60)
            except MyError as error:
                print("caught", type(error).__name__, error)
        """
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == (
        "caught MyError from-main\ntraceback True\nnames fail True\ncaught MyError fresh\n"
    ), completed.stderr


def test_sys_exit_fails_only_its_task(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        with pytest.raises((SystemExit, WorkerDiedError)):
            exe.submit(call_sys_exit).result(timeout=RESULT_TIMEOUT)
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


# ---- values that cannot be pickled --------------------------------------------


@pytest.mark.parametrize(
    "make_argument",
    [
        threading.Lock,
        lambda: [1, {"deep": threading.Lock()}],
        lambda: (i for i in range(3)),
    ],
    ids=["lock", "nested-lock", "generator"],
)
def test_unpicklable_argument(block_allocation, make_argument):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        try:
            future = exe.submit(identity, make_argument())
        except (TypeError, pickle.PicklingError):
            pass  # rejected at submit: allowed
        else:
            with pytest.raises((TypeError, pickle.PicklingError)):
                future.result(timeout=RESULT_TIMEOUT)
        assert exe.submit(add, 1, 2).result(timeout=RESULT_TIMEOUT) == 3


@pytest.mark.parametrize("function", [return_lock, return_generator], ids=["lock", "generator"])
def test_unpicklable_result(block_allocation, function):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        failing = exe.submit(function)
        following = exe.submit(add, 2, 3)
        with pytest.raises(Exception):  # noqa: B017 - any exception, but not a hang
            failing.result(timeout=RESULT_TIMEOUT)
        assert following.result(timeout=RESULT_TIMEOUT) == 5
        assert exe.submit(add, 3, 4).result(timeout=RESULT_TIMEOUT) == 7


def test_unpicklable_exception(block_allocation):
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        failing = exe.submit(raise_unpicklable_exception)
        with pytest.raises(Exception) as raised:
            failing.result(timeout=RESULT_TIMEOUT)
        assert "this exception carries a lock" in str(raised.value)
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2


def test_result_the_client_cannot_unpickle(block_allocation, tmp_path):
    name = f"pmp_worker_only_{os.getpid()}_{int(block_allocation)}"
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        future = exe.submit(return_worker_only_object, str(tmp_path), name)
        with pytest.raises(Exception):  # noqa: B017 - ModuleNotFoundError, typically
            future.result(timeout=RESULT_TIMEOUT)
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2


def test_exception_the_client_cannot_unpickle(block_allocation, tmp_path):
    name = f"pmp_worker_only_error_{os.getpid()}_{int(block_allocation)}"
    with Executor(max_workers=1, block_allocation=block_allocation) as exe:
        future = exe.submit(raise_worker_only_exception, str(tmp_path), name)
        with pytest.raises(Exception):  # noqa: B017 - its class is not importable here
            future.result(timeout=RESULT_TIMEOUT)
        assert exe.submit(add, 1, 1).result(timeout=RESULT_TIMEOUT) == 2


def test_failing_init_function_fails_tasks_instead_of_hanging():
    try:
        exe = Executor(max_workers=1, block_allocation=True, init_function=failing_init)
    except Exception:  # noqa: BLE001 - reporting it at construction is fine too
        return
    with exe:
        try:
            future = exe.submit(add, 1, 1)
        except Exception:  # noqa: BLE001 - or at submit
            return
        with pytest.raises(Exception):  # noqa: B017 - any report, but not a hang
            future.result(timeout=RESULT_TIMEOUT)


def test_a_task_the_scheduler_itself_refuses_fails_with_a_value_error():
    # submit() checks resources first; this reaches past that check to the
    # scheduler's own, which must fail the Future rather than leave it queued.
    from pmp.client import serialize
    from pmp.client.future import Future

    with Executor(max_cores=1) as exe:
        future = Future()
        task = exe._engine.table.new_id()
        exe._engine.table.register(task, future)
        resources = _pmp.ResourceRequest(cores=64)
        exe._engine.scheduler.submit(
            task,
            serialize.dumps_function(add),
            serialize.dumps_call((1, 2), {}, None),
            [],
            resources,
        )
        with pytest.raises(ValueError, match="can never run here"):
            future.result(timeout=RESULT_TIMEOUT)
