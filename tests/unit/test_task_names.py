"""One name per task (`pmp.client.task_names`): a chosen `--name` first, else
its function's `__name__`, a `%%pmp` cell after its prompt number."""

import functools

from pmp.client.task_names import CELL_FUNCTION, function_name, name_task, task_name
from pmp.worker.task_traceback import CELL_SOURCE


def square(x):
    return x * x


class Callable:
    def __call__(self):
        return None


def cell_function(filename):
    def fn():
        return None

    fn.__name__ = CELL_FUNCTION
    setattr(fn, CELL_SOURCE, (filename, "x = 1\n"))
    return fn


def test_a_function_is_named_by_its_name_and_a_partial_by_the_function_it_calls():
    assert function_name(square) == "square"
    assert function_name(lambda: None) == "<lambda>"
    assert function_name(functools.partial(square, 3)) == "square"


def test_a_callable_object_is_named_by_its_class():
    assert function_name(Callable()) == "Callable"


def test_a_cell_without_a_name_is_named_after_its_prompt_number():
    assert function_name(cell_function("<ipython-input>, Cell In[12]")) == "cell [12]"
    assert function_name(cell_function("Cell In[3], line 1")) == "cell [3]"
    assert function_name(cell_function("somewhere.py")) == "cell"


def test_a_function_that_carries_cell_source_but_another_name_keeps_its_name():
    fn = cell_function("Cell In[4]")
    fn.__name__ = "prepare"
    assert function_name(fn) == "prepare"


class Named:
    pass


def test_a_chosen_name_beats_the_given_one_which_beats_task():
    future = Named()
    assert task_name(future) == "task"
    name_task(future, "fit")
    assert task_name(future) == "fit"
    assert task_name(future, "--name wins") == "--name wins"
