"""The command surface: fast ``--help``/``--version`` without torch, ``python -m defocus_cli``, help texts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from defocus_cli import __version__

# ray (the optional Ray runner) and openvino/nncf (the optional backend) must never be loaded by the plain CLI either
HEAVY = ("torch", "numpy", "cv2", "PIL", "safetensors", "huggingface_hub", "ray", "pyarrow", "pandas", "openvino", "nncf")
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}


def _probe(argv: list[str]) -> list[str]:
    """Run the app in a fresh interpreter with ``argv``; return the heavy modules it imported."""
    code = (
        "import sys\n"
        "from defocus_cli.cli import app\n"
        "try:\n"
        f"    app({argv!r}, prog_name='defocus')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("HEAVY=")]
    assert line, r.stderr
    return [m for m in line[-1][len("HEAVY="):].split(",") if m]


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys, defocus_cli.cli; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["deblur", "--help"]])
def test_help_and_version_import_no_heavy_library(argv: list[str]) -> None:
    assert _probe(argv) == []


def test_help_is_fast() -> None:
    """``defocus --help`` under 0.5 s: CPU time of the child (wall time is unreliable on a shared
    2-core machine; the best of three runs is taken)."""
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        before = os.times()
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "defocus_cli", "--help"], capture_output=True, env=ENV, timeout=60)
        wall = time.perf_counter() - t0
        after = os.times()
        assert r.returncode == 0
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        best_cpu, best_wall = min(best_cpu, cpu), min(best_wall, wall)
    assert best_cpu < 0.5, f"defocus --help took {best_cpu:.2f} s CPU ({best_wall:.2f} s wall)"


def test_python_dash_m_version() -> None:
    r = subprocess.run([sys.executable, "-m", "defocus_cli", "--version"], capture_output=True, text=True, env=ENV,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"defocus {__version__}"


def test_main_freezes_the_heap_for_a_fast_exit_and_keeps_the_exit_code() -> None:
    """main() moves every object to the permanent generation when the command ends (shutdown skips walking
    them), keeps the command's exit code, and still runs atexit handlers; embedding ``app`` never freezes."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('FROZEN=%d' % gc.get_freeze_count(), file=sys.stderr))\n"
        "sys.argv = ['defocus', 'deblur', '--model']\n"  # a usage error: exit 2
        "from defocus_cli.cli import main\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 2, r.stderr
    frozen = [int(ln.split("=")[1]) for ln in r.stderr.splitlines() if ln.startswith("FROZEN=")]
    assert frozen and frozen[0] > 1000, r.stderr
    embedded = subprocess.run(
        [sys.executable, "-c", "import gc\nfrom defocus_cli.cli import app\ntry:\n    app(['--version'])\n"
         "except SystemExit:\n    pass\nprint(gc.get_freeze_count())"], capture_output=True, text=True, env=ENV,
        timeout=60)
    assert embedded.stdout.split()[-1] == "0", embedded.stdout


def test_deblur_help_lists_the_contract_options() -> None:
    from typer.testing import CliRunner

    from defocus_cli.cli import app

    r = CliRunner().invoke(app, ["deblur", "--help"], env={"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb"})
    assert r.exit_code == 0
    for opt in ("--output", "--model", "--weights", "--device", "--precision", "--tile", "--overlap", "--recursive",
                "--suffix", "--format", "--quality", "--overwrite", "--skip-existing", "--strip-metadata", "--json",
                "--quiet", "--verbose", "--max-pixels"):
        assert opt in r.stdout, opt


@pytest.mark.parametrize(("command", "suffix", "other"), [("deblur", "_sharp", "_deconv"),
                                                         ("deconv", "_deconv", "_sharp")])
def test_output_and_suffix_help_name_the_commands_own_default(command: str, suffix: str, other: str) -> None:
    """`--output`/`--suffix` are defined once (cli/_common.py) but each command's help names its own suffix."""
    import re

    from typer.testing import CliRunner

    from defocus_cli.cli import app

    r = CliRunner().invoke(app, [command, "--help"], env={"NO_COLOR": "1", "COLUMNS": "400", "TERM": "dumb"})
    assert r.exit_code == 0
    options = " ".join(line for line in r.stdout.splitlines() if line.startswith(("│", "|")))  # the option panels
    flat = re.sub(r"[│|\s]+", " ", options)
    assert f"Default: <stem>{suffix}.<ext>" in flat and f"(default {suffix} next to inputs" in flat
    assert other not in flat


def test_no_arguments_shows_usage_with_exit_2() -> None:
    from typer.testing import CliRunner

    from defocus_cli.cli import app

    r = CliRunner().invoke(app, ["deblur"])
    assert r.exit_code == 2


