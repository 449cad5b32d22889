"""The cheapest analytics a forwarder can push to: an HTTP/1.1 server that reads each
request's body, counts its events and answers 200, nothing else (no JSON parsing, no
model). Beside the simulator in ``forwarder.py`` it says how much of a forwarder's
figure is analytics' own CPU on the shared cores.

    python benchmarks/null_sink.py PORT

``GET /admin/state`` answers ``{"accepted": N}`` like the simulator's.
"""

from __future__ import annotations

import asyncio
import json
import sys

EVENT_KEY = b'"event_id"'
"""Each event in a push carries one: counting it is the sink's whole job."""


class NullSink:
    def __init__(self) -> None:
        self.accepted = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET /admin/state"):
                    answer = json.dumps({"accepted": self.accepted}).encode()
                else:
                    self.accepted += body.count(EVENT_KEY)
                    answer = b"{}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def main(port: int) -> None:
    sink = NullSink()
    server = await asyncio.start_server(sink.serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
