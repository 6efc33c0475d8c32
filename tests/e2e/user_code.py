"""User code for tests that run a worker themselves. Beam pickles these by reference, so the
worker imports this module: it imports nothing the workers' environment lacks."""

import time


def sleep_long(x):
    time.sleep(300)
    return x


def square(x):
    return x * x


def sleep_briefly(x):
    time.sleep(8)
    return x
