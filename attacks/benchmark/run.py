"""One benchmark run as `BenchmarkOptions` say: the machine's description, then the
defense's timing (default), the batched attacks (`attacks`), a card on the local
executor against Ray (`executors`) or the runner's memory (`memory`)."""

from __future__ import annotations

from attacks.benchmark.machine import describe_machine, set_threads
from attacks.benchmark.options import BenchmarkOptions


def run_benchmark(options: BenchmarkOptions) -> None:
    """Describe the machine, then run the measurement the options select, printing it."""
    set_threads(options)
    describe_machine()
    if options.attacks:
        from attacks.benchmark.attack_speed import attacks_benchmark

        attacks_benchmark(options)
    elif options.executors:
        from attacks.benchmark.executors import executors_benchmark

        executors_benchmark(options)
    elif options.memory:
        from attacks.benchmark.memory import memory_benchmark

        memory_benchmark(options)
    else:
        from attacks.benchmark.defense_speed import defense_benchmark

        defense_benchmark(options)
