"""Start an rtserve server as a child process (benchmarks and tests), and read its memory use."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    base_url: str
    log_path: Path | None = None

    @classmethod
    def start(
        cls, args: list[str], *, command: tuple[str, ...] = ("server.cli", "serve"), log_path: Path | None = None,
        env: dict[str, str] | None = None, timeout_s: float = 900,
    ) -> ServerProcess:  # fmt: skip
        """Run `python -m COMMAND --port P ARGS` from the repo root and wait until /health answers."""
        port = free_port()
        cmd = [sys.executable, "-m", *command, "--port", str(port), *args]
        if log_path is not None:
            with open(log_path, "w") as log:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        else:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env
            )
        server = cls(proc, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {proc.returncode} while starting:\n{server.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return server
            except OSError:
                time.sleep(0.5)
        server.stop()
        raise RuntimeError(f"server not healthy after {timeout_s:.0f}s:\n{server.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MiB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
