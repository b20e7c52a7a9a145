#!/usr/bin/python3
"""Benchmark report: run interlock_bench (or read its JSON), pair every
<scenario>/interlock figure with the baselines measured in the same process at the
same thread count, and write a Markdown table of ratios plus one PNG plot per
scenario (throughput against threads).

    python3 bench/report.py --bench build/release/bench/interlock_bench --out bench/results
    python3 bench/report.py --json results.json --out bench/results   # no new run

A ratio is interlock throughput / baseline throughput: above 1 means interlock is
faster. Throughput is items per second when a benchmark reports it, otherwise
iterations per second of real time (all threads together). Each benchmark runs
--repetitions times (5 by default), interleaved in random order so that a slow spell
of the machine does not land on one implementation, and the table shows the median.
"""
import argparse
import collections
import json
import os
import platform
import re
import statistics
import subprocess
import sys


def run_bench(binary, extra_args, json_path):
    command = [binary, "--benchmark_format=json", f"--benchmark_out={json_path}",
               "--benchmark_out_format=json"] + extra_args
    print("running:", " ".join(command), file=sys.stderr)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return command


NAME = re.compile(r"^(?P<scenario>[^/]+)/(?P<impl>[^/]+)(?P<rest>.*)$")


def throughput(entry):
    """Operations per second for the whole run, all threads together.

    Google Benchmark reports real_time per iteration of the whole run: the run's wall
    time divided by the iterations of all its threads together (for a threaded
    benchmark, items_per_second is exactly 1 / real_time). So one iteration per
    real_time is already the rate of all threads; multiplying by the thread count would
    count every thread twice."""
    if "items_per_second" in entry:
        return float(entry["items_per_second"])
    real = float(entry["real_time"])
    unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[entry.get("time_unit", "ns")]
    return 1.0 / (real * unit) if real > 0 else 0.0


def collect(data):
    """{scenario: {impl: {threads: ops_per_second}}}, the median over repetitions."""
    samples = collections.defaultdict(list)
    for entry in data["benchmarks"]:
        if entry.get("run_type", "iteration") != "iteration" or entry.get("error_occurred"):
            continue
        match = NAME.match(entry.get("run_name", entry["name"]))
        if not match:
            continue
        threads = int(entry.get("threads", 1))
        samples[(match["scenario"], match["impl"], threads)].append(throughput(entry))
    table = collections.defaultdict(lambda: collections.defaultdict(dict))
    for (scenario, impl, threads), rates in samples.items():
        table[scenario][impl][threads] = statistics.median(rates)
    return table


def fmt_rate(value):
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f} {suffix}/s"
    return f"{value:.0f} /s"


def markdown(table, context):
    lines = ["# interlock benchmark report", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    lines += ["", "Ratio = interlock throughput / baseline throughput at the same thread count "
              "(above 1: interlock is faster).", ""]
    lines += ["| scenario | threads | interlock | baseline | baseline rate | ratio |",
              "|---|---:|---:|---|---:|---:|"]
    for scenario in sorted(table):
        impls = table[scenario]
        ours = {name: rates for name, rates in impls.items() if name.startswith("interlock")}
        baselines = {name: rates for name, rates in impls.items() if not name.startswith("interlock")}
        for our_name, our_rates in sorted(ours.items()):
            label = scenario if our_name == "interlock" else f"{scenario} ({our_name})"
            for threads in sorted(our_rates):
                if not baselines:
                    lines.append(f"| {label} | {threads} | {fmt_rate(our_rates[threads])} | - | - | - |")
                for base_name, base_rates in sorted(baselines.items()):
                    if threads not in base_rates or base_rates[threads] == 0:
                        continue
                    ratio = our_rates[threads] / base_rates[threads]
                    lines.append(f"| {label} | {threads} | {fmt_rate(our_rates[threads])} | "
                                 f"{base_name} | {fmt_rate(base_rates[threads])} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def plot(table, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not found (apt-get install python3-matplotlib): no plots", file=sys.stderr)
        return []
    written = []
    for scenario in sorted(table):
        impls = table[scenario]
        if all(len(rates) < 2 for rates in impls.values()):
            continue  # single-thread scenarios: the table says it all
        figure, axes = plt.subplots(figsize=(6, 4))
        for name, rates in sorted(impls.items()):
            threads = sorted(rates)
            axes.plot(threads, [rates[t] / 1e6 for t in threads], marker="o",
                      linewidth=2.5 if name.startswith("interlock") else 1.2, label=name)
        axes.set_title(scenario)
        axes.set_xlabel("threads")
        axes.set_ylabel("million operations per second")
        axes.set_xscale("log", base=2)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = os.path.join(out_dir, f"{scenario}.png")
        figure.savefig(path, dpi=90)
        plt.close(figure)
        written.append(path)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", help="path to interlock_bench (runs it)")
    parser.add_argument("--json", help="read this Google Benchmark JSON instead of running")
    parser.add_argument("--out", default="bench/results", help="output folder")
    parser.add_argument("--compiler", default="", help="compiler and flags, for the report header")
    parser.add_argument("--command", default="", help="the command that produced --json")
    parser.add_argument("--repetitions", type=int, default=5,
                        help="runs of each benchmark, interleaved; the report shows the median")
    parser.add_argument("bench_args", nargs="*", help="extra arguments for interlock_bench (after --)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    json_path = args.json or os.path.join(args.out, "results.json")
    command = None
    if not args.json:
        if not args.bench:
            parser.error("give --bench or --json")
        repeat = [f"--benchmark_repetitions={args.repetitions}",
                  "--benchmark_enable_random_interleaving=true"] if args.repetitions > 1 else []
        command = run_bench(args.bench, repeat + args.bench_args, json_path)
    with open(json_path) as source:
        data = json.load(source)
    table = collect(data)
    ctx = data.get("context", {})
    context = collections.OrderedDict()
    context["machine"] = f"{platform.machine()}, {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz"
    context["date"] = ctx.get("date", "?")
    context["Google Benchmark library build"] = ctx.get("library_build_type", "?")
    if args.compiler:
        context["compiler and flags"] = args.compiler
    if command or args.command:
        context["command"] = "`" + (" ".join(command) if command else args.command) + "`"
    with open(os.path.join(args.out, "report.md"), "w") as sink:
        sink.write(markdown(table, context))
    plots = plot(table, args.out)
    print(f"wrote {os.path.join(args.out, 'report.md')} and {len(plots)} plots", file=sys.stderr)


if __name__ == "__main__":
    main()
