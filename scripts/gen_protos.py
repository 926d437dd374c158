"""Regenerate the committed creditline.v1 modules from protos/ (the one codegen command).

Runs grpcio-tools' bundled protoc with the mypy-protobuf plugins, so the output depends only on
the pinned versions in pyproject.toml. `--check` regenerates into a scratch folder and fails if
anything differs from what is committed, which CI runs.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT_ROOT = ROOT / "clients" / "python" / "src"
PACKAGE = Path("creditline") / "v1"
INIT_TEXT = '"""Generated creditline.v1 protobuf and gRPC modules; regenerate, never edit."""\n'


def generate(out_root: Path) -> None:
    """Write the generated modules for every .proto under protos/ into out_root."""
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    target = out_root / PACKAGE
    if target.exists():
        for old in target.glob("*_pb2*.py*"):
            old.unlink()
    target.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{wkt}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out=quiet:{out_root}",
        f"--mypy_grpc_out=quiet:{out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    (target / "__init__.py").write_text(INIT_TEXT)


def differences(a: Path, b: Path) -> list[str]:
    """Names of files that differ between two generated trees, or exist in only one."""
    cmp = filecmp.dircmp(a, b)
    return sorted(cmp.left_only + cmp.right_only + cmp.diff_files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(OUT_ROOT)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        committed = OUT_ROOT / PACKAGE
        fresh = Path(scratch) / PACKAGE
        for stale in (committed / "__pycache__",):
            shutil.rmtree(stale, ignore_errors=True)
        diff = differences(committed, fresh)
    if diff:
        print("generated code is stale; run `make protos`:", ", ".join(diff), file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