def test_readme_commands_match_ci() -> None:
    """The README's two set-up commands and .ci/run must not drift apart."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) == 2, blocks
    install_and_deblur, test_cmd = blocks[0].strip(), blocks[1].strip()
    install, _, deblur = install_and_deblur.partition(" && defocus deblur ")
    assert deblur.startswith("examples/") and (root / deblur.split()[0]).is_file()
    ci_lines = [ln.strip() for ln in (root / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert install in ci_lines
    assert test_cmd in ci_lines
    assert "defocus deblur " + deblur in ci_lines


def test_exit_code_table_matches_the_documented_codes() -> None:
    """cli/exit_codes.py is the one table; its codes are the README's, and no row hides a later one."""
    import re
    from pathlib import Path

    from defocus_cli.cli.exit_codes import DEFAULT, EXIT_CODES, Terminated, exit_code
    from defocus_cli.errors import DefocusError, DeviceError, InputError, OutputError, UsageError, WeightsError

    for i, row in enumerate(EXIT_CODES):  # most specific first: an earlier row never takes a later row's type
        assert not any(issubclass(row.error, earlier.error) for earlier in EXIT_CODES[:i]), row
    cases = {UsageError("u"): 2, WeightsError("w"): 3, DeviceError("d"): 4, InputError("i"): 1, OutputError("o"): 1,
             DefocusError("x"): 1, KeyboardInterrupt(): 130, BrokenPipeError(): 141, Terminated(): 143,
             OSError("disk"): 1, ValueError("v"): 1}
    assert {type(e).__name__: exit_code(e) for e in cases} == {type(e).__name__: c for e, c in cases.items()}
    assert exit_code(WeightsError) == 3 and DEFAULT.code == 1
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(c) for row in re.findall(r"^\| ([\d /]+) \|", table, flags=re.M) for c in row.split("/")}
    assert documented == {0, 1, 2, 3, 4, 130, 141, 143}
    assert {row.code for row in EXIT_CODES} | {0} == documented


def test_only_the_command_line_prints_or_imports_cli() -> None:
    """ARCHITECTURE.md's rule: the library never imports cli/, never prints, never draws with rich
    (the entry point __main__.py may import cli/)."""
    import ast
    from pathlib import Path

    pkg = Path(__file__).resolve().parent.parent / "defocus_cli"
    bad: list[str] = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel.startswith("cli/") or rel == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ("." * node.level) + (node.module or "")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{rel}:{node.lineno}: print()")
                continue
            else:
                continue
            for name in names:
                if (name in ("defocus_cli.cli", ".cli", "..cli", "rich")
                        or name.startswith(("defocus_cli.cli.", ".cli.", "..cli.", "rich."))):
                    bad.append(f"{rel}:{node.lineno}: imports {name}")
    assert bad == []


def test_library_errors_name_values_and_the_cli_names_the_option(tmp_path: object) -> None:
    """A library error names the value (param = the argument); the CLI's line names the option instead."""
    from defocus_cli.batch import BatchOptions, plan_batch
    from defocus_cli.cli.exit_codes import error_line, with_option
    from defocus_cli.errors import UsageError

    with pytest.raises(UsageError, match="^quality must be 1-100, got 0$") as e:
        plan_batch(["a.png"], BatchOptions(quality=0), stdin_is_tty=False, stdout_is_tty=False)
    assert e.value.param == "quality" and error_line(e.value) == "error: --quality must be 1-100, got 0"
    assert with_option(UsageError("max pixels must be >= 1, got 0", param="max_pixels")) == \
        "--max-pixels must be >= 1, got 0"
    assert with_option(UsageError("tile 17 is smaller than the overlap 32", param="tile")) == \
        "--tile 17 is smaller than the overlap 32"
    assert with_option(UsageError("png16 cannot hold a sign", param="fmt")) == "--format: png16 cannot hold a sign"
    assert with_option(UsageError("no param")) == "no param"


@pytest.mark.parametrize("argv,status", [(["--version"], 0), (["deblur", "--model"], 2),
                                         (["deblur", "no-such-photo.png", "-o", "out.png"], 1)])
def test_console_script_exits_quickly_with_the_commands_status_after_atexit(argv: list[str], status: int) -> None:
    """The console script (``console``) ends with ``os._exit`` once the command is done: the exit status is the
    command's own (the same as ``main()`` gives through a normal exit), atexit handlers still run, and what
    was printed is flushed."""
    def run(entry: str) -> subprocess.CompletedProcess[str]:
        code = (
            "import atexit, sys\n"
            "atexit.register(lambda: print('ATEXIT', file=sys.stderr))\n"
            f"sys.argv = ['defocus', *{argv!r}]\n"
            f"from defocus_cli.cli import {entry}\n"
            f"{entry}()\n"
        )
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)

    fast, slow = run("console"), run("main")
    assert fast.returncode == slow.returncode == status
    assert fast.stderr.rstrip().endswith("ATEXIT")
    assert fast.stdout == slow.stdout
    if argv == ["--version"]:
        assert fast.stdout.strip() == f"defocus {__version__}"
