#!/usr/bin/env python3
"""A real SMTP server on loopback for Vow's tests (aiosmtpd): every message it receives is
written to DIR as a numbered .eml file, then the server prints one line per message.

Usage: smtp-sink.py DIR PORT   (prints "SMTP listening on 127.0.0.1:PORT" when ready)
"""
import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        name = os.path.join(self.directory, f"{self.count:05d}.eml")
        tmp = name + ".part"
        with open(tmp, "wb") as f:
            f.write(b"X-Envelope-To: " + ", ".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.original_content or envelope.content)
        os.replace(tmp, name)
        print(f"received {name} for {', '.join(envelope.rcpt_tos)}", flush=True)
        return "250 OK"


def main():
    directory = sys.argv[1]
    port = int(sys.argv[2])
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"SMTP listening on 127.0.0.1:{port}", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
