"""A matrix-nio client joins a room and scrolls back through all of its history.

Usage: python nio_history.py BASE_URL USER PASSWORD ROOM_ID COUNT

Run by the Rust integration test suite (deps pinned in requirements.txt), with nio's
response schema validation on. Joins ROOM_ID (a room of another server), then pages back with
/messages (10 at a time) to the room's start, and checks that the messages
"history 0" .. "history COUNT-1" all arrive, each once and in order, and that the
room's create event ends the history. Prints the failing step and exits 1 otherwise.
"""

import asyncio
import sys

from nio import (
    AsyncClient,
    ErrorResponse,
    JoinResponse,
    MessageDirection,
    RoomMessagesResponse,
)


def fail(step, detail):
    print(f"FAIL {step}: {detail}")
    sys.exit(1)


async def main():
    base, user, password, room_id, count = sys.argv[1:6]
    count = int(count)
    client = AsyncClient(base, user)
    login = await client.login(password)
    if isinstance(login, ErrorResponse):
        fail("login", login)
    # nio's join takes no via: the room id names its server (room version 10).
    joined = await client.join(room_id)
    if not isinstance(joined, JoinResponse):
        fail("join", joined)
    sync = await client.sync(timeout=0, full_state=True)
    if isinstance(sync, ErrorResponse) or room_id not in sync.rooms.join:
        fail("sync", sync)
    token = sync.rooms.join[room_id].timeline.prev_batch
    bodies, ids, types = [], [], []
    for _ in range(50):
        page = await client.room_messages(
            room_id, start=token, direction=MessageDirection.back, limit=10
        )
        if not isinstance(page, RoomMessagesResponse):
            fail("messages", page)
        for event in page.chunk:
            source = event.source
            ids.append(source["event_id"])
            types.append(source["type"])
            if source["type"] == "m.room.message":
                bodies.append(source["content"]["body"])
        if not page.chunk or not page.end:
            break
        token = page.end
    print(f"scrolled back through {len(ids)} events")
    history = [b for b in reversed(bodies) if b.startswith("history ")]
    wanted = [f"history {i}" for i in range(count)]
    if history != wanted:
        fail("history", f"got {history}")
    if len(ids) != len(set(ids)):
        fail("duplicates", ids)
    if not types or types[-1] != "m.room.create":
        fail("room start", f"the oldest event is {types[-1:]}")
    await client.close()
    print("ok")


asyncio.run(main())
