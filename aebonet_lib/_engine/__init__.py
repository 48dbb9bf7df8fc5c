"""The machinery behind the student library: runs, caches, benchmarks, results, the CLI."""
