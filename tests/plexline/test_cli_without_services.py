"""The benchmarks run on a GPU host that has torch and not the services' packages (pydantic, FastAPI)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WITHOUT_SERVICES = """
import sys
for name in ("pydantic", "pydantic_settings", "fastapi", "uvicorn", "redis"):
    sys.modules[name] = None  # importing any of them now fails, as where they are not installed
from plexline.cli import main, build_parser
args = build_parser().parse_args(["bench", "churn", "--calls", "8,auto"])
assert args.calls == [8, "auto"], args.calls
import bench.churn, bench.engine
sys.exit(main(["serve", "--model", "echo"]))
"""


def test_the_benchmarks_parse_and_import_without_the_services_packages():
    done = subprocess.run([sys.executable, "-c", WITHOUT_SERVICES], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "`plexline serve` needs pydantic, which is not installed" in done.stderr
