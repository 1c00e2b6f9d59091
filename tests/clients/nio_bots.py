"""Two matrix-nio bots talk through a Matrixon server.

Usage: python nio_bots.py BASE_URL        (e.g. http://127.0.0.1:18118)

Run by the Rust integration test suite (tests/clients/, deps pinned in
requirements.txt). Uses nio's AsyncClient with its response schema validation
on, as a bot would: register, password login, create/invite/join, sync,
messages both ways, devices, typing, read markers/receipts, media upload and
download, scrollback, members, state, display name, leave. Every call is
checked; on the first failure it prints the step, the request and the server's
answer (and nio's schema error if validation failed), then exits 1.
"""

import asyncio
import io
import logging
import secrets
import sys
import zlib
import struct

from nio import AsyncClient, ErrorResponse

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:18118"
PASSWORD = "nio-bot-password-1"


class ValidationLog(logging.Handler):
    """Collects nio's 'Error validating response' warnings (schema failures)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


VALIDATION = ValidationLog()
logging.getLogger("nio").addHandler(VALIDATION)


class Bot(AsyncClient):
    """AsyncClient that remembers its last request, for failure reports."""

    last_request = None

    async def send(self, method, path, data=None, *args, **kwargs):
        body = data if isinstance(data, (str, type(None))) else f"<{type(data).__name__}>"
        self.last_request = (method, path, body)
        return await super().send(method, path, data, *args, **kwargs)


class StepFailed(Exception):
    pass


async def check(step, bot, coro):
    """Awaits one nio call; fails the run on an ErrorResponse."""
    VALIDATION.messages.clear()
    try:
        resp = await coro
    except Exception as e:
        print(f"FAIL {step}: {type(e).__name__}: {e}")
        print(f"  request: {bot.last_request}")
        raise StepFailed(step) from e
    first = resp[0] if isinstance(resp, tuple) else resp  # upload() returns a tuple
    if isinstance(first, ErrorResponse):
        tr = first.transport_response
        body = None
        if tr is not None:
            try:
                body = (await tr.read()).decode("utf-8", "replace")[:2000]
            except Exception as e:  # body already released
                body = f"<unreadable: {e}>"
        print(f"FAIL {step}: {type(first).__name__} errcode={first.status_code!r} message={first.message!r}")
        print(f"  request: {bot.last_request}")
        print(f"  response: status={tr.status if tr is not None else None} body={body}")
        for m in VALIDATION.messages:
            print(f"  nio: {m}")
        raise StepFailed(step)
    print(f"ok   {step}")
    return resp


def expect(step, cond, detail=""):
    if not cond:
        print(f"FAIL {step}: {detail}")
        raise StepFailed(step)
    print(f"ok   {step}")


def tiny_png():
    """A valid 1x1 PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def sync_until(step, bot, room_id, event_id, tries=10):
    """Syncs until event_id shows up in room_id's timeline."""
    for _ in range(tries):
        resp = await check(f"{step} (sync)", bot, bot.sync(timeout=3000))
        room = resp.rooms.join.get(room_id)
        if room and any(getattr(e, "event_id", None) == event_id for e in room.timeline.events):
            expect(step, True)
            return
    expect(step, False, f"{event_id} not in {bot.user_id}'s sync timeline after {tries} syncs")


async def scenario():
    tag = secrets.token_hex(4)
    names = {"a": f"nio_a_{tag}", "b": f"nio_b_{tag}"}
    bots = {}
    try:
        for k, name in names.items():
            reg = Bot(BASE, name)
            try:
                await check(f"register {k}", reg, reg.register(name, PASSWORD, f"nio {k} reg"))
            finally:
                await reg.close()
            bots[k] = bot = Bot(BASE, name)
            await check(f"login {k}", bot, bot.login(PASSWORD, device_name=f"nio {k}"))
        a, b = bots["a"], bots["b"]

        cr = await check("room_create", a, a.room_create(name=f"nio room {tag}", topic="nio topic"))
        room = cr.room_id
        await check("room_invite", a, a.room_invite(room, b.user_id))
        await check("join", b, b.join(room))
        await check("sync a", a, a.sync(timeout=1000, full_state=True))
        await check("sync b", b, b.sync(timeout=1000, full_state=True))

        text = {"msgtype": "m.text", "body": "hello from a"}
        sent = await check("a room_send", a, a.room_send(room, "m.room.message", text))
        await sync_until("b sees a's message", b, room, sent.event_id)
        reply = {"msgtype": "m.text", "body": "hi a, b here"}
        sent_b = await check("b room_send", b, b.room_send(room, "m.room.message", reply))
        await sync_until("a sees b's reply", a, room, sent_b.event_id)

        for k, bot in bots.items():
            d = await check(f"devices {k}", bot, bot.devices())
            expect(f"devices {k} lists own device", any(x.id == bot.device_id for x in d.devices),
                   f"{bot.device_id} not in {[x.id for x in d.devices]}")

        await check("room_typing true", a, a.room_typing(room, True, 10000))
        await check("room_typing false", a, a.room_typing(room, False))
        await check("room_read_markers", b, b.room_read_markers(room, sent.event_id, sent.event_id))
        await check("update_receipt_marker", a, a.update_receipt_marker(room, sent_b.event_id))

        png = tiny_png()
        up, _ = await check("upload", a, a.upload(io.BytesIO(png), "image/png", "dot.png", filesize=len(png)))
        dl = await check("download", b, b.download(up.content_uri))
        expect("download is byte-equal", dl.body == png, f"got {len(dl.body)} bytes, want {len(png)}")

        msgs = await check("room_messages", b, b.room_messages(room, limit=50))
        ids = [getattr(e, "event_id", None) for e in msgs.chunk]
        expect("room_messages has both messages", sent.event_id in ids and sent_b.event_id in ids, ids)

        jm = await check("joined_members", a, a.joined_members(room))
        expect("joined_members has both", {m.user_id for m in jm.members} == {a.user_id, b.user_id},
               [m.user_id for m in jm.members])

        st = await check("room_get_state", b, b.room_get_state(room))
        by_type = {e.get("type"): e.get("content", {}) for e in st.events}
        expect("state has name and topic",
               by_type.get("m.room.name", {}).get("name") == f"nio room {tag}"
               and by_type.get("m.room.topic", {}).get("topic") == "nio topic", by_type.keys())

        await check("set_displayname", b, b.set_displayname(f"Bot B {tag}"))
        dn = await check("get_displayname", a, a.get_displayname(b.user_id))
        expect("displayname round-trips", dn.displayname == f"Bot B {tag}", dn.displayname)

        await check("room_leave b", b, b.room_leave(room))
        await check("room_leave a", a, a.room_leave(room))
    finally:
        for bot in bots.values():
            await bot.close()


async def main():
    try:
        await asyncio.wait_for(scenario(), timeout=120)
    except StepFailed:
        return 1
    except asyncio.TimeoutError:
        print("FAIL: scenario did not finish within 120 s")
        return 1
    print("nio_bots: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
