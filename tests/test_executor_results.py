"""Results come back as what the function returned, however they pickle:
the worker uses the standard pickler where it can (it is cheaper) and
cloudpickle for what only cloudpickle can pickle. Each case here takes the
second path; the rest of the suite takes the first."""

from pmp import Executor

RESULT_TIMEOUT = 60


def make_adder(n):
    return lambda x: x + n


def make_local_point(x, y):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return self.x**2 + self.y**2

    return Point(x, y)


def test_a_returned_lambda_and_an_instance_of_a_local_class_come_back_whole():
    with Executor(max_workers=1, block_allocation=True) as exe:
        adder = exe.submit(make_adder, 3).result(timeout=RESULT_TIMEOUT)
        point = exe.submit(make_local_point, 3, 4).result(timeout=RESULT_TIMEOUT)
    assert adder(4) == 7
    assert (point.x, point.y, point.norm2()) == (3, 4, 25)


def test_instances_of_a_class_defined_in_main_come_back_as_that_class(run_script):
    # The class travels by value with the function; in the worker it is not
    # an attribute of __main__, which the standard pickler would need.
    completed = run_script(
        """
        import pmp

        class Reading:
            def __init__(self, value):
                self.value = value

        def measure(value):
            return Reading(value), [Reading(value + 1)]

        if __name__ == "__main__":
            with pmp.Executor(max_workers=1, block_allocation=True) as exe:
                one, more = exe.submit(measure, 1).result(timeout=60)
            print(type(one).__name__, one.value, more[0].value)
        """
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "Reading 1 2\n"
