"""The pmp-kernel command: install, and a plain explanation when the chosen
Python cannot work with the kernel."""

import json
import subprocess

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel


@pytest.fixture(scope="module")
def binary():
    return KernelSpecManager().get_kernel_spec("pmp").argv[0]


def test_help_and_version(binary):
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True)
    assert "pmp-kernel install" in usage.stdout
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("pmp-kernel ")


def test_bad_arguments_exit_with_usage(binary):
    done = subprocess.run([binary, "--bogus"], check=False, capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown argument" in done.stderr
    assert "Usage:" in done.stderr


def test_install_writes_a_kernelspec(binary, tmp_path):
    python = KernelSpecManager().get_kernel_spec("pmp").argv[-1]
    subprocess.run(
        [binary, "install", "--prefix", str(tmp_path), "--name", "pmp-test", "--python", python],
        check=True,
        capture_output=True,
    )
    spec_dir = tmp_path / "share/jupyter/kernels/pmp-test"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"] == [binary, "-f", "{connection_file}", "--python", python]
    assert spec["language"] == "python"
    assert spec["interrupt_mode"] == "message"
    assert spec["display_name"] == "Python 3 (pmp)"
    assert {p.name for p in spec_dir.iterdir()} >= {"logo-32x32.png", "logo-64x64.png"}


def test_install_refuses_another_python_version(binary, tmp_path):
    fake = tmp_path / "env"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin/python").write_text("")
    (fake / "pyvenv.cfg").write_text("home = /nowhere\nversion = 3.99.0\n")
    done = subprocess.run(
        [binary, "install", "--prefix", str(tmp_path), "--python", str(fake / "bin/python")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "is Python 3.99" in done.stderr


def test_a_kernel_with_the_wrong_python_says_why(binary, tmp_path, monkeypatch):
    fake = tmp_path / "env"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin/python").write_text("")
    (fake / "pyvenv.cfg").write_text("home = /nowhere\nversion = 3.99.0\n")
    spec_dir = tmp_path / "kernels/pmp-wrong"
    spec_dir.mkdir(parents=True)
    argv = [binary, "-f", "{connection_file}", "--python", str(fake / "bin/python")]
    spec = {"argv": argv, "display_name": "wrong", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))

    manager, client = start_new_kernel(kernel_name="pmp-wrong", startup_timeout=60)
    try:
        outputs = []
        reply = client.execute_interactive(
            "1+1", timeout=30, allow_stdin=False, output_hook=outputs.append
        )
        assert reply["content"]["status"] == "error"
        assert "is Python 3.99" in reply["content"]["evalue"]
        assert "built for Python" in reply["content"]["evalue"]
        assert [m["msg_type"] for m in outputs if m["msg_type"] == "error"] == ["error"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel()
