"""Start an rtserve server as a child process for a benchmark, and read its memory use."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    base_url: str

    @classmethod
    def start(cls, args: list[str], log_path: Path | None = None, timeout_s: float = 900) -> ServerProcess:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "http_api.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ]
        log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        server = cls(proc, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(cmd)}")
            try:
                with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return server
            except OSError:
                time.sleep(0.5)
        server.stop()
        raise RuntimeError("server did not become healthy")

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
