"""A real Mosquitto broker on 127.0.0.1 for the tests, and a real subscriber.

The broker is the Debian ``mosquitto`` package (the README's install command installs it);
without it the tests fail with that instruction, never skip.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto -c <folder>/mosquitto.conf`` listening on 127.0.0.1:``port``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        assert exe, "mosquitto is not installed: apt-get install -y mosquitto (see the README's install command)"
        self.exe = exe
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             f"log_dest file {self.folder / 'mosquitto.log'}\n", encoding="utf-8")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Subscriber:
    """A paho client subscribed to ``#`` that records every message."""

    def __init__(self, port: int, topics: str = "#") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{free_port()}")

        def on_connect(client, userdata, flags, rc, props):
            client.subscribe(topics, qos=1)
            self._connected.set()

        def on_message(client, userdata, msg):
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        c.on_connect, c.on_message = on_connect, on_message
        c.connect("127.0.0.1", port, keepalive=10)
        c.loop_start()
        assert self._connected.wait(10), "subscriber could not connect"
        time.sleep(0.1)  # the subscription is acknowledged
        self.client = c

    def all(self, topic: str | None = None, prefix: str | None = None) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            msgs = list(self.messages)
        return [m for m in msgs if (topic is None or m[0] == topic) and (prefix is None or m[0].startswith(prefix))]

    def payloads(self, topic: str) -> list[bytes]:
        return [p for _, p, _ in self.all(topic)]

    def json(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.payloads(topic) if p]

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
