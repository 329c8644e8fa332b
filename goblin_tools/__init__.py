"""Goblin's operator and developer tools: the ``goblin`` command, the supervisor behind ``goblin up``,
the embedded stores, proto generation, the suite runner and the fake providers that tests and
benchmarks share. No running service imports this package: services/common holds only what every
service needs at run time."""
