"""`benchmark_defense`: benchmark the randomized ensemble against the original entry's
loop and the machine's peak, after a description of the machine.

By default: the entry's loop, ours exhaustive and with early exit (also with XLA),
early exit's saving on the trained digits CNN, bfloat16 where the CPU has bfloat16
units, and each GPU's precisions (`attacks.benchmark.defense_speed`). `--attacks`
times the batched attacks against their un-batched equivalents on the digits CNN
(`attacks.benchmark.attack_speed`); `--executors` a digits robustness card in cells
and a toy competition on the local executor against Ray on this machine, then
projections of the full competition and Tables 1-6 (`attacks.benchmark.executors`);
`--memory` the peak RSS of the runner
(`run_defense`, a generated checkpoint) for `--memory_images` images
(`attacks.benchmark.memory`). The library is `attacks.benchmark`; this shell only
parses the flags into a `BenchmarkOptions`.

Exit status: 0 when the run finished, 2 for bad flags.
"""

from absl import flags

from attacks.benchmark import options as benchmark_options
from defense.common import cli

PROGRAM = "benchmark_defense"
FLAGS = flags.FLAGS
benchmark_options.define_flags(FLAGS)
flags.adopt_module_key_flags(benchmark_options)


def main(argv):
    if len(argv) > 1:
        return cli.fail(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        options = benchmark_options.options_from_flags(FLAGS)
        cli.import_tensorflow()
        benchmark_options.check_model(options.model)
    except ValueError as error:
        return cli.fail(PROGRAM, error)
    from attacks.benchmark.run import run_benchmark

    run_benchmark(options)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run_program(main, __name__, PROGRAM)
