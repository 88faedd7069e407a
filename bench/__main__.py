"""`python -m bench [NAME ...]`: run every bench_*.py module (or the ones named) and print its table."""

import importlib
import pkgutil
import sys

import bench


def main(names: list[str]) -> int:
    names = names or sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    for name in names:
        module = importlib.import_module(f"bench.{name.removesuffix('.py')}")
        print(f"\n== {name}: {module.__doc__.strip().splitlines()[0]}", flush=True)
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
