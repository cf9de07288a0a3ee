"""Face-to-state latency over MQTT: from a ``recognized`` event put on the daemon's event
bus to the person's retained state arriving at a subscriber of a real Mosquitto broker.

Two paths side by side, against the same broker on 127.0.0.1:

* **facerec**: :class:`facerec.events.EventBus` -> :class:`facerec.mqtt.MqttSink` (its queue,
  worker thread, state bookkeeping, publish on change) -> broker -> subscriber of
  ``<prefix>/people/<name>``; timed until the state with this event's ``ts`` arrives;
* **paho**: a bare paho client publishing a payload of the same size, retained, qos 1, to
  the same broker -> the same subscriber: the floor set by the client, the broker and
  loopback.

Run::

    python bench/mqtt_latency.py --events 200

Prints the median, 95th percentile and largest latency of each path in milliseconds and the
ratio of the medians. ``--topic`` chooses what the subscriber listens to and ``--nodelay``
runs the broker with ``set_tcp_nodelay true``: a subscriber that gets several messages per
event (every topic, or Home Assistant with an event entity) otherwise waits for Mosquitto's
Nagle delay (about 40 ms) on all but the first of them, so the sink sends the state first.
Mosquitto is the Debian package (the README's install command).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
from mqtt_broker import Broker, free_port  # noqa: E402

from facerec.config import MqttConfig  # noqa: E402
from facerec.events import Event, EventBus  # noqa: E402
from facerec.mqtt import MqttSink  # noqa: E402


class Arrivals:
    """A subscriber noting when each message arrived (``time.perf_counter()``)."""

    def __init__(self, port: int, topic: str) -> None:
        self._cond = threading.Condition()
        self.got: list[tuple[float, str, bytes]] = []
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{free_port()}")

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
            ready.set()

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            with self._cond:
                self.got.append((time.perf_counter(), msg.topic, bytes(msg.payload)))
                self._cond.notify_all()

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        assert ready.wait(10), "the subscriber could not subscribe"
        self.client = c

    def wait_for(self, match: Callable[[str, bytes], bool], timeout: float = 5.0) -> float:
        """Arrival time of the first message ``match(topic, payload)`` accepts."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, topic, payload in self.got:
                    if match(topic, payload):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching message")
                self._cond.wait(left)

    def clear(self) -> None:
        with self._cond:
            self.got.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):6.2f} ms  p95 {p95:6.2f} ms  max {ms[-1]:6.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200, help="events per path")
    ap.add_argument("--gap-ms", type=float, default=10.0, help="pause between two events, ms")
    ap.add_argument("--topic", default="#",
                    help="what the subscriber listens to: '#' (every message, as a logger would) or "
                         "'facerec/people/#' (the state only)")
    ap.add_argument("--nodelay", action="store_true",
                    help="run Mosquitto with set_tcp_nodelay true (no Nagle delay towards subscribers)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        if args.nodelay:
            broker.conf.write_text(broker.conf.read_text() + "set_tcp_nodelay true\n", encoding="utf-8")
        broker.start()
        people = [f"person_{i}" for i in range(8)]
        sub = Arrivals(broker.port, args.topic)
        sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port), cameras=["door"], people=people)
        bus = EventBus([sink])
        raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{free_port()}")
        raw.connect("127.0.0.1", broker.port, keepalive=30)
        raw.loop_start()
        try:
            time.sleep(0.5)  # connected, discovery and the first state sent
            facerec_ms: list[float] = []
            for i in range(args.events):
                name = people[i % len(people)]
                sub.clear()
                ev = Event("recognized", name, 0.6 + (i % 7) / 100, 1000 + i, float(i), "door", ts=time.time() + i)
                t0 = time.perf_counter()
                bus.publish(ev)
                want = round(ev.ts, 6)

                def is_state(topic: str, payload: bytes, name: str = name, want: float = want) -> bool:
                    if topic != f"facerec/people/{name}":
                        return False
                    return round(float(json.loads(payload)["ts"]), 6) == want

                facerec_ms.append((sub.wait_for(is_state) - t0) * 1000)
                time.sleep(args.gap_ms / 1000)
            sample = sink._person_payload(people[0])  # the size of a real state message
            paho_ms: list[float] = []
            for i in range(args.events):
                sub.clear()
                payload = sample.replace('"name"', f'"n{i:04d}"', 1)
                t0 = time.perf_counter()
                raw.publish("facerec/people/_bench", payload, qos=1, retain=True)
                sent = payload.encode()

                def is_raw(topic: str, got: bytes, sent: bytes = sent) -> bool:
                    return topic == "facerec/people/_bench" and got == sent

                paho_ms.append((sub.wait_for(is_raw) - t0) * 1000)
                time.sleep(args.gap_ms / 1000)
        finally:
            bus.close()
            sink.close()
            raw.disconnect()
            raw.loop_stop()
            sub.close()
            broker.stop()
    print(f"facerec (bus -> sink -> broker -> subscriber): {_summary(facerec_ms)}")
    print(f"paho    (publish -> broker -> subscriber):     {_summary(paho_ms)}")
    print(f"ratio of medians facerec / paho: {statistics.median(facerec_ms) / statistics.median(paho_ms):.2f}x "
          f"({args.events} events each, subscriber on {args.topic!r}, broker nodelay {args.nodelay})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
