"""Assemble the server image's whole root file system from the builder stage (run there by the base image's
python3, as root): the interpreter and the part of its standard library a server can need, the venv, and
exactly the shared libraries those load (found with ldd), so that the final stage can be `FROM scratch`.

Kept as the base image has them (symlink chains such as /lib -> usr/lib and /opt/venv/bin/python3 ->
/usr/bin/python3 -> python3.11 included): the interpreter, its stdlib minus DROP_STDLIB (test suites,
GUI/terminal toolkits, build and packaging tools, databases; no pip anywhere), lib-dynload minus
DROP_DYNLOAD, the venv minus DROP_VENV (the server never imports those parts; onnxruntime's
libonnxruntime.so is the C API library, which the Python binding does not load), every library ldd
names for the interpreter and every kept extension module, /etc/{passwd,group} with the service user,
nsswitch.conf, an ld.so cache built for the new root, and an empty /tmp. No shell, no apt/dpkg, no CA store.

Usage: python3 slim_rootfs.py --venv /opt/venv --root /rootfs --uid 10001 --user sentclf
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Directories and modules of the standard library that the server never imports.
DROP_STDLIB = (
    "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "distutils", "venv",
    "curses", "sqlite3", "dbm", "site-packages", "dist-packages", "config-3.*", "turtle.py",
    "__phello__", "antigravity.py", "__pycache__/turtle.*", "__pycache__/antigravity.*",
)  # fmt: skip
# Extension modules (lib-dynload) for what DROP_STDLIB removes, test helpers, and CJK codecs.
DROP_DYNLOAD = (
    "_test*", "_xx*", "xxlimited*", "_tkinter*", "_curses*", "_sqlite3*", "_dbm*", "_gdbm*", "readline*",
    "audioop*", "ossaudiodev*", "nis*", "spwd*", "_crypt*", "_codecs_*", "_multibytecodec*",
)  # fmt: skip
# Relative to the venv's site-packages (globs), plus the venv's bin/ scripts other than python*.
DROP_VENV = (
    "onnxruntime/capi/libonnxruntime.so*", "onnxruntime/tools", "onnxruntime/quantization",
    "onnxruntime/transformers", "onnxruntime/datasets", "numpy/f2py", "numpy/distutils",
    "numpy/_pyinstaller", "numpy/**/tests", "numpy/tests", "numpy/**/*.pyi", "numpy/*.pyi",
)  # fmt: skip
# tritonclient is installed (from the lock) only for the KServe v2 gRPC stubs it generated from the protocol's
# .proto files; the client itself and its dependencies stay out of the image.
KSERVE_STUBS = ("service_pb2.py", "service_pb2_grpc.py", "model_config_pb2.py")
# Files the dynamic loader and libc read, copied when the base image has them.
ETC_FILES = ("/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/nsswitch.conf")


class RootFs:
    """Copies paths from / into `root`, reproducing every symlink on the way (absolute and relative)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def target(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    def add(self, path: str | Path) -> None:
        """Copy `path` (file, directory or symlink chain) into the root, parents' symlinks included."""
        path = Path(os.path.normpath(path))
        current = Path("/")
        for index, part in enumerate(path.parts[1:], start=1):
            current = current / part
            target = self.target(current)
            if current.is_symlink():
                link = os.readlink(current)
                if not target.is_symlink():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(link)
                # Continue from where the link points, with the rest of the path.
                resolved = Path(os.path.normpath(current.parent / link)).joinpath(*path.parts[index + 1 :])
                self.add(resolved)
                return
            if index < len(path.parts) - 1:
                if not target.exists():
                    target.mkdir(parents=True)
                    shutil.copystat(current, target)
                continue
            if current.is_dir():
                self._copy_tree(current)
            elif not target.exists():
                shutil.copy2(current, target)

    def _copy_tree(self, source: Path) -> None:
        """A directory with its symlinks kept as links; links that point out of it are followed too."""
        shutil.copytree(source, self.target(source), symlinks=True, dirs_exist_ok=True)
        for link in [p for p in source.rglob("*") if p.is_symlink()]:
            destination = Path(os.path.normpath(link.parent / os.readlink(link)))
            if not destination.is_relative_to(source) and destination.exists():
                self.add(destination)


def remove_matching(base: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Delete what the globs match below `base`; returns what was removed."""
    removed = []
    for pattern in patterns:
        for path in sorted(base.glob(pattern), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(path)
    return removed


def keep_kserve_stubs(site_packages: Path) -> None:
    """Reduce the installed tritonclient to tritonclient/grpc/{KSERVE_STUBS}: `from tritonclient.grpc import
    service_pb2` keeps working (the stubs import each other that way) without the client's modules, its
    dependencies, or the wheel's other top-level packages (tritongrpcclient, tritonshmutils, ...)."""
    (dist_info,) = site_packages.glob("tritonclient-*.dist-info")
    version = dist_info.name.removeprefix("tritonclient-").removesuffix(".dist-info")
    package = site_packages / "tritonclient"
    stubs = {name: (package / "grpc" / name).read_bytes() for name in KSERVE_STUBS}
    licence = next(dist_info.rglob("LICENSE*")).read_bytes()
    # Everything the wheel installed, per its RECORD (first column: path relative to site-packages).
    installed = [line.rsplit(",", 2)[0] for line in (dist_info / "RECORD").read_text().splitlines() if line]
    for top in sorted({path.split("/", 1)[0] for path in installed}):
        if (site_packages / top).is_dir():
            shutil.rmtree(site_packages / top)
        elif (site_packages / top).is_file():
            (site_packages / top).unlink()
    (package / "grpc").mkdir(parents=True)
    doc = (
        f'"""Only the KServe v2 gRPC stubs generated by tritonclient=={version} ({", ".join(KSERVE_STUBS)}),'
        '\nkept by slim_rootfs.py at image build time; the client library is not installed."""\n'
    )
    for init in (package / "__init__.py", package / "grpc" / "__init__.py"):
        init.write_text(doc)
    for name, content in stubs.items():
        (package / "grpc" / name).write_bytes(content)
    (package / "LICENSE.txt").write_bytes(licence)


def needed_libraries(files: list[Path]) -> set[str]:
    """Every shared library (absolute path, as the loader resolves it) that `files` load, per ldd."""
    libraries: set[str] = set()
    for file in files:
        result = subprocess.run(["ldd", str(file)], capture_output=True, text=True)
        if result.returncode != 0:
            if "not a dynamic executable" in result.stderr + result.stdout:
                continue
            raise SystemExit(f"ldd {file} failed: {result.stderr.strip()}")
        for line in result.stdout.splitlines():
            line = line.strip()
            if "not found" in line:
                raise SystemExit(f"{file}: {line}: the image would fail to load it")
            if "=>" in line:
                path = line.split("=>", 1)[1].split("(", 1)[0].strip()
            else:
                path = line.split("(", 1)[0].strip()
            if path.startswith("/"):
                libraries.add(path)
    return libraries


def shared_objects(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink() and ".so" in p.name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--uid", type=int, default=10001)
    parser.add_argument("--user", default="sentclf")
    args = parser.parse_args(argv)
    rootfs = RootFs(args.root)
    args.root.mkdir(parents=True, exist_ok=True)

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dynload = Path(sysconfig.get_paths()["platstdlib"]) / "lib-dynload"
    interpreter = Path(os.path.realpath(sys.executable))
    rootfs.add(interpreter)
    rootfs.add(stdlib)
    if not dynload.is_relative_to(stdlib):
        rootfs.add(dynload)
    remove_matching(rootfs.target(stdlib), DROP_STDLIB)
    remove_matching(rootfs.target(dynload), DROP_DYNLOAD)

    venv = args.venv
    site_packages = next(venv.glob("lib/python3*/site-packages"))
    keep_kserve_stubs(site_packages)
    remove_matching(site_packages, DROP_VENV)
    subprocess.run(
        [venv / "bin" / "python3", "-m", "compileall", "-q", site_packages / "tritonclient"], check=True
    )
    for script in (venv / "bin").iterdir():
        if not script.name.startswith("python"):
            script.unlink()
    rootfs.add(venv)  # bin/python3 -> the base image's python3 -> python3.x, links reproduced

    # ldd runs on the originals of what was kept, so $ORIGIN-relative libraries resolve to source paths.
    kept = [*shared_objects(rootfs.target(dynload)), *shared_objects(rootfs.target(venv))]
    extensions = [interpreter, *(Path("/") / path.relative_to(args.root) for path in kept)]
    for library in sorted(needed_libraries(extensions)):
        rootfs.add(library)
    for path in ETC_FILES:
        if os.path.lexists(path):
            rootfs.add(path)
    etc = args.root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/sbin/nologin\n{args.user}:x:{args.uid}:{args.uid}::/nonexistent:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\n{args.user}:x:{args.uid}:\n")
    tmp = args.root / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    # The loader's cache for the new root (python:3.11-slim's libpython lives in /usr/local/lib).
    subprocess.run(["ldconfig", "-r", str(args.root)], check=True)
    shutil.rmtree(args.root / "var" / "cache" / "ldconfig", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
